"""Simulated A/B experiments (``pulse simulate --experiment SPEC``) with ground truth.

SPEC: ``NAME:variants=control/B,split=50/50,conversion=0/-0.1,aov=0/0.05,lose=0/0``

- ``variants``: names, the first is the control (default ``control/B``);
- ``split``: expected shares, any positive scale (default equal);
- ``conversion``, ``aov``: the *true* relative lift of each variant against the first
  (default 0): the purchase rate, and the order value (revenue and item prices);
- ``lose``: share of each variant's users whose exposures never arrive (default 0) — a
  broken assignment, which the SRM check must flag.

How: applied to the generated event lines, after the market made them, so a run with an
experiment is the same run plus exposures and the experiment's changes. A user is
assigned by a hash of (experiment, user) and exposed (an ``experiment_exposure`` event at
the same time, just before) at their first event of the run. Lifts are made by thinning
purchases: variant v keeps each purchase with probability (1 + L_v) / max_w (1 + L_w) (a
hash of the event id decides), so the purchase rates are in the ratio 1 + L_v, positive
and negative lifts alike; a kept purchase of a variant with an ``aov`` lift has its
revenue and prices multiplied by 1 + L_aov. Per-user conversion moves by about the
purchase-rate lift when users rarely buy twice (the market's case). Deterministic:
the same run and SPEC give the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "ExperimentSpec",
    "ExperimentStream",
    "experiment_truth",
    "parse_experiment",
    "simulate_experiment_help",
]

simulate_experiment_help = """\
Experiment SPEC: NAME[:key=value,...], repeatable; '/' separates per-variant values.
  variants=control/B   names, the first is the control (default control/B)
  split=50/50          expected shares (default equal)
  conversion=0/-0.1    true relative lift of the purchase rate against the first
  aov=0/0.05           true relative lift of the order value
  lose=0/0.1           share of a variant's exposures lost (a broken assignment: an SRM)
Example: checkout:variants=control/B,conversion=0/-0.1
"""

_KEYS = ("variants", "split", "conversion", "aov", "lose")


@dataclass(frozen=True)
class ExperimentSpec:
    """One simulated experiment (see the module's docstring)."""

    name: str
    variants: tuple[str, ...] = ("control", "B")
    split: tuple[float, ...] = ()
    conversion: tuple[float, ...] = ()
    aov: tuple[float, ...] = ()
    lose: tuple[float, ...] = ()
    spec: str = ""

    def __post_init__(self) -> None:
        n = len(self.variants)
        if not 0 < len(self.name) <= 64 or any(not 0 < len(v) <= 64 for v in self.variants):
            raise ValueError("experiment and variant names are 1 to 64 characters")
        if n < 2 or len(set(self.variants)) != n:
            raise ValueError("an experiment needs two or more distinct variants")
        for key, default in (("split", 1.0), ("conversion", 0.0), ("aov", 0.0), ("lose", 0.0)):
            values = getattr(self, key) or (default,) * n
            if len(values) != n:
                raise ValueError(f"{key}: {len(values)} values for {n} variants")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{key}: values must be finite numbers")
            object.__setattr__(self, key, tuple(float(v) for v in values))
        if any(s < 0 for s in self.split) or not sum(self.split) > 0:
            raise ValueError("split: shares are ≥ 0 and at least one is positive")
        if any(v <= -1 for v in (*self.conversion, *self.aov)):
            raise ValueError("conversion/aov: a lift is above -1 (-100 %)")
        if any(not 0 <= v < 1 for v in self.lose):
            raise ValueError("lose: a share in 0 .. <1")
        if self.conversion[0] or self.aov[0]:
            raise ValueError("conversion/aov: the first variant is the control, its lift is 0")

    @property
    def shares(self) -> tuple[float, ...]:
        total = sum(self.split)
        return tuple(s / total for s in self.split)


def parse_experiment(spec: str) -> ExperimentSpec:
    """``NAME:key=value,...`` (see :data:`simulate_experiment_help`); a ValueError naming
    the problem otherwise."""
    name, _, rest = spec.partition(":")
    kw: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in _KEYS:
            raise ValueError(f"experiment {spec!r}: unknown part {part!r}; use {', '.join(_KEYS)}")
        items = value.split("/")
        if key == "variants":
            kw[key] = tuple(items)
        else:
            try:
                kw[key] = tuple(float(x) for x in items)
            except ValueError:
                raise ValueError(f"experiment {spec!r}: {key} needs numbers") from None
    return ExperimentSpec(name.strip(), spec=spec, **kw)


def _unit(*parts: str) -> float:
    """A uniform number in [0, 1) from a hash: the same inputs, the same number."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class _Line(msgspec.Struct):
    event_id: str
    type: str
    ts: int
    user_id: str


_decode = msgspec.json.Decoder(_Line).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass
class _State:
    spec: ExperimentSpec
    keep: tuple[float, ...]  # per variant: probability a purchase is kept
    seen: set[str] = field(default_factory=set)
    users: list[int] = field(default_factory=list)  # exposed users per variant
    lost: list[int] = field(default_factory=list)  # users whose exposures were lost


class ExperimentStream:
    """Applies experiments to a run's event lines, batch by batch, remembering users."""

    def __init__(self, specs: tuple[ExperimentSpec, ...], seed: int) -> None:
        self.seed = str(seed)
        self.states = []
        for spec in specs:
            top = max(1 + c for c in spec.conversion)
            self.states.append(_State(spec, tuple((1 + c) / top for c in spec.conversion),
                                      users=[0] * len(spec.variants),
                                      lost=[0] * len(spec.variants)))  # fmt: skip

    def variant(self, state: _State, user: str) -> int:
        """The index of ``user``'s variant (by the split)."""
        u = _unit(self.seed, state.spec.name, "assign", user)
        acc = 0.0
        for i, share in enumerate(state.spec.shares):
            acc += share
            if u < acc:
                return i
        return len(state.spec.variants) - 1

    def apply(self, emit: list[int], lines: list[str]) -> tuple[list[int], list[str]]:
        """One batch (emission order) with exposures added and purchases changed."""
        out_emit: list[int] = []
        out: list[str] = []
        for at, line in zip(emit, lines, strict=True):
            ev = _decode(line)
            keep = True
            for state in self.states:
                spec = state.spec
                v = self.variant(state, ev.user_id)
                if ev.user_id not in state.seen:
                    state.seen.add(ev.user_id)
                    if _unit(self.seed, spec.name, "lose", ev.user_id) < spec.lose[v]:
                        state.lost[v] += 1
                    else:
                        state.users[v] += 1
                        out_emit.append(at)
                        out.append(_exposure(spec, v, ev))
                if ev.type == "purchase" and keep:
                    if _unit(self.seed, spec.name, "buy", ev.event_id) >= state.keep[v]:
                        keep = False
                    elif spec.aov[v]:
                        line = _scaled(line, 1 + spec.aov[v])
            if keep:
                out_emit.append(at)
                out.append(line)
        return out_emit, out


def _exposure(spec: ExperimentSpec, v: int, ev: _Line) -> str:
    tag = hashlib.blake2b(spec.name.encode(), digest_size=4).hexdigest()
    return _encode({
        "event_id": f"{ev.event_id}.x{tag}",
        "type": "experiment_exposure", "ts": ev.ts, "user_id": ev.user_id,
        "experiment": spec.name, "variant": spec.variants[v],
    }).decode()  # fmt: skip


def _scaled(line: str, factor: float) -> str:
    doc = _decode_any(line)
    doc["revenue"] = round(doc["revenue"] * factor, 2)
    for item in doc.get("items") or []:
        item["price"] = round(item["price"] * factor, 2)
    return str(_encode(doc).decode())


def experiment_truth(stream: ExperimentStream | None, specs: tuple[ExperimentSpec, ...]) -> list:
    """The ground truth of each experiment: its SPEC, true lifts per metric and variant, and
    (after a run) the users exposed and lost per variant."""
    out = []
    for i, spec in enumerate(specs):
        entry: dict[str, Any] = {
            "experiment": spec.name,
            "spec": spec.spec,
            "control": spec.variants[0],
            "variants": list(spec.variants),
            "split": list(spec.shares),
            "lifts": {
                "conversion": dict(zip(spec.variants, spec.conversion, strict=True)),
                "aov": dict(zip(spec.variants, spec.aov, strict=True)),
                "revenue_per_user": {
                    v: (1 + c) * (1 + a) - 1
                    for v, c, a in zip(spec.variants, spec.conversion, spec.aov, strict=True)
                },
            },
            "lose": dict(zip(spec.variants, spec.lose, strict=True)),
            "srm_expected": any(spec.lose),
        }
        if stream is not None:
            state = stream.states[i]
            entry["exposed_users"] = dict(zip(spec.variants, state.users, strict=True))
            entry["lost_users"] = dict(zip(spec.variants, state.lost, strict=True))
        out.append(entry)
    return out

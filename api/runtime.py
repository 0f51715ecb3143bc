"""The composition root: the parts of a Pulse run, built from the settings on demand and
in the right order, and stopped in the order that loses nothing (CONTRACT §12).

Like Quix Streams' ``Application`` (or bytewax's ``run.py``: parse -> config -> run), a
:class:`Runtime` is the one place that reads :class:`~api.settings.Settings` and turns it
into what each layer takes: frozen configs (:class:`~flows.config.FlowConfig`,
:class:`~insights.runner.DetectConfig`, :class:`~insights.alerts.AlertConfig`,
:class:`~dashboards.grafana.RenderOptions`), the broker (embedded: started or reattached;
external: required), topics, producer and collector, the warehouse (connect -> schema ->
FX rates, once), the flow (a thread, or Bytewax processes), the detector loop and the
API's services. Every command (``pulse up``, ``serve``, ``demo``, ``flow``, ``replay
--wait``, ``query``, ``migrate``, ``simulate``, ``detect``, ``stop``) and the Bytewax
runner's :func:`get_flow` start from one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow

from api.deps import Services
from api.erasure import Eraser, announce_erasure
from api.keys import KeyStore, ensure_key_file
from api.settings import Settings, load_settings
from dashboards.grafana import RenderOptions
from flows.config import FlowConfig
from flows.dataflow import build_flow
from flows.logic import FlowRules
from flows.run import FlowThread, run_flow, run_processes, tune_gc
from ingest.broker import EmbeddedBroker, wait_for_port
from ingest.collector import Collector
from ingest.errors import BrokerError, ConfigError
from ingest.fx import FxRates, load_fx_rates
from ingest.privacy import EdgePrivacy, Pseudonymizer, load_or_create_key
from ingest.producer import ConfluentProducer
from ingest.topics import Topics, ensure_topics
from insights.alerts import AlertConfig
from insights.runner import DetectConfig, DetectorLoop
from warehouse.client import Client, connect, has_schema, presence_check
from warehouse.dsn import redact_dsn
from warehouse.migrate import Migration, migrate
from warehouse.reference_data import sync_fx_rates

__all__ = ["FLOW_ENTRY_POINT", "Runtime", "Stack", "get_flow"]

_log = logging.getLogger(__name__)

# The flow for Bytewax's own runner: ``python -m bytewax.run "api.runtime:get_flow()"``.
FLOW_ENTRY_POINT = "api.runtime:get_flow()"


@dataclass
class Stack:
    """The started parts; closed by :meth:`Runtime.open_stack`'s context."""

    settings: Settings
    bootstrap: str
    topics: Topics
    fx: FxRates
    warehouse: Client | None
    services: Services
    producer: ConfluentProducer
    notes: list[str] = field(default_factory=list)  # said once at start-up
    parts: _Parts | None = None  # after the stack closed: parts.clean says how it went


class Runtime:
    """The parts of a run, built from ``settings`` when first asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.notes: list[str] = []  # what start-up found worth saying (shown once)
        self.applied: list[Migration] = []  # schema migrations this runtime applied
        self.fx_rows = 0  # FX rates it loaded into the warehouse
        self._warehouse_ready = False
        self._fx_synced = False

    # -- configuration: frozen values for the layers below ------------------------------

    @cached_property
    def fx(self) -> FxRates:
        """The dated FX rates (``PULSE_FX_RATES``, else the file shipped with Pulse)."""
        return load_fx_rates(self.settings.fx_rates)

    @cached_property
    def topics(self) -> Topics:
        """The topic names (``PULSE_TOPIC_PREFIX``)."""
        return Topics(self.settings.topic_prefix)

    def flow_config(self, **overrides: Any) -> FlowConfig:
        """The event flow's configuration."""
        s = self.settings
        rules = FlowRules(
            session_timeout_ms=int(s.session_timeout.total_seconds() * 1000),
            retention_ms=int(s.flow_retention.total_seconds() * 1000),
        )
        base = FlowConfig(
            bootstrap=s.bootstrap,
            topics=self.topics,
            warehouse_dsn=s.warehouse_dsn,
            database=None,
            fx=self.fx,
            rules=rules,
            allowed_lateness=s.allowed_lateness,
            retention=s.retention,
        )
        return dataclasses.replace(base, **overrides)

    def alert_config(self) -> AlertConfig:
        """Where alerts go (``PULSE_ALERTMANAGER_URL``, ``PULSE_ALERT_WEBHOOK_URL``) and the
        base of their links (the API)."""
        s = self.settings
        return AlertConfig(
            alertmanager_url=s.alertmanager_url,
            webhook_url=s.alert_webhook_url,
            public_url=s.api_url,
        )

    def detect_config(self, **overrides: Any) -> DetectConfig:
        """How detection runs."""
        s = self.settings
        base = DetectConfig(
            timezone=s.timezone, allowed_lateness=s.allowed_lateness, alerts=self.alert_config()
        )
        return dataclasses.replace(base, **overrides)

    def render_options(self) -> RenderOptions:
        """How dashboards are rendered (default timezone, allowed lateness)."""
        s = self.settings
        return RenderOptions(
            timezone=s.timezone, allowed_lateness_s=int(s.allowed_lateness.total_seconds())
        )

    # -- the broker -------------------------------------------------------------------

    def require_broker(self, timeout: float = 3.0) -> None:
        """Fail with advice when no broker answers at the bootstrap address."""
        s = self.settings
        host, _, port = s.bootstrap.split(",")[0].rpartition(":")
        try:
            wait_for_port(host, int(port), timeout)
        except BrokerError:
            hint = (
                "start `pulse up` or `pulse broker`, or set PULSE_KAFKA_BOOTSTRAP"
                if s.embedded_broker
                else "check PULSE_KAFKA_BOOTSTRAP"
            )
            raise BrokerError(f"no Kafka broker answers at {s.bootstrap}: {hint}") from None

    def broker_answers(self, timeout: float = 0.5) -> bool:
        """Whether a broker answers at the bootstrap address now."""
        try:
            self.require_broker(timeout)
        except BrokerError:
            return False
        return True

    def embedded_broker(self) -> EmbeddedBroker:
        """The embedded broker of this home, not started yet (``start()`` reattaches to
        the one left running for this home, if any)."""
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        return EmbeddedBroker(s.bootstrap, log_file=s.broker_log_file, pid_file=s.broker_pid_file)

    def broker_unless_running(self) -> EmbeddedBroker | None:
        """Require the broker; when it is the embedded one and none answers, start it (and
        return it: the caller stops it)."""
        try:
            self.require_broker(timeout=0.5)
        except BrokerError:
            if not self.settings.embedded_broker:
                raise
            return self.embedded_broker().start()
        return None

    def ensure_topics(self) -> list[str]:
        """Create the topics that do not exist yet; the names created."""
        s = self.settings
        return ensure_topics(s.bootstrap, self.topics, s.topic_partitions)

    def producer(self, *, recreate_topics: bool = False) -> ConfluentProducer:
        """A producer to the broker; with ``recreate_topics`` it creates the topics again
        when it finds itself on a new broker (a restarted embedded one)."""
        bootstrap = self.settings.bootstrap
        if not recreate_topics:
            return ConfluentProducer(bootstrap)
        return ConfluentProducer(bootstrap, on_new_broker=self.ensure_topics)

    def collector(self, producer: ConfluentProducer) -> Collector:
        """The edge: validation and routing of events to ``producer``."""
        return Collector(producer, self.topics, self.fx.currencies, privacy=self.edge_privacy)

    @cached_property
    def edge_privacy(self) -> EdgePrivacy:
        """What the edge does for privacy (CONTRACT §11): the pseudonymiser when
        ``PULSE_PSEUDONYMIZE`` is on, its key from ``PULSE_PSEUDONYMIZE_KEY`` or generated
        once under ``PULSE_HOME``."""
        return EdgePrivacy(self.pseudonymizer)

    @cached_property
    def pseudonymizer(self) -> Pseudonymizer | None:
        """The keyed hash of user ids, or None when ids are stored as sent."""
        s = self.settings
        if not s.pseudonymize:
            return None
        if s.pseudonymize_key is not None:
            return Pseudonymizer(bytes.fromhex(s.pseudonymize_key.get_secret_value().strip()))
        try:
            return Pseudonymizer(load_or_create_key(s.pseudonymize_key_file))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"PULSE_PSEUDONYMIZE_KEY: unset and {exc}") from None

    @contextlib.contextmanager
    def edge(self) -> Iterator[tuple[Collector, ConfluentProducer]]:
        """The topics (created if missing), a producer and the collector on it, for a
        command that publishes events (``pulse replay``, ``pulse simulate``); the producer
        is closed (what it holds delivered) on leaving."""
        self.ensure_topics()
        producer = self.producer()
        try:
            yield self.collector(producer), producer
        finally:
            producer.close()

    # -- the warehouse ----------------------------------------------------------------

    def connect(self) -> Client:
        """A new client on the warehouse (for a part with a thread of its own)."""
        return connect(self.settings.warehouse_dsn)

    def warehouse(self, *, fx_rates: bool = False, for_flow: bool = False) -> Client:
        """A client on the warehouse, made ready once per runtime: the schema applied and,
        with ``fx_rates``, the FX rates loaded. ``for_flow``: the caller runs the flow (or a
        stack): when the warehouse is new but this home has state from an earlier run (its
        warehouse was deleted or lost), that is said (:attr:`notes`) and the flow's state
        starts afresh, so that the flow reads again what the broker still holds instead of
        resuming past it: the new warehouse is then not silently partial. (Other commands
        leave that state alone: a flow may be using it.) Raises ``WarehouseBusy`` when
        another process holds the embedded warehouse."""
        s = self.settings
        client = connect(s.warehouse_dsn)
        if not self._warehouse_ready:
            if for_flow and not has_schema(client) and (earlier := self._had_state()):
                self.notes.append(
                    f"[yellow]warning:[/yellow] the warehouse {redact_dsn(s.warehouse_dsn)} is "
                    f"new (missing or empty), but {s.home} has {' and '.join(earlier)} from an "
                    "earlier run: starting with an empty warehouse. The flow reads again "
                    "everything the broker still holds; events no longer on the broker are "
                    "not in it."
                )
                _log.warning("warehouse missing where Pulse had state: starting it afresh")
                self._delete_flow_state()
            self.applied = migrate(client)
            self._warehouse_ready = True
        if fx_rates and not self._fx_synced:
            self.fx_rows = sync_fx_rates(client, self.fx)
            self._fx_synced = True
        return client

    def _delete_flow_state(self) -> None:
        """Delete the flow's recovery state (offsets, shard generations, users' states),
        so that the next flow reads the topics from their start."""
        s = self.settings
        for stale in (s.recovery_dir, s.home / "flow-state"):
            shutil.rmtree(stale, ignore_errors=True)

    def _had_state(self) -> list[str]:
        """What in ``PULSE_HOME`` says a warehouse was used there before."""
        s = self.settings
        found = []
        if any(s.recovery_dir.glob("part-*.sqlite3")):
            found.append("the flow's recovery state")
        if s.cli_key_file.exists():
            found.append("the key `pulse up` leaves for local commands")
        return found

    def write_cli_key(self, keys: KeyStore) -> Path:
        """A read key for local commands (``pulse query``) while this process holds the
        embedded warehouse; stored like a password file (mode 0600) under PULSE_HOME, and
        reused by the next start while it is valid. Returns where."""
        return ensure_key_file(keys, self.settings.cli_key_file, "read", name="cli-read")

    # -- the flow ---------------------------------------------------------------------

    def run_flow(
        self, *, workers: int = 1, processes: int = 1, idle_stop_s: float | None = None
    ) -> None:
        """Run the event flow here (``workers`` threads) or as ``processes`` Bytewax
        processes, with recovery, until it stops (idle stop) or is interrupted."""
        recovery = self.settings.recovery_dir
        self.fx  # noqa: B018 - a bad PULSE_FX_RATES stops here, in one line, not in a process
        if processes > 1:
            run_processes(processes, flow=FLOW_ENTRY_POINT, recovery_dir=recovery,
                          env=self._runner_environment(idle_stop_s))  # fmt: skip
            return
        run_flow(self.flow_config(idle_stop_s=idle_stop_s), workers=workers, recovery_dir=recovery)

    def drain(self) -> None:
        """Run the flow until every topic is read to its end and written (idle for 2 s)."""
        self.run_flow(idle_stop_s=2.0)

    def _runner_environment(self, idle_stop_s: float | None) -> dict[str, str]:
        """The environment of flow processes started from this one: its own, with where
        the shards keep their states and when to stop."""
        env = {**os.environ, "PULSE_FLOW_STATE_DIR": str(self.settings.recovery_dir / "state")}
        if idle_stop_s is not None:
            env["PULSE_FLOW_EXIT_WHEN_IDLE"] = str(idle_stop_s)
        return env

    def flow_thread(self) -> FlowThread:
        """The flow as a thread of this process (not started)."""
        return FlowThread(self.flow_config(), recovery_dir=self.settings.recovery_dir)

    # -- detection --------------------------------------------------------------------

    def detector(self, **overrides: Any) -> DetectorLoop:
        """The detector loop (not started), on a client of its own."""
        return DetectorLoop(self.connect, self.detect_config(**overrides))

    def start_detector(self, services: Services, **overrides: Any) -> DetectorLoop:
        """Start the detector loop and make it part of the API's readiness."""
        loop = self.detector(**overrides).start()
        services.readiness["detector"] = loop.check
        return loop

    # -- the whole stack --------------------------------------------------------------

    def services(self, producer: ConfluentProducer, warehouse: Client | None) -> Services:
        """What the API's routes use."""
        s = self.settings
        services = Services(
            keys=KeyStore(s.keys_file),
            cors_origins=frozenset(s.cors_origins),
            collector=self.collector(producer),
            warehouse=warehouse,
            timezone=s.timezone,
            allowed_lateness=s.allowed_lateness,
            readiness={"broker": producer.check},
            trusted_proxies=tuple(ip_network(p) for p in s.trusted_proxies),
        )
        if warehouse is not None:
            present = presence_check(s.warehouse_dsn)
            services.warehouse_check = present
            services.readiness["warehouse"] = partial(_warehouse_ready, warehouse, present)
            services.eraser = self.eraser(warehouse)
        return services

    # -- privacy ----------------------------------------------------------------------

    def eraser(self, warehouse: Client, *, flow_stopped: bool = False) -> Eraser:
        """Forgets users (CONTRACT §11) in ``warehouse``, announcing each erasure to the
        flow on the erasures topic. ``flow_stopped``: no flow runs on this home now (the
        caller holds the embedded warehouse), so its saved states are cleaned directly."""
        s = self.settings
        try:
            salt = load_or_create_key(s.erasure_salt_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"PULSE_HOME: cannot read the erasure salt: {exc}") from None
        return Eraser(
            warehouse,
            salt,
            announce=partial(announce_erasure, s.bootstrap, self.topics.erasures),
            pseudonymize=self.pseudonymizer,
            saved_state=[s.recovery_dir / "state", s.runner_state_dir] if flow_stopped else [],
            allowed_lateness=s.allowed_lateness,
            ack_timeout_s=0.0 if flow_stopped else 30.0,  # no flow to wait for
        )

    @contextlib.contextmanager
    def open_stack(
        self,
        *,
        start_broker: bool,
        use_warehouse: bool = True,
        run_flow: bool = False,
        run_detector: bool = False,
    ) -> Iterator[Stack]:
        """Broker (embedded when asked: reattached if one runs for this home), topics,
        warehouse schema, flow, collector and API."""
        s = self.settings
        with contextlib.ExitStack() as stack:
            bootstrap = s.bootstrap
            parts = _Parts(drain_s=s.stop_timeout.total_seconds() * 0.6)
            if start_broker:
                broker = self.embedded_broker().start()
                if broker.reattached:
                    self.notes.append(
                        f"reattached to the embedded broker left running at {bootstrap} "
                        f"(pid {broker.pid}): what it holds is read on"
                    )
                else:
                    # stopped if start-up fails below; a reattached one holds events: left alone
                    stack.callback(_unless_handed_over, parts, "broker", broker.stop)
            else:
                self.require_broker()
            self.ensure_topics()
            fx = self.fx
            warehouse = self.warehouse(fx_rates=True, for_flow=True) if use_warehouse else None
            producer = self.producer(recreate_topics=True)
            stack.callback(_unless_handed_over, parts, "producer", producer.close)
            services = self.services(producer, warehouse)
            if warehouse is not None and s.embedded_warehouse:
                self.write_cli_key(services.keys)
            # from here on, leaving stops everything in order
            parts.broker = broker if start_broker else None
            parts.producer = producer
            stack.callback(parts.close)
            if run_flow:
                parts.flow = self.flow_thread().start()
                services.readiness["flow"] = parts.flow.check
            if run_detector and warehouse is not None:
                parts.detector = self.start_detector(services)
            yield Stack(s, bootstrap, self.topics, fx, warehouse, services, producer,
                        self.notes, parts)  # fmt: skip


def _warehouse_ready(client: Client, present: Callable[[], None]) -> None:
    present()
    client.command("SELECT 1")


@dataclass
class _Parts:
    """What :meth:`Runtime.open_stack` started, stopped in the order that loses nothing."""

    drain_s: float
    broker: EmbeddedBroker | None = None
    producer: ConfluentProducer | None = None
    flow: FlowThread | None = None
    detector: DetectorLoop | None = None
    clean: bool = True  # after close(): everything read was written and stopped

    def close(self) -> None:
        """Detector, then the producer (what it holds reaches the broker), then the flow —
        which, on the embedded broker, first reads every topic to its end (the broker
        keeps records in memory only) — then the broker. A broker whose records could
        not all be written is left running: the next ``pulse up`` reattaches to it."""
        if self.detector is not None:
            self.detector.stop()
        if self.producer is not None:
            self.producer.close()
        drained = True
        if self.flow is not None:
            drain = self.drain_s if self.broker is not None else 0.0
            drained = self.flow.stop(timeout=20.0, drain=drain)
        self.clean = drained
        if self.broker is None:
            return
        if drained:
            self.broker.stop()
            return
        _log.error(
            "the flow could not write everything it read to the warehouse: the embedded "
            "broker (pid %s) is left running with those events; the next `pulse up` "
            "reattaches to it and writes them (`pulse stop --force` discards them)",
            self.broker.pid,
        )


def _unless_handed_over(parts: _Parts, name: str, stop: Callable[[], None]) -> None:
    """Stop a part started before start-up failed (once handed over, ``parts`` stops it)."""
    if getattr(parts, name) is None:
        stop()


def get_flow() -> Dataflow:
    """The event flow for Bytewax's own runner, configured from the ``PULSE_*``
    environment like every other entry point, e.g. on several hosts::

        python -m bytewax.run "api.runtime:get_flow()" -w 2             # 2 worker threads
        python -m bytewax.run "api.runtime:get_flow()" -i 0 -a "h1:2101;h2:2101" -w 2 \\
            -r /var/lib/pulse/recovery                                 # process 0 of 2

    ``PULSE_FLOW_EXIT_WHEN_IDLE`` (seconds) makes every process stop once drained. The
    shards save their users' states between snapshots under ``PULSE_FLOW_STATE_DIR``
    (default ``$PULSE_HOME/flow-state``): with ``-r`` on several hosts, that directory must
    be shared like the recovery directory. ``pulse flow --processes N`` runs N such
    processes on one host."""
    settings = load_settings()
    tune_gc()
    config = Runtime(settings).flow_config(
        idle_stop_s=settings.flow_exit_when_idle, state_dir=settings.runner_state_dir
    )
    return build_flow(config)

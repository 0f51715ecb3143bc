"""One settings object for every ``PULSE_*`` variable (CONTRACT §3).

Read once at each entry point (a CLI command, the Bytewax runner's ``get_flow``); the
composition root (:mod:`api.runtime`) turns it into the explicit arguments and frozen
configs of the layers below, which never see it nor the environment. A bad value stops
start-up with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ingest.errors import ConfigError
from warehouse.dsn import EMBEDDED_SCHEME, is_embedded

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "Settings",
    "load_settings",
    "normalise_origin",
    "parse_duration",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"30m"``, ``"90s"``, ``"1h"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected a duration like 30m, 90s, 1h or seconds, got {value!r}")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])


def normalise_origin(value: str) -> str:
    """``https://Shop.example.com:443/`` -> ``https://shop.example.com``, as browsers send it
    in ``Origin``; a ValueError for anything that is not a page origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        port, parts = -1, urlsplit("")
    if (
        port == -1
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ValueError(f"expected origins like https://shop.example.com, got {value!r}")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class Settings(BaseSettings):
    """Every ``PULSE_*`` environment variable, typed and validated."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="ignore", frozen=True)

    home: Path = Field(
        Path(".pulse"),
        description="warehouse, recovery state, logs, keys; a relative path is taken from the "
        "current directory and made absolute",
    )
    kafka_bootstrap: str | None = Field(None, description="unset: start the embedded broker")
    clickhouse_dsn: str | None = Field(None, description="chdb://PATH or http(s)://...")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    alertmanager_url: str | None = None
    alert_webhook_url: str | None = None
    grafana_url: str | None = None
    grafana_token: SecretStr | None = None
    timezone: str = "UTC"
    session_timeout: timedelta = timedelta(minutes=30)
    allowed_lateness: timedelta = timedelta(minutes=10)
    flow_retention: timedelta = Field(
        timedelta(hours=48), description="how long the flow remembers a user's ids and sessions"
    )
    fx_rates: Path | None = Field(None, description="CSV date,currency,eur_per_unit")
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$", description="prepended to topics")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="page origins allowed to send events from browsers, comma-separated"
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())  # type: ignore[call-overload]
        out = []
        for item in (str(i).strip() for i in items):
            if item:
                out.append(normalise_origin(item))
        return tuple(dict.fromkeys(out))

    broker_listen: str = Field(
        DEFAULT_BOOTSTRAP,
        description="HOST:PORT of the embedded broker (when PULSE_KAFKA_BOOTSTRAP is unset)",
    )
    stop_timeout: timedelta = Field(
        timedelta(seconds=90),
        description="how long a graceful stop (draining, last writes) may take before the "
        "process exits anyway",
    )
    flow_exit_when_idle: float | None = Field(
        None,
        ge=0,
        description="seconds: under `python -m bytewax.run`, every process stops once the "
        "topics are drained and nothing arrived for that long",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="addresses or networks (comma-separated) of proxies whose "
        "X-Forwarded-For is believed for a browser's address",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())  # type: ignore[call-overload]
        out = []
        for item in (str(i).strip() for i in items):
            if item:
                try:
                    out.append(str(ipaddress.ip_network(item, strict=False)))
                except ValueError:
                    raise ValueError(
                        f"expected addresses or networks like 10.0.0.1,10.1.0.0/16, got {item!r}"
                    ) from None
        return tuple(dict.fromkeys(out))

    retention: timedelta | None = Field(
        None,
        description="how long raw events, sessions and per-user data are kept (unset: keep); "
        "the rollups' aggregate counts stay",
    )
    pseudonymize: bool = Field(
        False, description="replace every user id at the edge with its keyed hash"
    )
    pseudonymize_key: SecretStr | None = Field(
        None,
        description="hex key of the pseudonyms (unset: generated once in "
        "$PULSE_HOME/pseudonymize.key)",
    )
    flow_state_dir: Path | None = Field(
        None,
        description="under `python -m bytewax.run`, where the shards save their users' "
        "states (default $PULSE_HOME/flow-state; shared like the recovery directory)",
    )

    @field_validator(
        "session_timeout", "allowed_lateness", "flow_retention", "stop_timeout", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        if isinstance(value, str | int | float | timedelta):
            return parse_duration(value)
        raise ValueError("expected a duration like 30m, 90s or 1h")

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: object) -> timedelta | None:
        if value is None or value == "":
            return None
        if isinstance(value, str | int | float | timedelta):
            found = parse_duration(value)
            if found >= timedelta(hours=1):
                return found
        raise ValueError("expected a duration of at least 1h like 30d or 90d (unset: keep)")

    @field_validator("pseudonymize_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        try:
            key = bytes.fromhex(value.get_secret_value().strip())
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ValueError("expected at least 32 hex digits (16 bytes)")
        return value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Made absolute once, here: every message names the one directory used, and a command
        # run from another directory can say that it finds no Pulse there (see `pulse query`).
        return value.expanduser().resolve()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"expected an IANA timezone like Europe/Amsterdam, got {value!r}"
            ) from exc
        return value

    @field_validator("broker_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT like 127.0.0.1:19092, got {value!r}")
        return value

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith((EMBEDDED_SCHEME, "http://", "https://")):
            raise ValueError("expected chdb://PATH or http(s)://user:pass@host:8123/db")
        return value

    @field_validator("fx_rates")
    @classmethod
    def _fx_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("kafka_bootstrap", "alertmanager_url", "alert_webhook_url", "grafana_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def embedded_broker(self) -> bool:
        """True when Pulse starts its own broker (``PULSE_KAFKA_BOOTSTRAP`` unset)."""
        return self.kafka_bootstrap is None

    @property
    def bootstrap(self) -> str:
        """The Kafka bootstrap address clients use."""
        return self.kafka_bootstrap or self.broker_listen

    @property
    def warehouse_dsn(self) -> str:
        """The ClickHouse DSN; the embedded default lives under ``PULSE_HOME``."""
        return self.clickhouse_dsn or f"{EMBEDDED_SCHEME}{(self.home / 'warehouse').resolve()}"

    @property
    def embedded_warehouse(self) -> bool:
        """True when the warehouse is chDB in this process (one process may open it)."""
        return is_embedded(self.warehouse_dsn)

    @property
    def keys_file(self) -> Path:
        """Where hashed API keys are stored."""
        return self.home / "keys.json"

    @property
    def cli_key_file(self) -> Path:
        """The read key a stack holding the embedded warehouse leaves for local commands
        (``pulse query`` asks its API with it)."""
        return self.home / "cli-read.key"

    @property
    def api_url(self) -> str:
        """The API's base URL as configured (``PULSE_API_HOST``/``PULSE_API_PORT``)."""
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def recovery_dir(self) -> Path:
        """Bytewax recovery state (offsets, shard generations; the shards' states in its
        ``state`` directory). Kept across restarts: with a broker reattached the offsets
        are still valid, and a broker that restarted empty is noticed by the flow's source,
        which then reads the new topics from their start."""
        return self.home / "recovery"

    @property
    def runner_state_dir(self) -> Path:
        """Where the shards save their states under ``python -m bytewax.run``."""
        return self.flow_state_dir or self.home / "flow-state"

    @property
    def pulse_pid_file(self) -> Path:
        """Where the running ``pulse up`` / ``pulse demo`` of this home is recorded."""
        return self.home / "pulse.pid"

    @property
    def broker_pid_file(self) -> Path:
        """Where the embedded broker of this home is recorded."""
        return self.home / "broker.pid"

    @property
    def broker_log_file(self) -> Path:
        """The embedded broker's log."""
        return self.home / "broker.log"

    @property
    def pseudonymize_key_file(self) -> Path:
        """The generated pseudonymisation key (when ``PULSE_PSEUDONYMIZE_KEY`` is unset)."""
        return self.home / "pseudonymize.key"

    @property
    def erasure_salt_file(self) -> Path:
        """The salt of the hashed ids in the erasure audit (generated once, 0600)."""
        return self.home / "erasure.salt"

    @property
    def simulations_dir(self) -> Path:
        """Where ``pulse simulate`` to Kafka writes the ground truth of its incidents."""
        return self.home / "simulations"


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation error into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"PULSE_{field.upper()}: {message}") from None

"""Settings: defaults, durations, and one clear line naming a bad variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from api.settings import load_settings, parse_duration
from ingest.errors import ConfigError


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PULSE_HOME", "PULSE_KAFKA_BOOTSTRAP", "PULSE_CLICKHOUSE_DSN", "PULSE_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.embedded_broker and s.bootstrap == "127.0.0.1:19092"
    assert s.api_host == "127.0.0.1" and s.api_port == 8000
    assert s.session_timeout == timedelta(minutes=30)
    assert s.allowed_lateness == timedelta(minutes=10)
    assert s.timezone == "UTC"
    assert s.warehouse_dsn.startswith("chdb://") and s.warehouse_dsn.endswith(".pulse/warehouse")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PULSE_API_PORT", "eighty"),
        ("PULSE_API_PORT", "70000"),
        ("PULSE_SESSION_TIMEOUT", "soon"),
        ("PULSE_ALLOWED_LATENESS", "-"),
        ("PULSE_TIMEZONE", "Mars/Olympus"),
        ("PULSE_CLICKHOUSE_DSN", "postgres://x"),
        ("PULSE_FX_RATES", "/nonexistent/rates.csv"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{var}: ")
    assert "\n" not in message


def test_grafana_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_GRAFANA_TOKEN", "glsa_topsecret")
    s = load_settings()
    assert "topsecret" not in repr(s) and "topsecret" not in str(s)
    assert s.grafana_token is not None and s.grafana_token.get_secret_value() == "glsa_topsecret"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("90s", 90), ("1h", 3600), ("250ms", 0.25), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds

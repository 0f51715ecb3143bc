"""`pulse demo` start-up: the Business overview URL, and opening it only where a browser is."""

from __future__ import annotations

import sys
import time
import webbrowser
from pathlib import Path

import pytest

from api.serving import dashboard_url, open_browser
from api.settings import load_settings

URL = "http://127.0.0.1:8000/#pulse-overview"


def _fresh_browser_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """``webbrowser`` reads the environment once per process: make it read it again."""
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8123/#pulse-overview"),
        ("0.0.0.0", "http://127.0.0.1:8123/#pulse-overview"),
        ("::", "http://[::1]:8123/#pulse-overview"),
        ("pulse.internal", "http://pulse.internal:8123/#pulse-overview"),
    ],
)
def test_dashboard_url_is_reachable_from_this_machine(host: str, url: str) -> None:
    assert dashboard_url(load_settings(api_host=host, api_port=8123)) == url


@pytest.mark.skipif(sys.platform != "linux", reason="other systems always have a browser")
def test_nothing_is_opened_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    _fresh_browser_registry(monkeypatch)
    started = time.monotonic()
    assert open_browser(URL) is False  # no GUI browser; a text-mode one is never started
    assert time.monotonic() - started < 5


def test_the_browser_named_in_the_environment_gets_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = tmp_path / "opened"
    command = tmp_path / "browser"
    command.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    command.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(command))
    _fresh_browser_registry(monkeypatch)
    assert open_browser(URL) is True
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened.read_text() == URL

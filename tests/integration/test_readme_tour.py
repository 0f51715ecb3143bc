"""The README's quick tour, extracted and run verbatim with bash from the clone's root, in a
throw-away home (``mktemp -d`` under this test's directory) on a free port: every command
succeeds, the outputs the README shows as comments appear, and the query shows what the
tour promises (mobile conversion falls from 10:10); as the README says, the detector raised
no insight from half an hour of traffic. Nothing is left in the clone."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def tour() -> str:
    """The bash block under ``## Quick tour``."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block in the quick tour"
    return block.group(1)


def test_the_quick_tour_runs_verbatim_and_shows_what_it_promises(tmp_path: Path) -> None:
    require((ROOT / ".venv" / "bin" / "pulse").exists(), "the clone's .venv (make install)")
    script = tour()
    before = set(os.listdir(ROOT))
    env = {**os.environ, "TMPDIR": str(tmp_path), "PULSE_API_PORT": str(free_port()), "TZ": "UTC",
           "PULSE_BROKER_LISTEN": f"127.0.0.1:{free_port()}"}  # fmt: skip
    env.pop("PULSE_HOME", None)
    # -e: any failing command fails the tour; the stack is stopped even then
    guarded = f"set -e\ntrap '.venv/bin/pulse stop >/dev/null 2>&1 || true' EXIT\n{script}"
    done = subprocess.run(["bash", "-c", guarded], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    homes = list(tmp_path.glob("tmp.*"))
    log = homes[0].joinpath("up.log").read_text() if homes else ""
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:], log[-3000:])
    out = done.stdout
    shown = re.findall(r"^# (\{.*\}|accepted=.*)$", script, re.M)
    for line in shown:  # the outputs the README shows
        assert line in out, (line, out[-3000:])
    assert "mobile" in out and "orders" in out
    assert set(os.listdir(ROOT)) == before  # nothing written into the clone

    (home,) = homes
    query = [str(ROOT / ".venv/bin/pulse"), "query", "conversion_rate", "--by", "device",
             "--from", "2026-11-24T10:00Z", "--to", "2026-11-24T10:30Z", "--interval", "5m",
             "--format", "json"]  # fmt: skip
    answered = subprocess.run(query, env={**env, "PULSE_HOME": str(home)}, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    series = json.loads(answered.stdout)["series"]
    mobile = {p["ts"][11:16]: p["value"] for p in series if p["device"] == "mobile"}
    desktop = {p["ts"][11:16]: p["value"] for p in series if p["device"] == "desktop"}
    before_drop = (mobile["10:00"] + mobile["10:05"]) / 2
    during = (mobile["10:15"] + mobile["10:20"] + mobile["10:25"]) / 3
    assert before_drop > 0 and during < before_drop / 3, mobile
    assert min(desktop[t] for t in ("10:15", "10:20", "10:25")) > during, desktop

    # What the README says of insights: half an hour is too little for the detector to learn
    # from, so it raised nothing (no false insight either), read from the home's warehouse.
    count = (
        "import sys; from pathlib import Path; from api.settings import load_settings; "
        "from warehouse.client import connect; "
        "c = connect(load_settings(home=Path(sys.argv[1])).warehouse_dsn, create=False); "
        "print(c.query('SELECT count() FROM insights').result_rows[0][0])"
    )
    raised = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", count, str(home)], cwd=ROOT,
                            env={**env, "PULSE_HOME": str(home)}, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert raised.returncode == 0, raised.stderr
    assert "raises nothing here" in (ROOT / "README.md").read_text()
    assert raised.stdout.strip() == "0", raised.stdout

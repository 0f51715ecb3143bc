"""``GET /v1/experiments``, ``GET|PUT /v1/experiments/{key}`` (CONTRACT §7, §10) on the real
chDB filled by the real pipeline, and ``pulse experiments list|show`` (CONTRACT §4) on an
embedded warehouse filled by ``pulse replay --wait``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from insights.experiment_results import experiment_document
from tests.conftest import free_port
from tests.integration.test_cli_commands import run_pulse
from tests.integration.test_experiments_warehouse import FROM, TO, adversarial_events
from tests.pipeline import run_pipeline
from tests.servers import serve_in_thread
from warehouse.client import connect
from warehouse.migrate import migrate

pytestmark = pytest.mark.integration

FIELDS = {"experiment", "from", "to", "control", "cuped", "sequential", "variants",
          "multiple_exposures", "srm", "results"}  # fmt: skip
RESULT = {"metric", "variant", "mean", "control_mean", "lift", "ci", "p_value", "chance_to_win"}
RANGE = {"from": FROM.isoformat(), "to": TO.isoformat()}


@pytest.fixture(scope="module")
def served(broker, warehouse_dsn, tmp_path_factory) -> Iterator[tuple[str, dict, object]]:
    database = f"xapi_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    tmp = tmp_path_factory.mktemp("xapi")
    raws = [json.dumps(e).encode() for e in adversarial_events()]
    run_pipeline(broker.bootstrap, warehouse_dsn, database, raws, tmp)
    store = KeyStore(tmp / "keys.json")
    keys = {
        scope: {"Authorization": f"Bearer {store.create(scope)}"} for scope in ("read", "admin")
    }
    port = free_port()
    server, thread = serve_in_thread(create_app(Services(keys=store, warehouse=client)), port)
    yield f"http://127.0.0.1:{port}", keys, client
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(10)
    client.command(f"DROP DATABASE `{database}`")


def test_list(served) -> None:
    url, keys, _ = served
    doc = httpx.get(f"{url}/v1/experiments", headers=keys["read"]).json()
    by_name = {e["experiment"]: e for e in doc["experiments"]}
    assert set(by_name) == {"banner", "checkout"}
    assert by_name["checkout"]["variants"] == ["a", "b", "control"]
    assert by_name["checkout"]["control"] == "control"
    assert by_name["banner"]["control"] == "x"  # no `control`: the first by name


@pytest.mark.parametrize(("cuped", "sequential"), [(False, False), (True, True)])
def test_one_experiment_is_the_contracts_document(served, cuped, sequential) -> None:
    url, keys, client = served
    params = {**RANGE, "cuped": str(cuped).lower(), "sequential": str(sequential).lower()}
    r = httpx.get(f"{url}/v1/experiments/checkout", params=params, headers=keys["read"])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == FIELDS
    assert (doc["cuped"], doc["sequential"], doc["control"]) == (cuped, sequential, "control")
    assert doc["variants"] == [{"variant": "a", "users": 10}, {"variant": "b", "users": 1},
                               {"variant": "control", "users": 14}]  # fmt: skip
    assert doc["multiple_exposures"] == 1
    assert set(doc["srm"]) == {"p_value", "flagged"}
    assert len(doc["results"]) == 5 * 2 and all(set(x) == RESULT for x in doc["results"])
    assert doc["from"] == "2024-03-02T00:00:00Z" and doc["to"] == "2024-03-09T00:00:00Z"
    direct = experiment_document(client, "checkout", FROM, TO, cuped=cuped, sequential=sequential)
    assert doc == json.loads(json.dumps(direct))


def test_errors_are_json_with_a_reason(served) -> None:
    url, keys, _ = served
    r = httpx.get(f"{url}/v1/experiments/nope", headers=keys["read"])
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    span = {"from": FROM.isoformat(), "to": TO.isoformat()}
    r = httpx.get(f"{url}/v1/experiments/nope", params=span, headers=keys["read"])
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    # a known experiment over a range without exposures: a document with no users
    empty = {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}
    r = httpx.get(f"{url}/v1/experiments/checkout", params=empty, headers=keys["read"])
    assert r.status_code == 200 and r.json()["variants"] == [], r.text
    bad = {"from": TO.isoformat(), "to": FROM.isoformat()}
    r = httpx.get(f"{url}/v1/experiments/checkout", params=bad, headers=keys["read"])
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("to")
    r = httpx.get(f"{url}/v1/experiments/checkout", params={"from": "yesterday"},
                  headers=keys["read"])  # fmt: skip
    assert r.status_code == 400 and "from" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/experiments").status_code == 401
    put = httpx.put(f"{url}/v1/experiments/checkout", json={"control": "a"}, headers=keys["read"])
    assert put.status_code == 403
    for body, word in [({"weights": {"a": -1}}, "weights"), ({"weights": {"a": 0}}, "weights"),
                       ({"control": "z", "weights": {"a": 1}}, "control"),
                       ({"weights": {"a": "x"}}, "weights")]:  # fmt: skip
        r = httpx.put(f"{url}/v1/experiments/other", json=body, headers=keys["admin"])
        assert r.status_code == 400 and word in r.json()["error"]["message"], (body, r.text)


def test_a_declared_split_and_control_are_used(served) -> None:
    url, keys, _ = served
    body = {"control": "a", "weights": {"control": 0.9, "a": 0.05, "b": 0.05}}
    r = httpx.put(f"{url}/v1/experiments/checkout", json=body, headers=keys["admin"])
    assert r.status_code == 200 and r.json()["weights"] == body["weights"]
    doc = httpx.get(f"{url}/v1/experiments/checkout", params=RANGE, headers=keys["read"]).json()
    assert doc["control"] == "a"
    assert {x["variant"] for x in doc["results"]} == {"b", "control"}
    assert doc["srm"]["flagged"] and doc["srm"]["p_value"] < 1e-10  # 14/10/1 vs 90/5/5
    # declared back to an equal split with the default control
    r = httpx.put(f"{url}/v1/experiments/checkout", json={}, headers=keys["admin"])
    doc = httpx.get(f"{url}/v1/experiments/checkout", params=RANGE, headers=keys["read"]).json()
    assert doc["control"] == "control" and doc["srm"]["p_value"] < 0.01  # 14/10/1 vs equal


def test_cli_list_and_show_without_a_stack(broker, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in adversarial_events()))
    env = {"PULSE_KAFKA_BOOTSTRAP": broker.bootstrap, "PULSE_TOPIC_PREFIX": f"x{free_port()}.",
           "PULSE_HOME": str(tmp_path / "home")}  # fmt: skip
    done = run_pulse("replay", str(path), "--wait", env=env)
    assert done.returncode == 0, done.stderr
    listed = run_pulse("experiments", "list", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [e["experiment"] for e in json.loads(listed.stdout)["experiments"]] == [
        "banner", "checkout"]  # fmt: skip
    shown = run_pulse("experiments", "show", "checkout", "--from", RANGE["from"], "--to",
                      RANGE["to"], "--sequential", "--format", "json", env=env)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert set(doc) == FIELDS and doc["sequential"] is True and doc["multiple_exposures"] == 1
    table = run_pulse("experiments", "show", "checkout", "--from", RANGE["from"], "--to",
                      RANGE["to"], env=env)  # fmt: skip
    assert table.returncode == 0 and "revenue_per_user" in table.stdout, table.stderr
    missing = run_pulse("experiments", "show", "nope", env=env)
    assert missing.returncode != 0 and "nope" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

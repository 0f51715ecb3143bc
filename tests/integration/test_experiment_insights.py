"""Experiment insights through the detector's pass, the insight store and the real
Alertmanager (CONTRACT §8, §10): an SRM and a guardrail breach each raise one insight
naming the experiment and the variant, are not raised twice, and an SRM that goes away
resolves its insight (and ends its alert)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from insights.alerts import AlertConfig, Notifier
from insights.runner import DetectConfig, run_once
from insights.store import InsightStore
from tests.conftest import require
from tests.integration.test_alertmanager import BINARY, Alertmanager, Receiver, _alerts

pytestmark = pytest.mark.integration


def _expose(client, experiment: str, variant: str, users: range, at: datetime) -> None:
    rows = [[experiment, f"{experiment}-{variant}-{u}", at, f"x{experiment}{variant}{u}",
             variant, 1] for u in users]  # fmt: skip
    columns = ["experiment", "user_id", "ts", "event_id", "variant", "version"]
    client.insert("exposures", rows, column_names=columns)


def _buy(client, experiment: str, variant: str, users: range, at: datetime) -> None:
    rows = [[at, f"o{experiment}{variant}{u}", "purchase", f"{experiment}-{variant}-{u}",
             f"ord{experiment}{variant}{u}", 40.0, 1, 1] for u in users]  # fmt: skip
    columns = [
        "ts",
        "event_id",
        "type",
        "user_id",
        "order_id",
        "revenue_eur",
        "is_order",
        "version",
    ]
    client.insert("events", rows, column_names=columns)


def test_srm_and_guardrail_insights_reach_alertmanager(warehouse: Any, tmp_path: Path) -> None:
    require(Path(BINARY).exists(), "prometheus-alertmanager (Debian package)")
    hook = Receiver()
    am = Alertmanager(tmp_path, hook.url)
    am.start()
    try:
        # passes in the past: Alertmanager takes an endsAt in the future for still firing
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        day = now - timedelta(days=2)
        # an SRM: 1000 vs 800 users on an equal split
        _expose(warehouse, "banner", "control", range(1000), day)
        _expose(warehouse, "banner", "B", range(800), day)
        # a guardrail breach: 30 % vs 10 % conversion over 2000 users each, balanced
        _expose(warehouse, "checkout", "control", range(2000), day)
        _expose(warehouse, "checkout", "B", range(2000), day)
        _buy(warehouse, "checkout", "control", range(600), day + timedelta(hours=1))
        _buy(warehouse, "checkout", "B", range(200), day + timedelta(hours=1))

        config = DetectConfig(alerts=AlertConfig(alertmanager_url=am.url,
                              public_url="http://pulse.example:8000"))  # fmt: skip
        notifier = Notifier(warehouse, config.alerts)
        report, state = run_once(warehouse, config, now, notifier=notifier)
        raised = {(i.metric, i.slice): i for i in report.changed}
        assert set(raised) == {
            ("sample_ratio", "experiment=banner,variant=B"),
            ("conversion", "experiment=checkout,variant=B"),
            ("revenue_per_user", "experiment=checkout,variant=B"),
        }
        srm = raised[("sample_ratio", "experiment=banner,variant=B")]
        assert srm.status == "open" and "Check the assignment of banner" in srm.recommendation
        assert raised[("conversion", "experiment=checkout,variant=B")].severity == "critical"
        body = hook.wait_for(
            lambda b: any(
                a["labels"]["slice"] == "experiment=banner,variant=B" for a in _alerts(b, "firing")
            )
        )
        alert = next(a for a in _alerts(body, "firing")
                     if a["labels"]["slice"] == "experiment=banner,variant=B")  # fmt: skip
        assert alert["labels"]["metric"] == "sample_ratio"
        assert "Pause variant B" in alert["annotations"]["description"]
        assert InsightStore(warehouse).get(srm.id) is not None

        # found again later: the same insights, nothing new
        later = now + timedelta(minutes=6)
        again, state = run_once(warehouse, config, later, state=state, notifier=notifier)
        assert again.changed == ()
        # the SRM goes away (the missing users arrive): its insight resolves
        _expose(warehouse, "banner", "B", range(800, 1000), day)
        fixed, state = run_once(warehouse, config, later + timedelta(minutes=6), state=state,
                                notifier=notifier)  # fmt: skip
        assert [(i.id, i.status, i.resolved_by) for i in fixed.changed] == [
            (srm.id, "resolved", "pulse")]  # fmt: skip
        hook.wait_for(
            lambda b: any(
                a["labels"]["slice"] == "experiment=banner,variant=B"
                for a in _alerts(b, "resolved")
            )
        )
    finally:
        am.stop()
        hook.close()

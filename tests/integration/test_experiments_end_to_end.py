"""End to end (issue #17): a simulated experiment with lost exposures (``pulse simulate
--experiment``) → collector → broker → flow → warehouse → ``GET /v1/experiments/{key}``'s
document with the SRM flagged, matching the ground truth's exposed users, and an SRM
insight naming the experiment and the variant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.simulator import SimConfig, ground_truth, iter_events, parse_experiment
from ingest.simulator.engine import Run
from ingest.simulator.experiments import experiment_truth
from insights.experiment_checks import check_experiments
from insights.experiment_results import experiment_document
from insights.store import InsightStore
from tests.pipeline import drained_database

pytestmark = pytest.mark.integration


def test_simulated_srm_reaches_the_api_and_raises_an_insight(broker, warehouse_dsn,
                                                             tmp_path_factory) -> None:  # fmt: skip
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    spec = parse_experiment("banner:variants=control/B,lose=0/0.25,conversion=0/-0.2")
    config = SimConfig(rate=15, duration=timedelta(hours=2), seed=5, start=start,
                       experiments=(spec,))  # fmt: skip
    run = Run(config)
    raws = [line.encode() for _, lines in run.batches() for line in lines]
    [truth] = experiment_truth(run.experiments, (spec,))
    assert ground_truth(config)["experiments"][0]["srm_expected"]
    assert raws == [line for _, line in iter_events(config)]  # the same run
    with drained_database(broker.bootstrap, warehouse_dsn, raws, tmp_path_factory,
                          "e2e") as (client, drained):  # fmt: skip
        assert drained.rejected == 0
        doc = experiment_document(client, "banner", start, start + timedelta(hours=2),
                                  sequential=True)  # fmt: skip
        assert {v["variant"]: v["users"] for v in doc["variants"]} == truth["exposed_users"]
        assert doc["multiple_exposures"] == 0
        assert doc["srm"]["flagged"] is True
        raised = check_experiments(client, InsightStore(client), [], start + timedelta(hours=3))
        # B also lowers conversion by 20 %: depending on the hour's traffic its guardrail
        # may be breached too, as an insight of its own
        by_metric = {i.metric: i for i in raised}
        assert set(by_metric) <= {"sample_ratio", "conversion", "revenue_per_user"}
        assert {i.slice for i in raised} == {"experiment=banner,variant=B"}
        assert "Check the assignment of banner" in by_metric["sample_ratio"].recommendation

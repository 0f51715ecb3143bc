"""`dashboards.clickhouse_query`: the ClickHouse panel target as an SDK dataquery variant —
its JSON (what Grafana's plugin reads), its strict decoding, its builder, and its
registration with the SDK's runtime."""

from __future__ import annotations

import json

import pytest
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from dashboards.clickhouse_query import (
    PLUGIN_ID,
    ClickHouseQuery,
    ClickHouseQueryBuilder,
    register,
)

_SQL = "SELECT $__timeInterval(ts) AS time, count() FROM events GROUP BY time"


def _encoded(query: ClickHouseQuery) -> object:
    """The JSON a dashboard holds (the SDK's encoder turns the datasource into an object)."""
    return json.loads(json.dumps(query, cls=JSONEncoder))


def test_the_json_is_the_plugins_raw_sql_query() -> None:
    assert ClickHouseQuery(raw_sql=_SQL).to_json() == {
        "refId": "A",
        "editorType": "sql",
        "queryType": "timeSeries",
        "format": 0,  # sqlutil: 0 time series, 1 table
        "rawSql": _SQL,
    }
    table = ClickHouseQuery("B", _SQL, "table").to_json()
    assert table["format"] == 1 and table["refId"] == "B"
    assert "datasource" not in table and "hide" not in table  # only when set


def test_decoding_round_trips() -> None:
    ref = DataSourceRef(type_val=PLUGIN_ID, uid="pulse-clickhouse")
    query = ClickHouseQuery("C", _SQL, "table", datasource=ref, hide=True)
    data = query.to_json()
    data["datasource"] = ref.to_json()  # as it comes from a dashboard's JSON
    again = ClickHouseQuery.from_json(data)
    assert _encoded(again) == _encoded(query) == {**data, "hide": True}
    assert again.datasource is not None and again.datasource.uid == "pulse-clickhouse"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rawSQL": "SELECT 1"}, "unknown ClickHouse query field(s): rawSQL"),
        ({"queryType": "logs"}, "queryType must be one of timeSeries, table"),
        ({"editorType": "builder"}, "a ClickHouse query here is raw SQL"),
        ({"rawSql": ""}, "a ClickHouse query here is raw SQL"),
    ],
    ids=["typo", "query-type", "editor", "no-sql"],
)
def test_decoding_refuses_what_the_plugin_would_not_run(
    change: dict[str, str], message: str
) -> None:
    data = {**ClickHouseQuery(raw_sql=_SQL).to_json(), **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ClickHouseQuery.from_json(data)


def test_the_builder_builds_the_same_query() -> None:
    ref = DataSourceRef(type_val=PLUGIN_ID, uid="x")
    built = (
        ClickHouseQueryBuilder()
        .ref_id("B")
        .raw_sql(_SQL)
        .query_type("table")
        .datasource(ref)
        .build()
    )
    assert built.to_json() == ClickHouseQuery("B", _SQL, "table", datasource=ref).to_json()


def test_registered_the_sdk_decodes_targets_into_it() -> None:
    register()
    register()  # idempotent
    decoded = runtime.dataquery_from_json(ClickHouseQuery(raw_sql=_SQL).to_json(), PLUGIN_ID)
    assert isinstance(decoded, ClickHouseQuery) and decoded.raw_sql == _SQL

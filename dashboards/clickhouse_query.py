"""The grafana-clickhouse-datasource query as a grafana-foundation-sdk dataquery variant.

The SDK ships no model for this plugin, so this module adds one the way the SDK's own
variants are made (a ``Dataquery`` model with ``to_json``/``from_json``, a builder, and a
runtime registration so that ``Dashboard.from_json`` decodes panel targets into it). The
fields follow the plugin's ``CHSqlQuery`` (``src/types/sql.ts``) plus the backend's
``format`` (sqlutil: 0 time series, 1 table).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

__all__ = [
    "PLUGIN_ID",
    "ClickHouseQuery",
    "ClickHouseQueryBuilder",
    "register",
]

PLUGIN_ID = "grafana-clickhouse-datasource"
QueryType = Literal["timeSeries", "table"]
_FORMAT = {"timeSeries": 0, "table": 1}


class ClickHouseQuery(cogvariants.Dataquery):
    """One SQL target of a panel (or an annotation)."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        query_type: QueryType = "timeSeries",
        datasource: DataSourceRef | None = None,
        hide: bool | None = None,
        format_val: int | None = None,
        editor_type: str = "sql",
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.query_type = query_type
        self.datasource = datasource
        self.hide = hide
        self.format_val = _FORMAT[query_type] if format_val is None else format_val
        self.editor_type = editor_type

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "editorType": self.editor_type,
            "queryType": self.query_type,
            "format": self.format_val,
            "rawSql": self.raw_sql,
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Decode, rejecting fields the plugin does not define (so typos cannot hide)."""
        known = {"refId", "editorType", "queryType", "format", "rawSql", "datasource", "hide"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ClickHouse query field(s): {', '.join(sorted(unknown))}")
        if data.get("queryType") not in _FORMAT:
            raise ValueError(f"queryType must be one of {', '.join(_FORMAT)}")
        if data.get("editorType", "sql") != "sql" or not data.get("rawSql"):
            raise ValueError("a ClickHouse query here is raw SQL (editorType sql, rawSql)")
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data["rawSql"],
            query_type=data["queryType"],
            datasource=DataSourceRef.from_json(data["datasource"])
            if "datasource" in data
            else None,
            hide=data.get("hide"),
            format_val=data.get("format"),
            editor_type=data.get("editorType", "sql"),
        )


class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
    """Builder in the SDK's style: ``ClickHouseQueryBuilder().ref_id("A").raw_sql(...)``."""

    def __init__(self) -> None:
        self._internal = ClickHouseQuery()

    def build(self) -> ClickHouseQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def raw_sql(self, raw_sql: str) -> Self:
        self._internal.raw_sql = raw_sql
        return self

    def query_type(self, query_type: QueryType) -> Self:
        self._internal.query_type = query_type
        self._internal.format_val = _FORMAT[query_type]
        return self

    def datasource(self, ref: DataSourceRef) -> Self:
        self._internal.datasource = ref
        return self


def register() -> None:
    """Let ``Dashboard.from_json`` decode ClickHouse targets (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=ClickHouseQuery.from_json)
    )

"""Rendering dashboard definitions to Grafana dashboard JSON with grafana-foundation-sdk.

Panels query the ``grafana-clickhouse-datasource`` plugin with the SQL of
:mod:`dashboards.grafana_sql`; the Pipeline health board's process metrics (rejected
events, consumer lag, detector runs, alert deliveries) come from a Prometheus that scrapes
Pulse's ``/metrics``, chosen with a datasource variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import barchart, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_m

from dashboards import grafana_sql as sql
from dashboards.clickhouse_query import PLUGIN_ID, ClickHouseQuery, ClickHouseQueryBuilder
from dashboards.experiments_sql import EXPERIMENTS_VARIABLE_SQL, experiment_sql
from dashboards.macros import INTERVAL_SQL
from dashboards.model import (
    Dashboard,
    ExperimentData,
    FunnelData,
    HealthData,
    InsightsData,
    MetricData,
    Panel,
    ProductsData,
)

__all__ = [
    "DATASOURCE_UID",
    "LAST_WEEK",
    "TIMEZONES",
    "RenderOptions",
    "panel_label",
    "render",
]

DATASOURCE_UID = "pulse-clickhouse"
LAST_WEEK = "Last week"  # the name of the comparison series
TIMEZONES = (
    "UTC", "Europe/London", "Europe/Berlin", "Europe/Warsaw", "Europe/Stockholm",
    "Europe/Madrid", "America/New_York", "America/Los_Angeles", "Asia/Kolkata", "Asia/Tokyo",
)  # fmt: skip
_UNITS = {"eur": "currencyEUR", "count": "short", "percent": "percentunit", "seconds": "s",
          "per_second": "cps", "number": "none"}  # fmt: skip
_COLORS = {"green": "green", "orange": "orange", "red": "red", "blue": "blue"}
_PROMQL = {
    "rejected": "sum by (source) (increase(pulse_events_rejected_total[$__rate_interval]))",
    "consumer_lag": "sum by (topic) (pulse_consumer_lag)",  # flows/health.py
    "detector_runs": 'sum(increase({__name__=~"pulse_detector_runs.*"}[$__rate_interval]))',
    "alert_deliveries": (
        'sum by (outcome) (increase({__name__=~"pulse_alert_deliver.*"}[$__rate_interval]))'
    ),
}


@dataclass(frozen=True)
class RenderOptions:
    """Installation specifics: the datasource uid, default timezone and lateness."""

    datasource_uid: str = DATASOURCE_UID
    timezone: str = "UTC"
    allowed_lateness_s: int = 600
    default_interval: str = "5m"


class _SqlAnnotationTarget(dash_m.AnnotationTarget):
    """An annotation query for a backend datasource: Grafana stores the query itself as
    ``target`` (the SDK's ``AnnotationTarget`` only knows the built-in tag query)."""

    def __init__(self, query: ClickHouseQuery) -> None:
        super().__init__()
        self.query = query

    def to_json(self) -> dict[str, object]:
        return self.query.to_json()


class _Built(cogbuilder.Builder[Any]):
    def __init__(self, value: object) -> None:
        self.value = value

    def build(self) -> Any:
        return self.value


def _table() -> table.Panel:
    return table.Panel().show_header(True).cell_height(common.TableCellHeight.SM)


def _stat(calc: str) -> stat.Panel:
    return (
        stat.Panel()
        .reduce_options(common_b.ReduceDataOptions().calcs([calc]).values(False))
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
    )


def _series() -> timeseries.Panel:
    return (
        timeseries.Panel()
        .line_width(2)
        .fill_opacity(8)
        .span_nulls(False)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )


def panel_label(panel: Panel) -> str:
    """The series name a panel's values carry."""
    return panel.title


def _ref(options: RenderOptions) -> dash_m.DataSourceRef:
    return dash_m.DataSourceRef(type_val=PLUGIN_ID, uid=options.datasource_uid)


def _target(ref_id: str, raw: str, kind: str, options: RenderOptions) -> ClickHouseQueryBuilder:
    return (
        ClickHouseQueryBuilder()
        .ref_id(ref_id)
        .raw_sql(raw)
        .query_type("table" if kind == "table" else "timeSeries")
        .datasource(_ref(options))
    )


def _thresholds(panel: Panel) -> dash_b.ThresholdsConfig | None:
    if not panel.thresholds:
        return None
    steps = [dash_m.Threshold(value=t.value, color=_COLORS[t.color]) for t in panel.thresholds]
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(steps)


def _common(builder: Any, panel: Panel, panel_id: int, options: RenderOptions) -> Any:
    builder = (
        builder.id(panel_id)
        .title(panel.title)
        .datasource(_ref(options))
        .span(panel.width)
        .height(panel.height)
        .unit(_UNITS[panel.unit])
    )
    if panel.description:
        builder = builder.description(panel.description)
    if (thresholds := _thresholds(panel)) is not None:
        builder = builder.thresholds(thresholds)
    return builder


def _last_week_override() -> tuple[dash_m.MatcherConfig, list[dash_m.DynamicConfigValue]]:
    matcher = dash_m.MatcherConfig(id_val="byName", options=LAST_WEEK)
    props = [
        dash_m.DynamicConfigValue(
            id_val="custom.lineStyle", value={"fill": "dash", "dash": [8, 6]}
        ),
        dash_m.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "gray"}),
    ]
    return matcher, props


def _metric_panel(panel: Panel, data: MetricData, pid: int, options: RenderOptions) -> Any:
    label = panel_label(panel)
    targets = [_target("A", sql.metric_sql(data, label), "timeSeries", options)]
    if data.compare_week:
        raw = sql.metric_sql(data, LAST_WEEK, last_week=True)
        targets.append(_target("B", raw, "timeSeries", options))
    if panel.viz == "bars":
        dim = data.breakdown or ""
        builder: Any = barchart.Panel().x_field(dim).show_value(common.VisibilityMode.AUTO)
        targets = [_target("A", sql.metric_sql(data, label), "table", options)]
    elif panel.viz == "stat":
        builder = _stat("sum" if data.reduce == "sum" else "lastNotNull")
    else:
        builder = _series()
        if data.breakdown:
            builder = builder.display_name(f"${{__field.labels.{data.breakdown}}}")
        if data.compare_week:
            builder = builder.with_override(*_last_week_override())
    builder = _common(builder, panel, pid, options)
    for target in targets:
        builder = builder.with_target(target)
    return builder


def _panel(panel: Panel, pid: int, options: RenderOptions) -> Any:
    data = panel.data
    if isinstance(data, MetricData):
        return _metric_panel(panel, data, pid, options)
    if isinstance(data, FunnelData):
        raw = sql.funnel_sql(data)
        if data.by:
            builder: Any = _table()
        else:
            builder = barchart.Panel().x_field("step").show_value(common.VisibilityMode.ALWAYS)
        return _common(builder, panel, pid, options).with_target(
            _target("A", raw, "table", options)
        )
    if isinstance(data, ProductsData):
        builder = _table().override_by_name(
            "revenue", [dash_m.DynamicConfigValue(id_val="unit", value="currencyEUR")]
        )
        builder = builder.override_by_name(
            "view_to_purchase_rate",
            [dash_m.DynamicConfigValue(id_val="unit", value="percentunit")],
        )
        return _common(builder, panel, pid, options).with_target(
            _target("A", sql.products_sql(data), "table", options)
        )
    if isinstance(data, ExperimentData):
        return _experiment_panel(panel, data, pid, options)
    if isinstance(data, InsightsData):
        raw = sql.insights_sql(data.status, data.limit)
        return _common(_table(), panel, pid, options).with_target(
            _target("A", raw, "table", options)
        )
    return _health_panel(panel, data, pid, options)


def _experiment_panel(panel: Panel, data: ExperimentData, pid: int, options: RenderOptions) -> Any:
    raw = experiment_sql(data)
    builder: Any
    kind = "table"
    if data.view == "users":
        builder = barchart.Panel().x_field("variant").show_value(common.VisibilityMode.ALWAYS)
    elif data.view == "cumulative":
        builder, kind = _series().unit("percentunit"), "timeSeries"
    elif data.view == "srm":
        builder = _table()
    else:
        builder = _table()
        for column in ("lift", "ci_low", "ci_high"):
            builder = builder.override_by_name(
                column, [dash_m.DynamicConfigValue(id_val="unit", value="percentunit")]
            )
    return _common(builder, panel, pid, options).with_target(_target("A", raw, kind, options))


def _health_panel(panel: Panel, data: HealthData, pid: int, options: RenderOptions) -> Any:
    raw = sql.health_sql(data)
    builder: Any = _stat("lastNotNull") if panel.viz == "stat" else _series()
    if raw is not None:
        kind = "table" if panel.viz == "stat" else "timeSeries"
        return _common(builder, panel, pid, options).with_target(_target("A", raw, kind, options))
    prom = dash_m.DataSourceRef(type_val="prometheus", uid="${prometheus}")
    target = prom_b.Dataquery().ref_id("A").expr(_PROMQL[data.signal]).datasource(prom)
    builder = _common(builder, panel, pid, options).datasource(prom)
    return builder.with_target(target)


def _variables(board: Dashboard, options: RenderOptions) -> list[Any]:
    zones = [options.timezone, *(z for z in TIMEZONES if z != options.timezone)]
    tz = (
        dash_b.CustomVariable("tz")
        .label("Timezone")
        .description("Timezone of the buckets (a day starts at local midnight)")
        .values(",".join(zones))
        .current(dash_m.VariableOption(selected=True, text=zones[0], value=zones[0]))
    )
    default = options.default_interval
    bucket = (
        dash_b.CustomVariable("bucket")
        .label("Interval")
        .values(",".join(f"{k} : {v}" for k, v in INTERVAL_SQL.items()))
        .current(dash_m.VariableOption(selected=True, text=default, value=INTERVAL_SQL[default]))
    )
    out: list[Any] = [tz, bucket]
    if any(isinstance(p.data, ExperimentData) for p in board.panels):
        out.append(
            dash_b.QueryVariable("experiment")
            .label("Experiment")
            .description("An experiment seen in the exposures (CONTRACT §10)")
            .datasource(_ref(options))
            .query(EXPERIMENTS_VARIABLE_SQL)
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    if any(isinstance(p.data, HealthData) and sql.health_sql(p.data) is None for p in board.panels):
        out.append(
            dash_b.DatasourceVariable("prometheus")
            .label("Prometheus (scraping Pulse /metrics)")
            .type("prometheus")
        )
    return out


def _annotations(
    board: Dashboard, ids: dict[int, int], options: RenderOptions
) -> list[cogbuilder.Builder[dash_m.AnnotationQuery]]:
    """Insights on the panels of their metric, and the partial-data region on every series."""
    ref = _ref(options)
    series_ids = [
        ids[i]
        for i, p in enumerate(board.panels)
        if isinstance(p.data, MetricData) and p.viz == "timeseries"
    ]
    out: list[cogbuilder.Builder[dash_m.AnnotationQuery]] = []
    if series_ids:
        query = ClickHouseQuery("Partial", sql.partial_annotation_sql(options.allowed_lateness_s),
                                "table", ref)  # fmt: skip
        out.append(
            dash_b.AnnotationQuery()
            .name("Partial buckets")
            .datasource(ref)
            .enable(True)
            .icon_color("rgba(150, 150, 150, 0.35)")
            .filter(dash_b.AnnotationPanelFilter().ids(series_ids))
            .target(_Built(_SqlAnnotationTarget(query)))
        )
    for metric in sorted(board.metrics()):
        panel_ids = [
            ids[i]
            for i, p in enumerate(board.panels)
            if p.annotate and isinstance(p.data, MetricData) and p.data.metric == metric
        ]
        if not panel_ids:
            continue
        query = ClickHouseQuery("Insights", sql.insight_annotations_sql(metric), "table", ref)
        out.append(
            dash_b.AnnotationQuery()
            .name(f"Insights: {metric}")
            .datasource(ref)
            .enable(True)
            .icon_color("red")
            .filter(dash_b.AnnotationPanelFilter().ids(panel_ids))
            .target(_Built(_SqlAnnotationTarget(query)))
        )
    return out


def render(board: Dashboard, options: RenderOptions | None = None) -> dict[str, Any]:
    """The Grafana JSON model of ``board`` (what ``POST /api/dashboards/db`` takes)."""
    options = options or RenderOptions()
    ids = {i: i + 1 for i in range(len(board.panels))}
    builder = (
        dash_b.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags(["pulse", *board.tags])
        .timezone(options.timezone)
        .time(f"now-{board.default_range}", "now")
        .refresh(f"{board.refresh_s}s")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .editable()
        .link(
            dash_b.DashboardLink("Pulse")
            .type(dash_m.DashboardLinkType.DASHBOARDS)
            .tags(["pulse"])
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(True)
        )
        .variables(_variables(board, options))
        .annotations(_annotations(board, ids, options))
    )
    for i, panel in enumerate(board.panels):
        builder = builder.with_panel(_panel(panel, ids[i], options))
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return data

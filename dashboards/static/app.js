/* Pulse built-in dashboards.
 *
 * The dashboards (panels and the API route feeding each) are inlined in the page as JSON by
 * the server from the same definitions that render the Grafana dashboards. Data comes from
 * the JSON API with the key the user typed in, kept in sessionStorage (this tab only) and
 * sent as "Authorization: Bearer" — never in a URL. Charts are uPlot (vendored, MIT).
 */
'use strict';
(function () {
  const SPEC = JSON.parse(document.getElementById('pulse-spec').textContent);
  const KEY = 'pulse.key';
  // range -> [seconds, bucket interval]: ~60-300 points, enough detail, light on a phone.
  const RANGES = { '1h': [3600, '1m'], '6h': [21600, '5m'], '24h': [86400, '5m'], '7d': [604800, '1h'] };
  const STEP = { '1m': 60, '5m': 300, '1h': 3600, '1d': 86400 };
  const WEEK = 7 * 86400;
  const COLORS = ['#4ea1ff', '#f2cc60', '#3fb950', '#f778ba', '#a371f7', '#ff9e64', '#56d4dd', '#e6edf3'];
  const THRESHOLD = { green: '#3fb950', orange: '#d29922', red: '#f85149', blue: '#4ea1ff' };
  const PROM = {
    rejected: /^pulse_events_rejected_total$/,
    duplicates: /^pulse_flow_duplicates_total$/,
    bot_events: /^pulse_bot_events_total$/,
    consumer_lag: /^pulse_consumer_lag$/,
    detector_runs: /^pulse_detector_runs/,
    alert_deliveries: /^pulse_alert_deliver/,
  };
  const $ = (id) => document.getElementById(id);
  const stats = (window.pulseStats = { firstChartMs: null, requests: 0, refreshes: 0, charts: {} });
  const charts = new Map();
  const promHistory = [];
  let board = null;
  let timer = null;
  let generation = 0;
  let inflight = new Map();
  let insights = null; // {available, items} for the current refresh
  let askedKey = false;
  let scope = null; // the key's scope, from GET /v1/dashboards (null: not known)
  const RATIOS = new Set(SPEC.ratio_metrics || []);
  // What each number means (METRICS.md), said under every tile and chart and in insights.
  const DEFINITIONS = SPEC.definitions || {};
  const FUNNEL_ROWS = 10; // a breakdown table shows its biggest rows, as tall as a chart

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // -- formatting ------------------------------------------------------------------------
  const eur0 = new Intl.NumberFormat('en', { style: 'currency', currency: 'EUR', maximumFractionDigits: 0 });
  const eur2 = new Intl.NumberFormat('en', { style: 'currency', currency: 'EUR', maximumFractionDigits: 2 });
  const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });
  function duration(s) {
    s = Math.round(s);
    if (Math.abs(s) < 60) return s + ' s';
    if (Math.abs(s) < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }
  function fmt(v, unit) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    switch (unit) {
      case 'eur': return Math.abs(v) >= 1000 ? eur0.format(v) : eur2.format(v);
      case 'percent': return (v * 100).toFixed(Math.abs(v) < 0.1 ? 2 : 1) + ' %';
      case 'seconds': return duration(v);
      case 'per_second': return v.toFixed(v < 10 ? 2 : 0) + '/s';
      case 'number': return v.toFixed(2);
      default: return Math.abs(v) >= 10000 ? compact.format(v) : String(Math.round(v * 100) / 100);
    }
  }
  // One date format everywhere (axes, insights, tiles), in the zone chosen on the page:
  // 2026-12-06 14:35 (ISO order, 24 h).
  const dateFormats = new Map();
  function dateParts(sec) {
    const tz = $('tz').value;
    if (!dateFormats.has(tz)) {
      dateFormats.set(tz, new Intl.DateTimeFormat('en-GB', { timeZone: tz, year: 'numeric', month: '2-digit',
        day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }));
    }
    const parts = {};
    for (const x of dateFormats.get(tz).formatToParts(new Date(sec * 1000))) parts[x.type] = x.value;
    return parts;
  }
  function when(sec) { const d = dateParts(sec); return `${d.year}-${d.month}-${d.day} ${d.hour}:${d.minute}`; }
  function clock(sec) { const d = dateParts(sec); return `${d.hour}:${d.minute}`; }
  function day(sec) { const d = dateParts(sec); return `${d.year}-${d.month}-${d.day}`; }
  const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  // a date or time kept on one line (a narrow tile broke "2026-12-07" at its hyphens)
  const nw = (s) => `<span class="nw">${esc(s)}</span>`;
  const iso = (ms) => new Date(ms).toISOString();
  const epoch = (ts) => Date.parse(ts) / 1000;

  // -- the key and the API ---------------------------------------------------------------
  const getKey = () => sessionStorage.getItem(KEY);
  function askKey(reason) {
    if (askedKey && $('key-dialog').open) return;
    askedKey = true;
    setStatus(reason || '');
    $('key-input').value = '';
    if (!$('key-dialog').open) $('key-dialog').showModal();
  }
  function setStatus(text) { $('status').textContent = text; }

  function api(path, params, method) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === null || v === undefined) continue;
      (Array.isArray(v) ? v : [v]).forEach((x) => qs.append(k, x));
    }
    const url = path + (qs.toString() ? '?' + qs : '');
    if (!method && inflight.has(url)) return inflight.get(url);
    const request = (async () => {
      const key = getKey();
      if (!key) throw new HttpError(401, 'no API key entered');
      stats.requests++;
      const r = await fetch(url, {
        method: method || 'GET', cache: 'no-store',
        headers: { Authorization: 'Bearer ' + key, Accept: 'application/json' },
      });
      if (!r.ok) {
        let message = r.statusText;
        try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
        throw new HttpError(r.status, message);
      }
      return r.status === 204 ? null : r.json();
    })();
    if (!method) inflight.set(url, request);
    return request;
  }

  // -- time ------------------------------------------------------------------------------
  function currentWindow() {
    const [span, interval] = RANGES[$('range').value] || RANGES['6h'];
    const step = STEP[interval] * 1000;
    const end = Math.ceil(Date.now() / step) * step;
    return { start: end - span * 1000, end, interval, tz: $('tz').value };
  }
  function metricParams(d, w, shift) {
    const s = (shift || 0) * 1000;
    return {
      from: iso(w.start - s), to: iso(w.end - s), interval: w.interval, tz: w.tz, by: d.by,
      where: Object.entries(d.where || {}).map(([k, v]) => `${k}=${v}`),
    };
  }
  const metric = (d, w, shift) => api('/v1/metrics/' + d.metric, metricParams(d, w, shift));

  // -- insights (optional: the route may not exist yet) ----------------------------------
  function normaliseInsights(body) {
    const list = Array.isArray(body) ? body : (body && (body.insights || body.items || body.data)) || [];
    return list.map((x) => ({
      id: x.id ?? x.insight_id,
      metric: x.metric, slice: x.slice ?? 'all', severity: x.severity || 'info',
      status: x.status || 'open', summary: x.summary || x.title || x.description || '',
      interval: x.interval || '1m', observed: x.observed ?? null, expected: x.expected ?? null,
      change: x.change ?? null, contributors: x.contributors || [], cause: x.cause || '',
      explanation: x.explanation || '', recommendation: x.recommendation || '',
      start: epoch(x.started_at ?? x.start ?? x.opened_at ?? x.created_at ?? x.ts),
      end: (x.resolved_at ?? x.ended_at ?? x.end) ? epoch(x.resolved_at ?? x.ended_at ?? x.end) : null,
    }));
  }
  async function loadInsights(w) {
    try {
      const body = await api('/v1/insights', { since: iso(w.start) });
      return { available: true, items: normaliseInsights(body) };
    } catch (e) {
      return { available: !(e.status === 404 || e.status === 405), items: [], error: e };
    }
  }

  // -- panels ----------------------------------------------------------------------------
  // Panels are named by the grid they belong to (`${built}-${index}`): an answer for a board
  // left meanwhile finds no panel of that name (and fails quietly) instead of drawing the old
  // board's tile into the new board's panel of the same index.
  let built = 0;
  function buildGrid() {
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    built++;
    $('board-title').textContent = board.title;
    $('board-description').textContent = board.description;
    $('grid').innerHTML = board.panels.map((p, i) => `
      <section class="panel ${p.viz}" id="panel-${built}-${i}" data-state="loading"
               style="grid-column: span ${p.width}; min-height: ${p.viz === 'timeseries' ? p.height * 30 : 0}px">
        <h3 title="${esc(p.description)}">${esc(p.title)}</h3>
        <div class="sub"></div>
        <div class="body"></div><div class="note"></div>
      </section>`).join('');
    document.querySelectorAll('#tabs a').forEach((a) => a.classList.toggle('active', a.dataset.uid === board.uid));
    document.title = board.title + ' · Pulse';
  }
  const el = (i) => $('panel-' + i);
  function done(i, state, points, note) {
    const node = el(i);
    node.dataset.state = state;
    node.dataset.points = String(points || 0);
    node.querySelector('.note').innerHTML = note || '';
    if (state === 'ok' && points > 0 && stats.firstChartMs === null) {
      // From navigation start: what a person waits before the first chart shows data.
      stats.firstChartMs = Math.round(performance.now());
      document.documentElement.dataset.firstChart = String(stats.firstChartMs);
    }
  }
  function fail(i, e) {
    if (e.status === 401) askKey('The key was not accepted: enter a read key.');
    el(i).querySelector('.body').textContent =
      e.status === 403 ? 'This key lacks the scope for this panel.' : 'Could not load: ' + e.message;
    done(i, 'error');
  }

  // A breakdown shows its biggest slices: by the metric itself for counts and money, by the
  // slices' sessions for a ratio (else the best-converting tiny countries would show).
  async function weightsFor(d, w) {
    if (!d.by || !RATIOS.has(d.metric) || d.by === 'category') return null;
    const doc = await metric({ metric: 'sessions', by: d.by, where: d.where }, w);
    const totals = new Map();
    for (const p of doc.series) {
      const name = p[d.by] ?? '(unknown)';
      totals.set(name, (totals.get(name) || 0) + (p.value || 0));
    }
    return totals;
  }
  function shape(doc, d, weights) {
    const buckets = [...new Set(doc.series.map((p) => p.ts))];
    const xs = buckets.map(epoch);
    const partial = new Set(doc.series.filter((p) => p.partial).map((p) => p.ts));
    const scale = d.per_second ? 1 / STEP[doc.interval] : 1;
    const value = (p) => (p.value === null ? null : p.value * scale);
    if (!d.by) {
      const byTs = new Map(doc.series.map((p) => [p.ts, value(p)]));
      return { xs, buckets, partial, groups: [['', buckets.map((b) => byTs.get(b))]] };
    }
    const groups = new Map();
    for (const p of doc.series) {
      const name = p[d.by] ?? '(unknown)';
      if (!groups.has(name)) groups.set(name, new Map());
      groups.get(name).set(p.ts, value(p));
    }
    const volume = (m) => [...m.values()].reduce((a, v) => a + Math.abs(v || 0), 0);
    const total = weights ? (name) => weights.get(name) || 0 : (name) => volume(groups.get(name));
    const top = [...groups.entries()].sort((a, b) => total(b[0]) - total(a[0]) || (a[0] < b[0] ? -1 : 1)).slice(0, 8);
    return { xs, buckets, partial, groups: top.map(([n, m]) => [n, buckets.map((b) => m.get(b) ?? null)]) };
  }

  // The range fits the data: leading buckets with no data in any series (history shorter
  // than the range) are left out, keeping at least two.
  function trimLeading(s) {
    const has = (v) => v !== null && v !== undefined && v !== 0;
    let k = 0;
    while (k < s.xs.length - 2 && !s.groups.some(([, ys]) => has(ys[k]))) k++;
    if (!k) return s;
    return { ...s, xs: s.xs.slice(k), buckets: s.buckets.slice(k),
      groups: s.groups.map(([n, ys]) => [n, ys.slice(k)]) };
  }
  // An insight concerns a panel when its slice is the panel's: `all` for an unsliced chart,
  // the filter of a filtered one; a breakdown shows the slices of its dimension.
  function concerns(ins, d) {
    const where = d.where || {};
    const parts = ins.slice === 'all' ? {} : Object.fromEntries(ins.slice.split(',').map((kv) => kv.split('=')));
    for (const [k, v] of Object.entries(parts)) if (k !== d.by && where[k] !== v) return false;
    for (const [k, v] of Object.entries(where)) if (parts[k] !== v) return false;
    return true;
  }

  function overlay(u, info) {
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    for (const ins of info.insights) {
      const x0 = Math.max(left, u.valToPos(ins.start, 'x', true));
      const x1 = ins.end === null ? left + width : Math.min(left + width, u.valToPos(ins.end, 'x', true));
      if (x1 <= left || x0 >= left + width) continue;
      ctx.fillStyle = 'rgba(248, 81, 73, 0.14)';
      ctx.fillRect(x0, top, Math.max(x1 - x0, 2), height);
      ctx.fillStyle = '#f85149';
      ctx.fillRect(x0, top, Math.max(x1 - x0, 2), 3 * devicePixelRatio);
    }
    if (info.completeUntil !== null) {
      const x = Math.max(left, u.valToPos(info.completeUntil, 'x', true));
      if (x < left + width) {
        ctx.fillStyle = 'rgba(139, 152, 165, 0.12)';
        ctx.fillRect(x, top, left + width - x, height);
      }
    }
    ctx.setLineDash([4 * devicePixelRatio, 4 * devicePixelRatio]);
    for (const t of info.thresholds) {
      if (t.value === null) continue;
      const y = u.valToPos(t.value, 'y', true);
      if (y < top || y > top + height) continue;
      ctx.strokeStyle = THRESHOLD[t.color];
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
    }
    ctx.restore();
  }

  function drawChart(i, p, data, series, info) {
    // what a test (or a curious person in the console) can check: the first bucket drawn,
    // the series in their order, how many insights are shaded
    const body = el(i).querySelector('.body');
    stats.charts[p.title] = { first: data[0][0] ?? null, labels: series.map((x) => x.label),
      shaded: info.insights.length };
    const width = Math.max(body.clientWidth, 200);
    const height = Math.max(p.height * 30 - 50, 150);
    let chart = charts.get(i);
    if (chart && chart.series.length === series.length + 1) {
      chart.info = info;
      chart.setData(data);
      return;
    }
    if (chart) chart.destroy();
    body.innerHTML = '';
    const tz = $('tz').value;
    chart = new uPlot({
      width, height,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),
      cursor: { drag: { x: false, y: false } },
      legend: { show: series.length > 1, live: false },
      scales: { y: { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] } },
      axes: [
        { stroke: '#8b98a5', grid: { stroke: '#26313d', width: 1 }, ticks: { stroke: '#26313d' },
          // over days, a date per day: room for it, and no day named twice (ticks every 12 h
          // printed each date twice, overlapping)
          space: (u, ax, lo, hi) => (hi - lo > 2 * 86400 ? 90 : 50),
          values: (u, vals) => {
            const span = (u.scales.x.max || 0) - (u.scales.x.min || 0);
            if (span <= 2 * 86400) return vals.map((v) => (v === null ? '' : clock(v)));
            let prev = '';
            return vals.map((v) => {
              const label = v === null ? '' : day(v);
              const shown = label === prev ? '' : label;
              prev = label;
              return shown;
            });
          } },
        { stroke: '#8b98a5', grid: { stroke: '#26313d', width: 1 }, ticks: { stroke: '#26313d' },
          size: 64, values: (u, vals) => vals.map((v) => fmt(v, p.unit)) },
      ],
      series: [{ value: (u, v) => (v === null ? '–' : when(v)) }, ...series],
      hooks: { draw: [(u) => overlay(u, u.info)] },
    }, data, body);
    chart.info = info;
    charts.set(i, chart);
  }

  async function timeseriesPanel(i, p, w) {
    const d = p.data;
    const [doc, prev, weights] = await Promise.all([metric(d, w), d.compare_week ? metric(d, w, WEEK) : null,
      weightsFor(d, w)]);
    const s = trimLeading(shape(doc, d, weights));
    const data = [s.xs];
    let lastWeekNote = '';
    const series = [];
    let points = 0;
    if (!d.by) {
      // Complete buckets solid, partial ones dashed; they share the last complete point.
      const ys = s.groups[0][1];
      const firstPartial = s.buckets.findIndex((b) => s.partial.has(b));
      const cut = firstPartial === -1 ? ys.length : firstPartial;
      data.push(ys.map((v, k) => (k < cut ? v : null)));
      data.push(ys.map((v, k) => (k >= cut - 1 && cut < ys.length ? v : null)));
      series.push({ label: p.title, stroke: COLORS[0], width: 2, fill: 'rgba(78,161,255,0.08)', spanGaps: false,
        value: (u, v) => fmt(v, p.unit) });
      series.push({ label: 'partial', stroke: COLORS[0], width: 2, dash: [5, 5], value: (u, v) => fmt(v, p.unit) });
      points = ys.filter((v) => v !== null && v !== undefined).length;
      if (prev) {
        const back = shape(prev, d);
        const byX = new Map(back.xs.map((x, k) => [x + WEEK, back.groups[0][1][k]]));
        const week = s.xs.map((x) => byX.get(x) ?? null);
        if (week.some((v) => v !== null && v !== 0)) {
          data.push(week);
          series.push({ label: 'last week', stroke: '#8b98a5', width: 1.5, dash: [8, 6], value: (u, v) => fmt(v, p.unit) });
        } else {
          lastWeekNote = ' · no data a week earlier to compare with';
        }
      }
    } else {
      s.groups.forEach(([name, ys], k) => {
        data.push(ys);
        series.push({ label: name, stroke: COLORS[k % COLORS.length], width: 1.5, value: (u, v) => fmt(v, p.unit) });
        points += ys.filter((v) => v !== null).length;
      });
    }
    const ins = p.annotate && insights ? insights.items.filter((x) => x.metric === d.metric && concerns(x, d)) : [];
    const completeUntil = doc.complete_until ? epoch(doc.complete_until) : s.xs[0] ?? null;
    drawChart(i, p, data, series, { insights: ins, completeUntil, thresholds: p.thresholds });
    const note = (doc.series.some((x) => x.partial) ? '<span class="legend-partial"></span>partial buckets (shaded) may still grow' : '')
      + (ins.length ? ` · ${ins.length} insight(s) marked in red` : '') + lastWeekNote;
    done(i, 'ok', points, note);
  }

  function reduce(doc, d, how) {
    const s = shape(doc, d);
    const ys = s.groups[0][1];
    if (how === 'sum') return { value: ys.reduce((a, v) => a + (v || 0), 0), ys, index: ys.length - 1 };
    for (let k = ys.length - 1; k >= 0; k--) {
      if (!s.partial.has(s.buckets[k]) && ys[k] !== null) return { value: ys[k], ys, index: k };
    }
    return { value: null, ys, index: -1 };
  }
  function sparkline(ys) {
    const from = ys.findIndex((v) => v !== null && v !== 0); // from where the data starts
    ys = from > 0 && ys.length - from >= 2 ? ys.slice(from) : ys;
    const vals = ys.filter((v) => v !== null);
    if (vals.length < 2) return '';
    const lo = Math.min(...vals), hi = Math.max(...vals), n = ys.length - 1;
    const pts = ys.map((v, k) => (v === null ? null : `${(k / n) * 100},${30 - ((v - lo) / (hi - lo || 1)) * 28}`))
      .filter(Boolean).join(' ');
    return `<svg class="spark" viewBox="0 0 100 32" preserveAspectRatio="none"><polyline fill="none" stroke="#4ea1ff" stroke-width="1.5" vector-effect="non-scaling-stroke" points="${pts}"/></svg>`;
  }
  function colorFor(p, v) {
    let color = null;
    for (const t of p.thresholds) if (t.value === null || (v !== null && v >= t.value)) color = t.color;
    return color ? THRESHOLD[color] : 'inherit';
  }
  async function statPanel(i, p, w) {
    const d = p.data;
    const [doc, prev] = await Promise.all([metric(d, w), d.compare_week ? metric(d, w, WEEK) : null]);
    const cur = reduce(doc, d, d.reduce);
    let delta = '';
    if (prev) {
      const before = reduce(prev, d, d.reduce);
      const old = d.reduce === 'sum' ? before.value : before.ys[cur.index] ?? null;
      if (cur.value !== null && old) {
        const change = (cur.value - old) / Math.abs(old);
        delta = `<span class="delta ${change >= 0 ? 'up' : 'down'}" title="vs same time last week">${change >= 0 ? '▲' : '▼'} ${(Math.abs(change) * 100).toFixed(1)} %</span>`;
      }
    }
    el(i).querySelector('.body').innerHTML =
      `<span class="value" style="color:${colorFor(p, cur.value)}">${esc(fmt(cur.value, p.unit))}</span>${delta}${sparkline(cur.ys)}`;
    const s = shape(doc, d);
    const bucket = cur.index >= 0 ? epoch(s.buckets[cur.index]) : null;
    const note = d.reduce === 'sum'
      ? `total over the range: ${nw(when(w.start / 1000))} – ${nw(
        day(w.start / 1000) === day(w.end / 1000) ? clock(w.end / 1000) : when(w.end / 1000))}`
      : bucket === null ? 'last complete bucket: none yet'
        : `last complete ${esc(w.interval)} bucket: ${nw(when(bucket))} – ${nw(clock(bucket + STEP[w.interval]))}`;
    done(i, 'ok', cur.ys.filter((v) => v !== null).length, note);
  }

  async function barsPanel(i, p, w) {
    const d = p.data;
    const s = shape(await metric(d, w), d);
    const rows = s.groups.map(([name, ys]) => [name, ys.reduce((a, v) => a + (v || 0), 0)]).sort((a, b) => b[1] - a[1]);
    const max = Math.max(...rows.map((r) => r[1]), 1e-9);
    el(i).querySelector('.body').innerHTML = '<div class="bars">' + rows.map(([name, v]) =>
      `<div class="bar"><span>${esc(name)}</span><div class="fill" style="width:${(v / max) * 100}%"></div><span class="num">${esc(fmt(v, p.unit))}</span></div>`).join('') + '</div>';
    done(i, 'ok', rows.length);
  }

  async function funnelPanel(i, p, w) {
    const by = p.data.by;
    const body = await api('/v1/funnel', { from: iso(w.start), to: iso(w.end), tz: w.tz, by });
    const steps = body.steps || [];
    const node = el(i).querySelector('.body');
    if (!by) {
      const max = Math.max(...steps.map((s) => s.sessions), 1);
      node.innerHTML = '<div class="bars">' + steps.map((s) =>
        `<div class="bar"><span>${esc(s.step.replace(/_/g, ' '))}</span><div class="fill" style="width:${(s.sessions / max) * 100}%"></div><span class="num">${s.sessions} · ${esc(fmt(s.conversion_from_previous, 'percent'))}</span></div>`).join('') + '</div>';
      done(i, 'ok', steps.length, 'sessions starting in the range · conversion from the previous step');
      return;
    }
    const rows = new Map();
    for (const s of steps) {
      const k = s[by] ?? '(unknown)';
      if (!rows.has(k)) rows.set(k, {});
      rows.get(k)[s.step] = s;
    }
    const names = ['product_view', 'add_to_cart', 'begin_checkout', 'purchase'];
    const viewed = (r) => (r.product_view || {}).sessions || 0;
    const ranked = [...rows.entries()].sort(([a, x], [b, y]) => viewed(y) - viewed(x) || (a < b ? -1 : 1));
    node.innerHTML = `<table><tr><th>${esc(by)}</th>${names.map((n) => `<th class="n">${n.replace(/_/g, ' ')}</th>`).join('')}<th class="n">conversion</th></tr>`
      + ranked.slice(0, FUNNEL_ROWS).map(([k, r]) => `<tr><td>${esc(k)}</td>${names.map((n) => `<td class="n">${r[n] ? r[n].sessions : 0}</td>`).join('')}<td class="n">${esc(fmt(r.purchase && r.purchase.conversion_from_first, 'percent'))}</td></tr>`).join('')
      + '</table>';
    const more = ranked.length - FUNNEL_ROWS;
    done(i, 'ok', rows.size, 'biggest first (sessions with a product view)'
      + (more > 0 ? ` · ${more} smaller not shown` : ''));
  }

  async function productsPanel(i, p, w) {
    const body = await api('/v1/products/top', { from: iso(w.start), to: iso(w.end), by: p.data.by, limit: p.data.limit });
    const rows = body.products || [];
    el(i).querySelector('.body').innerHTML = '<table><tr><th>product</th><th>category</th><th class="n">views</th><th class="n">carts</th><th class="n">units</th><th class="n">revenue</th><th class="n">view→purchase</th></tr>'
      + rows.map((r) => `<tr><td>${esc(r.product_id)}</td><td>${esc(r.category || '–')}</td><td class="n">${r.views}</td><td class="n">${r.add_to_carts}</td><td class="n">${r.units}</td><td class="n">${esc(fmt(r.revenue, 'eur'))}</td><td class="n">${esc(fmt(r.view_to_purchase_rate, 'percent'))}</td></tr>`).join('')
      + '</table>';
    done(i, 'ok', rows.length);
  }

  const insightUnit = (metric) => (metric.endsWith('_rate') ? 'percent' : metric === 'revenue' || metric === 'aov' ? 'eur' : 'count');
  // The chart an insight concerns: the first annotated panel of its metric whose slice
  // fits (a breakdown by the slice's dimension, or the unsliced chart), on any board.
  function panelFor(x) {
    const dims = x.slice === 'all' ? [] : x.slice.split(',').map((kv) => kv.split('=')[0]);
    let best = null;
    for (const b of SPEC.dashboards) {
      b.panels.forEach((p, index) => {
        const d = p.data;
        if (d.kind !== 'metric' || d.metric !== x.metric || p.viz !== 'timeseries' || !p.annotate) return;
        if (!concerns(x, d)) return;
        const rank = d.by && dims.includes(d.by) ? 0 : d.by ? 2 : 1;
        if (!best || rank < best.rank) best = { uid: b.uid, index, title: p.title, rank };
      });
    }
    return best;
  }

  async function insightsPanel(i, p) {
    const node = el(i).querySelector('.body');
    let items = [];
    let available = true;
    try {
      items = normaliseInsights(await api('/v1/insights', { status: p.data.status, limit: p.data.limit }));
    } catch (e) {
      if (e.status !== 404 && e.status !== 405) throw e;
      available = false;
    }
    if (!available) {
      node.innerHTML = '<p class="muted">No insights: the insights API is not available on this server.</p>';
      done(i, 'empty', 0);
      return;
    }
    items = items.filter((x) => !p.data.status || x.status === p.data.status).slice(0, p.data.limit);
    if (!items.length) {
      node.innerHTML = `<p class="muted">No ${esc(p.data.status || '')} insights.</p>`;
      done(i, 'empty', 0);
      return;
    }
    // Ack and Resolve only for a key that may use them (admin); unknown scope: shown, and
    // the API says no.
    const may = scope === null || scope === 'admin';
    node.innerHTML = items.map((x) => {
      const panel = panelFor(x);
      const top = x.contributors.slice(0, 3).map((c) => `${esc(c.slice)} (${Math.round(c.share * 100)} % of the change, ${esc(c.effect)})`).join(', ');
      const unit = insightUnit(x.metric);
      const per = x.interval === '1h' ? 'per hour' : 'per minute';
      const change = x.change === null ? '' : ` (${x.change > 0 ? '+' : ''}${Math.round(x.change * 100)} %)`;
      return `
      <div class="insight" data-id="${esc(x.id)}">
        <span class="sev ${esc(x.severity)}">${esc(x.severity)}</span>
        <div class="text"><div class="summary">${esc(x.summary || x.metric)}</div>
          <div class="meta">${esc(x.metric)} · ${esc(x.slice)} · since ${nw(when(x.start))} · ${esc(x.status)}</div>
          <dl class="facts">
            <dt>Observed</dt><dd class="observed">${esc(fmt(x.observed, unit))} vs ${esc(fmt(x.expected, unit))} expected${esc(change)}
              <span class="muted">· ${esc(DEFINITIONS[x.metric] || x.metric)}, ${per}</span></dd>
            <dt>Where</dt><dd class="slices">${esc(x.slice)}${top ? ` <span class="muted">· top slices: ${top}</span>` : ''}</dd>
            ${x.explanation ? `<dt>Why</dt><dd class="why">${esc(x.explanation)}</dd>` : ''}
            ${x.recommendation ? `<dt>Advice</dt><dd class="advice">${esc(x.recommendation)}</dd>` : ''}
          </dl>
          ${panel ? `<a class="panel-link" href="#${esc(panel.uid)}?panel=${panel.index}">Show “${esc(panel.title)}” →</a>` : ''}
        </div>
        ${may && x.status === 'open' ? `<button type="button" data-act="ack" data-id="${esc(x.id)}">Ack</button>` : ''}
        ${may && x.status !== 'resolved' ? `<button type="button" data-act="resolve" data-id="${esc(x.id)}">Resolve</button>` : ''}
      </div>`;
    }).join('');
    done(i, 'ok', items.length, may ? '' : 'an admin key can acknowledge and resolve insights');
  }

  // -- experiments (CONTRACT §10) ------------------------------------------------------------
  // The experiment shown: ?experiment=KEY in the hash, else the one exposed most recently.
  async function currentExperiment() {
    const wanted = new URLSearchParams(location.hash.split('?')[1] || '').get('experiment');
    if (wanted) return wanted;
    const list = (await api('/v1/experiments')).experiments || [];
    list.sort((a, b) => (a.last_exposure < b.last_exposure ? 1 : -1));
    return list.length ? list[0].experiment : null;
  }

  function ciBar(lo, hi, lift, span) {
    const x = (v) => 50 + (Math.max(-span, Math.min(span, v)) / span) * 50;
    const cls = lo > 0 ? 'up' : hi < 0 ? 'down' : 'flat';
    return `<div class="ci"><div class="zero"></div><div class="range ${cls}" style="left:${x(lo)}%;width:${Math.max(x(hi) - x(lo), 0.5)}%"></div><div class="dot" style="left:${x(lift)}%"></div></div>`;
  }

  async function experimentPanel(i, p) {
    const node = el(i).querySelector('.body');
    const key = await currentExperiment();
    if (!key) {
      node.innerHTML = '<p class="muted">No experiment seen yet: send experiment_exposure events.</p>';
      done(i, 'empty', 0);
      return;
    }
    const doc = await api('/v1/experiments/' + encodeURIComponent(key), { sequential: 'true' });
    const view = p.data.view;
    if (view === 'users') {
      const max = Math.max(...doc.variants.map((v) => v.users), 1);
      node.innerHTML = `<p class="muted">${esc(doc.experiment)} · control: ${esc(doc.control)}</p><div class="bars">` + doc.variants.map((v) =>
        `<div class="bar"><span>${esc(v.variant)}</span><div class="fill" style="width:${(v.users / max) * 100}%"></div><span class="num">${v.users.toLocaleString('en-GB')}</span></div>`).join('')
        + `</div><p class="muted">${doc.multiple_exposures.toLocaleString('en-GB')} users saw more than one variant (left out)</p>`;
      done(i, 'ok', doc.variants.length);
    } else if (view === 'srm') {
      const ok = !doc.srm.flagged;
      node.innerHTML = `<div class="srm ${ok ? 'ok' : 'bad'}">${ok ? 'Sample ratio OK' : 'Sample ratio mismatch: check the assignment'}</div>`
        + `<p>p = ${doc.srm.p_value === null ? '–' : doc.srm.p_value.toExponential(2)} (flagged below 0.001) · ${esc(doc.experiment)} since ${nw(when(epoch(doc.from)))}</p>`;
      done(i, 'ok', 1);
    } else if (view === 'lift') {
      const span = Math.max(0.05, ...doc.results.map((r) => Math.max(Math.abs(r.ci[0] || 0), Math.abs(r.ci[1] || 0)))) * 1.1;
      node.innerHTML = '<table><tr><th>metric</th><th>variant</th><th class="n">mean</th><th class="n">control</th><th class="n">lift</th><th>95% interval (sequential)</th><th class="n">p</th><th class="n">chance to win</th></tr>'
        + doc.results.map((r) => `<tr><td>${esc(r.metric.replace(/_/g, ' '))}</td><td>${esc(r.variant)}</td><td class="n">${esc(fmtMean(r.metric, r.mean))}</td><td class="n">${esc(fmtMean(r.metric, r.control_mean))}</td><td class="n">${esc(pct(r.lift))}</td><td class="cicell">${ciBar(r.ci[0], r.ci[1], r.lift, span)}<span class="muted">${esc(pct(r.ci[0]))} … ${esc(pct(r.ci[1]))}</span></td><td class="n">${r.p_value === null ? '–' : r.p_value.toPrecision(2)}</td><td class="n">${esc(fmt(r.chance_to_win, 'percent'))}</td></tr>`).join('')
        + '</table>';
      done(i, 'ok', doc.results.length);
    } else {
      await cumulativePanel(i, p, doc);
    }
  }

  function pct(v) { return v === null || v === undefined ? '–' : (v >= 0 ? '+' : '') + (v * 100).toFixed(1) + ' %'; }
  function fmtMean(metric, v) {
    if (v === null || v === undefined) return '–';
    if (metric === 'conversion' || metric === 'add_to_cart_rate') return fmt(v, 'percent');
    if (metric === 'revenue_per_user' || metric === 'aov') return fmt(v, 'eur');
    return v.toFixed(3);
  }

  // The lift of one metric as it stood at the end of each day (at most 30 looks).
  async function cumulativePanel(i, p, doc) {
    const start = Date.parse(doc.from), end = Date.parse(doc.to);
    const day = 86400000;
    const ends = [];
    for (let t = Math.floor(start / day) * day + day; t < end && ends.length < 29; t += day) ends.push(t);
    ends.push(end);
    const docs = await Promise.all(ends.map((t) => api('/v1/experiments/' + encodeURIComponent(doc.experiment),
      { from: doc.from, to: new Date(t).toISOString(), sequential: 'true' })));
    const variants = doc.variants.map((v) => v.variant).filter((v) => v !== doc.control);
    const xs = ends.map((t) => t / 1000);
    const series = [];
    const data = [xs];
    const colors = ['#4ea1ff', '#d29922', '#3fb950', '#f85149'];
    variants.forEach((v, n) => {
      const pick = (d, k) => { const r = d.results.find((x) => x.metric === p.data.metric && x.variant === v); return r ? (k === null ? r.lift : r.ci[k]) : null; };
      data.push(docs.map((d) => pick(d, null)), docs.map((d) => pick(d, 0)), docs.map((d) => pick(d, 1)));
      const c = colors[n % colors.length];
      series.push({ label: v + ' lift', stroke: c, width: 2 }, { label: v + ' 95% low', stroke: c, dash: [4, 4], width: 1 },
        { label: v + ' 95% high', stroke: c, dash: [4, 4], width: 1 });
    });
    drawChart(i, { ...p, unit: 'percent' }, data, series,
      { insights: [], completeUntil: null, thresholds: [{ value: 0, color: 'blue' }] });
    done(i, 'ok', xs.length, 'lift against ' + esc(doc.control) + ' with its sequential 95% interval, day by day');
  }

  function parseProm(text) {
    const totals = {};
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = /^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+([-+\w.]+)/.exec(line);
      if (!m || m[1].endsWith('_created')) continue;
      for (const [signal, re] of Object.entries(PROM)) {
        if (re.test(m[1])) totals[signal] = (totals[signal] || 0) + Number(m[2]);
      }
    }
    return totals;
  }
  async function promSample() {
    if (!inflight.has('/metrics')) {
      inflight.set('/metrics', fetch('/metrics', { cache: 'no-store' }).then((r) => (r.ok ? r.text() : ''))
        .then((text) => {
          promHistory.push({ t: Date.now() / 1000, totals: parseProm(text) });
          if (promHistory.length > 240) promHistory.shift();
        }));
    }
    await inflight.get('/metrics');
  }
  async function healthPanel(i, p, w) {
    const signal = p.data.signal;
    const node = el(i).querySelector('.body');
    if (signal === 'freshness') {
      const doc = await metric({ metric: 'events', where: {} }, w);
      if (!doc.complete_until) {
        node.innerHTML = '<p class="muted">No data has reached the warehouse yet.</p>';
        done(i, 'empty', 0);
        return;
      }
      const age = Date.now() / 1000 - (epoch(doc.complete_until) + SPEC.allowed_lateness_s);
      node.innerHTML = `<span class="value" style="color:${colorFor(p, age)}">${esc(fmt(age, 'seconds'))}</span>`;
      done(i, 'ok', 1, 'behind real time (event-time watermark)');
      return;
    }
    await promSample();
    const last = promHistory[promHistory.length - 1];
    if (!(signal in last.totals)) {
      node.innerHTML = '<p class="muted">Not reported by this process (see /metrics).</p>';
      done(i, 'empty', 0);
      return;
    }
    if (p.viz === 'stat' || promHistory.length < 2) {
      node.innerHTML = `<span class="value">${esc(fmt(last.totals[signal], 'count'))}</span>`;
      done(i, 'ok', 1, p.viz === 'stat' ? '' : 'total since start; a rate follows after the next refresh');
      return;
    }
    const xs = [], ys = [];
    for (let k = 1; k < promHistory.length; k++) {
      const a = promHistory[k - 1], b = promHistory[k];
      xs.push(b.t);
      ys.push(Math.max(0, ((b.totals[signal] || 0) - (a.totals[signal] || 0)) / Math.max(b.t - a.t, 1) * 60));
    }
    drawChart(i, { ...p, unit: 'count' }, [xs, ys], [{ label: 'per minute', stroke: COLORS[0], width: 2 }],
      { insights: [], completeUntil: null, thresholds: [] });
    done(i, 'ok', ys.length, `per minute, since this page opened · total ${fmt(last.totals[signal], 'count')}`);
  }

  // The definition and the bucket of a panel's number: "session conversion: sessions
  // with a purchase / sessions · per 5-min bucket".
  const BUCKET_WORDS = { '1m': '1-min', '5m': '5-min', '1h': 'hourly', '1d': 'daily' };
  function subtitle(p, w) {
    const d = p.data;
    if (d.kind === 'funnel') return 'sessions that start in the range reaching each step; % from the previous step';
    if (d.kind !== 'metric') return '';
    const what = DEFINITIONS[d.metric] || d.metric;
    const bucket = BUCKET_WORDS[w.interval] || w.interval;
    if (d.total || (p.viz === 'stat' && d.reduce === 'sum')) return `${what} · total over the range`;
    if (p.viz === 'stat') return `${what} · last complete ${bucket} bucket`;
    return `${what} · per ${bucket} bucket${d.per_second ? ', per second' : ''}`;
  }

  async function renderPanel(i, p, w, gen) {
    const sub = el(i).querySelector('.sub');
    if (sub) sub.textContent = subtitle(p, w);
    try {
      el(i).dataset.state = 'loading';
      const kind = p.data.kind;
      if (kind === 'metric') {
        if (p.viz === 'stat') await statPanel(i, p, w);
        else if (p.viz === 'bars') await barsPanel(i, p, w);
        else await timeseriesPanel(i, p, w);
      } else if (kind === 'funnel') await funnelPanel(i, p, w);
      else if (kind === 'products') await productsPanel(i, p, w);
      else if (kind === 'insights') await insightsPanel(i, p);
      else if (kind === 'experiment') await experimentPanel(i, p);
      else await healthPanel(i, p, w);
    } catch (e) {
      if (gen === generation) fail(i, e);
    }
  }

  async function refresh() {
    const gen = ++generation;
    inflight = new Map();
    stats.refreshes++;
    if (!getKey()) { askKey('Enter an API key to see the data.'); return; }
    const w = currentWindow();
    if (scope === null) {
      try { scope = (await api('/v1/dashboards')).scope ?? null; } catch (e) { /* panels say why */ }
    }
    const annotated = board.panels.some((p) => p.annotate);
    insights = annotated ? await loadInsights(w) : null;
    if (insights && insights.error && insights.error.status === 401) {
      askKey('The key was not accepted: enter a read key.');
      return;
    }
    if (gen !== generation) return; // a later refresh (another board, range or zone) runs
    await Promise.all(board.panels.map((p, i) => renderPanel(`${built}-${i}`, p, w, gen)));
    if (gen === generation) setStatus('');
  }

  async function act(button) {
    const { id, act: what } = button.dataset;
    button.disabled = true;
    try {
      await api(`/v1/insights/${encodeURIComponent(id)}/${what}`, null, 'POST');
      setStatus('');
      refresh();
    } catch (e) {
      button.disabled = false;
      setStatus(e.status === 403 ? 'Your key cannot change insights: it needs the admin scope.'
        : e.status === 404 ? 'That insight (or the insights API) is not there any more.' : 'Could not ' + what + ': ' + e.message);
    }
  }

  function selectBoard() {
    const uid = location.hash.slice(1).split('?')[0];
    board = SPEC.dashboards.find((b) => b.uid === uid) || SPEC.dashboards[0];
    if (!localStorage.getItem('pulse.range')) $('range').value = board.default_range;
    buildGrid();
    const index = new URLSearchParams(location.hash.split('?')[1] || '').get('panel');
    const wanted = index === null ? null : `${built}-${index}`;
    if (wanted !== null && el(wanted)) {
      el(wanted).classList.add('focus');
      setTimeout(() => el(wanted) && el(wanted).scrollIntoView({ block: 'start' }), 0);
    }
    clearInterval(timer);
    timer = setInterval(() => { if ($('auto').checked && !document.hidden) refresh(); }, board.refresh_s * 1000);
    refresh();
  }

  function init() {
    $('tabs').innerHTML = SPEC.dashboards.map((b) => `<a href="#${b.uid}" data-uid="${b.uid}">${esc(b.title)}</a>`).join('');
    $('tz').innerHTML = SPEC.timezones.map((z) => `<option>${esc(z)}</option>`).join('');
    $('tz').value = localStorage.getItem('pulse.tz') || SPEC.timezone;
    if (localStorage.getItem('pulse.range')) $('range').value = localStorage.getItem('pulse.range');
    $('range').addEventListener('change', () => { localStorage.setItem('pulse.range', $('range').value); refresh(); });
    $('tz').addEventListener('change', () => {
      localStorage.setItem('pulse.tz', $('tz').value);
      for (const c of charts.values()) c.destroy();
      charts.clear();
      refresh();
    });
    $('refresh').addEventListener('click', refresh);
    $('key-button').addEventListener('click', () => { askedKey = false; askKey(''); });
    $('key-dialog').addEventListener('close', () => {
      askedKey = false;
      const value = $('key-input').value.trim();
      if ($('key-dialog').returnValue === 'save' && value) {
        sessionStorage.setItem(KEY, value);
        scope = null;
        $('key-input').value = '';
        refresh();
      }
    });
    $('grid').addEventListener('click', (ev) => {
      const button = ev.target.closest('button[data-act]');
      if (button) act(button);
    });
    document.addEventListener('visibilitychange', () => { if (!document.hidden && $('auto').checked) refresh(); });
    window.addEventListener('hashchange', selectBoard);
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        for (const [i, c] of charts) {
          const body = el(i).querySelector('.body');
          c.setSize({ width: Math.max(body.clientWidth, 200), height: c.height });
        }
      }, 150);
    });
    selectBoard();
  }
  init();
})();

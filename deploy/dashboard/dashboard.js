// Draws panels.json's queries from Prometheus' HTTP API: time series with uPlot, stats
// as their latest value. Each panel records how many points it drew (data-points) and
// keeps its chart (element.plot); the page sets body[data-ready] when every panel has
// answered, and counts its drawings in body[data-draws] (headless tests read them).
"use strict";

const params = new URLSearchParams(location.search);
const PROMETHEUS = params.get("prometheus") || `${location.protocol}//${location.hostname}:9090`;
// Where a trace id opens (Jaeger's UI by default; ?traces=URL for another, e.g. Grafana's
// Explore or Tempo): an exemplar's trace_id links to ${TRACES}/trace/<id>.
const TRACES = params.get("traces") || `${location.protocol}//${location.hostname}:16686`;
// Exemplars listed under a latency panel: its slowest recent observations.
const MAX_EXEMPLARS = 3;
const RANGES = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400, "7d": 604800 };
const REFRESHES = { off: 0, "10s": 10, "30s": 30, "1m": 60 };
// A fresh stack has minutes of data: an hour drew it as a sliver at the right edge.
let rangeSeconds = seconds(params.get("range"), RANGES, 900);
let refreshSeconds = seconds(params.get("refresh"), REFRESHES, 30);
// Legends list the series with the most to show; pre-created series at zero stay out.
const MAX_SERIES = 8;
// Tableau 10: ten colours told apart at a glance (no repeats within MAX_SERIES).
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                 "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

function seconds(text, named, fallback) {
  if (text === null) return fallback;
  if (text in named) return named[text];
  const number = Number(text);
  return Number.isFinite(number) && number >= 0 ? number : fallback;
}

// Grafana's variables, as the dashboard with everything selected sends them.
function substitute(expr, step) {
  return expr.replace(/=~"\$\w+"/g, '=~".*"').replaceAll("$__rate_interval", `${Math.max(4 * step, 60)}s`);
}

function compact(value, decimals) {
  const size = Math.abs(value);
  if (decimals === 0 && size < 1e4) return Math.round(value).toString();
  if (size >= 1e6) return `${(value / 1e6).toPrecision(3)}M`;
  if (size >= 1e4) return `${(value / 1e3).toPrecision(3)}k`;
  if (size === 0 || size >= 100) return value.toFixed(0);
  return Number(value.toPrecision(3)).toString();
}

function format(value, unit, decimals) {
  if (!Number.isFinite(value)) return "–";
  if (unit === "percentunit") {
    const percent = value * 100;
    const digits = percent === 0 || percent === 100 ? 0 : Math.abs(percent) < 1 || percent > 99 ? 2 : 1;
    return `${percent.toFixed(digits)} %`;
  }
  if (unit === "s") {
    if (value === 0) return "0 s";
    return value < 1 ? `${Number((value * 1000).toPrecision(3))} ms` : `${Number(value.toPrecision(3))} s`;
  }
  if (unit === "reqps" || unit === "ops") return `${compact(value, decimals)}/s`;
  if (unit === "currencyUSD") return `$${value < 1 ? value.toFixed(4) : value.toFixed(2)}`;
  if (unit && unit.startsWith("suffix:")) {
    const suffix = unit.slice("suffix:".length).trim();
    return `${compact(value, decimals)}${suffix.startsWith("/") ? "" : " "}${suffix}`;
  }
  return compact(value, decimals);
}

async function queryRange(expr, start, end, step) {
  const url = new URL("/api/v1/query_range", PROMETHEUS);
  url.search = new URLSearchParams({ query: substitute(expr, step), start, end, step });
  const answer = await fetch(url);
  const body = await answer.json();
  if (body.status !== "success") throw new Error(body.error || answer.statusText);
  return body.data.result;
}

async function queryExemplars(expr, start, end, step) {
  const url = new URL("/api/v1/query_exemplars", PROMETHEUS);
  url.search = new URLSearchParams({ query: substitute(expr, step), start, end });
  const body = await (await fetch(url)).json();
  if (body.status !== "success") throw new Error(body.error);
  return body.data.flatMap(series => series.exemplars);
}

// The slowest exemplars of a panel's raw histograms: each names its trace (a link to the
// trace viewer) or, with tracing off, its request id (the logs' request_id).
async function drawExemplars(spec, element, start, end, step) {
  const raw = spec.queries.filter(q => q.expr.includes("_bucket{"));
  element.dataset.exemplars = "0";
  if (!raw.length) return;
  const found = (await Promise.all(raw.map(q => queryExemplars(q.expr, start, end, step)))).flat();
  found.sort((a, b) => Number(b.value) - Number(a.value));
  const list = document.createElement("div");
  list.className = "exemplars";
  for (const exemplar of found.slice(0, MAX_EXEMPLARS)) {
    const line = document.createElement("div");
    const value = format(Number(exemplar.value), spec.unit, spec.decimals);
    const { trace_id: trace, request_id: request } = exemplar.labels;
    if (trace) {
      const link = document.createElement("a");
      link.href = `${TRACES.replace(/\/$/, "")}/trace/${encodeURIComponent(trace)}`;
      link.target = "_blank";
      link.textContent = `trace ${trace}`;
      line.append(`${value}: `, link);
    } else {
      line.textContent = `${value}: request ${request || "?"}`;
    }
    list.append(line);
  }
  element.dataset.exemplars = String(list.childElementCount);
  if (list.childElementCount) element.querySelector(".body").append(list);
}

function legendOf(template, labels) {
  return (template || "{{__name__}}").replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => labels[name] ?? "");
}

// Only finite points: histogram_quantile answers NaN for a series with no traffic, and a
// NaN handed to the chart broke its scale, leaving an empty frame.
function finitePoints(values) {
  return values.map(([t, v]) => [t, Number(v)]).filter(([, v]) => Number.isFinite(v));
}

// The series worth a line: those that ever leave zero, the largest first, at most
// MAX_SERIES. If none does, zero is the truth: one line at zero says so for them all.
function shown(series) {
  const peak = s => Math.max(...s.points.map(([, v]) => Math.abs(v)));
  const moving = series.filter(s => peak(s) > 0).sort((a, b) => peak(b) - peak(a));
  if (!moving.length) {
    const label = series.length > 1 ? `all ${series.length} series` : series[0].label;
    return { drawn: [{ ...series[0], label }], hidden: 0 };
  }
  return { drawn: moving.slice(0, MAX_SERIES), hidden: moving.length - MAX_SERIES };
}

async function drawPanel(spec, element) {
  const end = Math.floor(Date.now() / 1000);
  const start = end - rangeSeconds;
  const step = Math.max(Math.floor(rangeSeconds / 240), 5);
  const series = [];
  for (const query of spec.queries) {
    for (const result of await queryRange(query.expr, start, end, step)) {
      const points = finitePoints(result.values);
      if (points.length) series.push({ label: legendOf(query.legend, result.metric), points });
    }
  }
  const points = series.reduce((sum, s) => sum + s.points.length, 0);
  element.dataset.points = String(points);
  if (element.plot) element.plot.destroy();
  element.plot = null;
  const body = element.querySelector(".body");
  body.innerHTML = "";
  if (!points) {
    body.innerHTML = '<div class="empty">no data</div>';
    return;
  }
  if (spec.kind === "stat") {
    const last = series[0].points[series[0].points.length - 1];
    body.innerHTML = `<div class="stat">${format(last[1], spec.unit, spec.decimals)}</div>`;
    return;
  }
  const { drawn, hidden } = shown(series);
  const times = [...new Set(drawn.flatMap(s => s.points.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = drawn.map(s => {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s.points) column[index.get(t)] = v;
    return column;
  });
  element.plot = new uPlot({
    width: body.clientWidth || 500,
    height: 200,
    // The time range asked for, not the data's: a young series sits at the right edge.
    scales: { x: { time: true, range: [start, end] } },
    series: [{}, ...drawn.map((s, i) => ({
      label: s.label, stroke: PALETTE[i % PALETTE.length],
      value: (u, v) => format(v, spec.unit, spec.decimals),
    }))],
    axes: [{}, { values: (u, ticks) => ticks.map(v => format(v, spec.unit, spec.decimals)), size: 90 }],
    hooks: {
      // The thresholds, dashed, as the Grafana panels draw them.
      draw: [u => {
        const ctx = u.ctx;
        for (const threshold of spec.thresholds) {
          const y = u.valToPos(threshold, "y", true);
          if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
          ctx.save(); ctx.setLineDash([6, 4]); ctx.strokeStyle = "#d44a3a";
          ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y);
          ctx.stroke(); ctx.restore();
        }
      }],
    },
  }, [times, ...columns], body);
  if (hidden > 0) body.insertAdjacentHTML("beforeend", `<div class="more">+${hidden} smaller series not shown</div>`);
  await drawExemplars(spec, element, start, end, step).catch(() => {});
}

// Alerts pending and firing, from Prometheus: Debian's Alertmanager has no web UI, and
// this is where someone watching the dashboard looks.
async function drawAlerts(element) {
  const answer = await fetch(new URL("/api/v1/alerts", PROMETHEUS));
  const alerts = (await answer.json()).data.alerts
    .sort((a, b) => (a.state === b.state ? 0 : a.state === "firing" ? -1 : 1));
  element.replaceChildren();
  if (!alerts.length) {
    element.textContent = "No alert pending or firing.";
    return;
  }
  for (const alert of alerts) {
    const line = document.createElement("div");
    line.className = `alert ${alert.state} ${alert.labels.severity || ""}`;
    const windows = alert.labels.long ? ` (${alert.labels.long}/${alert.labels.short})` : "";
    const since = new Date(alert.activeAt).toLocaleTimeString();
    line.textContent = `${alert.state} since ${since}: ${alert.labels.alertname}${windows}, ` +
      `${alert.labels.severity || "no severity"}: ${alert.annotations.summary || ""}`;
    element.append(line);
  }
}

function controls(redraw) {
  const bar = document.getElementById("controls");
  const choice = (name, options, current, set) => {
    const select = document.createElement("select");
    select.name = name;
    for (const [label, value] of Object.entries(options)) {
      select.add(new Option(label, String(value), false, value === current));
    }
    if (!Object.values(options).includes(current)) {
      select.add(new Option(`${current} s`, String(current), true, true));
    }
    select.addEventListener("change", () => {
      set(Number(select.value));
      const url = new URL(location.href);
      url.searchParams.set(name, select.value);
      history.replaceState(null, "", url);
      redraw();
    });
    const label = document.createElement("label");
    label.append(`${name} `, select);
    bar.append(label);
  };
  choice("range", RANGES, rangeSeconds, value => { rangeSeconds = value; });
  choice("refresh", REFRESHES, refreshSeconds, value => { refreshSeconds = value; });
}

async function main() {
  const spec = await (await fetch("panels.json")).json();
  const rows = document.getElementById("rows");
  const panels = [];
  for (const row of spec.rows) {
    rows.insertAdjacentHTML("beforeend", `<h2>${row.title}</h2>`);
    const container = document.createElement("div");
    container.className = "row";
    rows.appendChild(container);
    for (const panel of row.panels) {
      const element = document.createElement("div");
      element.className = `panel ${panel.kind}`;
      element.title = panel.description;
      element.innerHTML = `<h3></h3><div class="body"></div>`;
      element.querySelector("h3").textContent = panel.title;
      container.appendChild(element);
      panels.push([panel, element]);
    }
  }
  let timer = null;
  let draws = 0;
  const drawAll = async () => {
    clearTimeout(timer);
    const alerts = document.getElementById("alerts");
    await Promise.all([
      drawAlerts(alerts).catch(error => { alerts.textContent = `alerts: ${error}`; }),
      ...panels.map(([panel, element]) => drawPanel(panel, element).catch(error => {
        element.dataset.points = "0";
        element.querySelector(".body").innerHTML = `<div class="empty">${error}</div>`;
      })),
    ]);
    const empty = document.querySelectorAll('.panel[data-points="0"]').length;
    const range = Object.keys(RANGES).find(k => RANGES[k] === rangeSeconds) || `${rangeSeconds} s`;
    document.getElementById("status").textContent =
      `${panels.length} panels from ${PROMETHEUS}, last ${range}; ${empty} without data; ` +
      `drawn ${new Date().toLocaleTimeString()}` + (refreshSeconds ? `, every ${refreshSeconds} s` : "");
    document.body.dataset.draws = String(++draws);
    document.body.dataset.ready = "true";
    if (refreshSeconds) timer = setTimeout(drawAll, refreshSeconds * 1000);
  };
  controls(drawAll);
  await drawAll();
}

main();

// Draws panels.json's queries from Prometheus' HTTP API: time series with uPlot, stats
// as their latest value. Each panel records how many points it drew (data-points), and
// the page sets body[data-ready] when every panel has answered (headless tests read it).
"use strict";

const params = new URLSearchParams(location.search);
const PROMETHEUS = params.get("prometheus") || `${location.protocol}//${location.hostname}:9090`;
const RANGE_SECONDS = Number(params.get("range") || 3600);

// Grafana's variables, as the dashboard with everything selected sends them.
function substitute(expr, step) {
  return expr.replace(/=~"\$\w+"/g, '=~".*"').replaceAll("$__rate_interval", `${Math.max(4 * step, 60)}s`);
}

function format(value, unit) {
  if (!Number.isFinite(value)) return "–";
  if (unit === "percentunit") return `${(value * 100).toFixed(2)} %`;
  if (unit === "s") return value < 1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(2)} s`;
  if (unit === "reqps") return `${value.toFixed(2)}/s`;
  return value.toPrecision(3);
}

async function queryRange(expr, start, end, step) {
  const url = new URL("/api/v1/query_range", PROMETHEUS);
  url.search = new URLSearchParams({ query: substitute(expr, step), start, end, step });
  const answer = await fetch(url);
  const body = await answer.json();
  if (body.status !== "success") throw new Error(body.error || answer.statusText);
  return body.data.result;
}

function legendOf(template, labels) {
  return (template || "{{__name__}}").replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => labels[name] ?? "");
}

async function drawPanel(spec, element) {
  const end = Math.floor(Date.now() / 1000);
  const start = end - RANGE_SECONDS;
  const step = Math.max(Math.floor(RANGE_SECONDS / 240), 5);
  const series = [];
  for (const query of spec.queries) {
    for (const result of await queryRange(query.expr, start, end, step)) {
      series.push({ label: legendOf(query.legend, result.metric), values: result.values });
    }
  }
  const points = series.reduce((sum, s) => sum + s.values.length, 0);
  element.dataset.points = String(points);
  const body = element.querySelector(".body");
  if (!points) {
    body.innerHTML = '<div class="empty">no data</div>';
    return;
  }
  if (spec.kind === "stat") {
    const last = series[0].values[series[0].values.length - 1];
    body.innerHTML = `<div class="stat">${format(Number(last[1]), spec.unit)}</div>`;
    return;
  }
  const times = [...new Set(series.flatMap(s => s.values.map(v => v[0])))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = series.map(s => {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s.values) column[index.get(t)] = Number(v);
    return column;
  });
  const palette = ["#3274d9", "#e0752d", "#56a64b", "#a352cc", "#d44a3a", "#37872d", "#8f3bb8", "#b877d9"];
  new uPlot({
    width: body.clientWidth || 500,
    height: 200,
    // The time range asked for, not the data's: a young series sits at the right edge.
    scales: { x: { time: true, range: [start, end] } },
    series: [{}, ...series.map((s, i) => ({
      label: s.label, stroke: palette[i % palette.length], value: (u, v) => format(v, spec.unit),
    }))],
    axes: [{}, { values: (u, ticks) => ticks.map(v => format(v, spec.unit)), size: 70 }],
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
}

async function main() {
  const spec = await (await fetch("panels.json")).json();
  const rows = document.getElementById("rows");
  const pending = [];
  for (const row of spec.rows) {
    rows.insertAdjacentHTML("beforeend", `<h2>${row.title}</h2>`);
    const container = document.createElement("div");
    container.className = "row";
    rows.appendChild(container);
    for (const panel of row.panels) {
      const element = document.createElement("div");
      element.className = `panel w${panel.kind === "stat" ? 6 : 12}`;
      element.title = panel.description;
      element.innerHTML = `<h3></h3><div class="body"></div>`;
      element.querySelector("h3").textContent = panel.title;
      container.appendChild(element);
      pending.push(drawPanel(panel, element).catch(error => {
        element.dataset.points = "0";
        element.querySelector(".body").innerHTML = `<div class="empty">${error}</div>`;
      }));
    }
  }
  await Promise.all(pending);
  const empty = document.querySelectorAll('.panel[data-points="0"]').length;
  document.getElementById("status").textContent =
    `${pending.length} panels from ${PROMETHEUS}, last ${RANGE_SECONDS / 60} minutes; ${empty} without data`;
  document.body.dataset.ready = "true";
}

main();

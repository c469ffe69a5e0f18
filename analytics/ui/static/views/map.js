// Live service map (cytoscape): edge colour = error rate, width = request rate, label = p99.
import { api } from "../api.js";
import { lineChart } from "../chart.js";
import { badge, clear, fmtMs, fmtPct, fmtRate, h } from "../dom.js";
import { policyAnnotations } from "./policies.js";
import { traceTable } from "./traces.js";

const REFRESH_MS = 15000;
let timer = null;

export function errorColour(ratio) {
  if (ratio >= 0.05) return "#dc2626";
  if (ratio >= 0.01) return "#f59e0b";
  return "#16a34a";
}

function inbound(graph, service) {
  // A service without server spans of its own (an external or unsampled callee) is described
  // by what its callers saw.
  const calls = graph.edges.filter((e) => e.callee === service).map((e) => e.stats);
  if (!calls.length) return null;
  const requests = calls.reduce((a, c) => a + c.requests, 0);
  const errors = calls.reduce((a, c) => a + c.errors, 0);
  return { rate_per_s: calls.reduce((a, c) => a + c.rate_per_s, 0), error_ratio: requests ? errors / requests : 0 };
}

function elements(graph) {
  const maxRate = Math.max(...graph.edges.map((e) => e.stats.rate_per_s), 0.001);
  const nodes = graph.nodes.map((n) => {
    const stats = n.server || inbound(graph, n.service);
    return {
      data: {
        id: n.service,
        label: stats ? `${n.service}\n${fmtRate(stats.rate_per_s)} · ${fmtPct(stats.error_ratio)} err` : n.service,
        colour: stats ? errorColour(stats.error_ratio) : "#94a3b8",
      },
      classes: n.virtual ? "virtual" : "",
    };
  });
  const edges = graph.edges.map((e) => ({
    data: {
      id: `${e.caller}→${e.callee}`,
      source: e.caller,
      target: e.callee,
      colour: errorColour(e.stats.error_ratio),
      width: 1.5 + 7 * Math.sqrt(e.stats.rate_per_s / maxRate),
      label: `p99 ${fmtMs(e.stats.p99_ms)} · ${fmtRate(e.stats.rate_per_s)}`,
    },
  }));
  return [...nodes, ...edges];
}

const STYLE = [
  { selector: "node", style: {
    "background-color": "#fff", "border-width": 3, "border-color": "data(colour)",
    label: "data(label)", "text-wrap": "wrap", "text-valign": "bottom", "text-margin-y": 6,
    "font-size": 12, "font-family": "DejaVu Sans, sans-serif", color: "#0f172a", width: 34, height: 34,
    "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 2,
  } },
  { selector: "node.virtual", style: { "border-style": "dashed", shape: "round-rectangle" } },
  { selector: "edge", style: {
    "curve-style": "bezier", "target-arrow-shape": "triangle", "line-color": "data(colour)",
    "target-arrow-color": "data(colour)", width: "data(width)", label: "data(label)",
    "font-size": 10, "text-background-color": "#fff", "text-background-opacity": 0.9,
    "text-background-padding": 2, color: "#334155", "text-rotation": "autorotate",
  } },
  { selector: ":selected", style: { "overlay-color": "#3b82f6", "overlay-opacity": 0.15, "overlay-padding": 6 } },
];

function roots(graph) {
  const called = new Set(graph.edges.map((e) => e.callee));
  const r = graph.nodes.filter((n) => !called.has(n.service)).map((n) => n.service);
  return r.length ? r : graph.nodes.slice(0, 1).map((n) => n.service);
}

function legend() {
  return h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#16a34a" }), "< 1 % errors"),
    h("span", {}, h("i", { style: "background:#f59e0b" }), "1–5 %"),
    h("span", {}, h("i", { style: "background:#dc2626" }), "≥ 5 %"),
    h("span", { class: "muted" }, "width = request rate, label = p99"));
}

function minuteSeries(points) {
  const by = new Map();
  for (const p of points) {
    const t = Date.parse(p.minute);
    const cur = by.get(t) || { t, requests: 0, errors: 0, p99: null };
    cur.requests += p.stats.requests;
    cur.errors += p.stats.errors;
    if (p.stats.p99_ms !== null) cur.p99 = Math.max(cur.p99 ?? 0, p.stats.p99_ms);
    by.set(t, cur);
  }
  return [...by.values()].sort((a, b) => a.t - b.t);
}

async function redCharts(edges, policyServices, session) {
  const { start, end } = session.range();
  const q = { from: start.toISOString(), to: end.toISOString() };
  const series = await Promise.all(edges.map((e) =>
    api("/api/v1/edges/series", { query: { ...q, caller: e.caller, callee: e.callee } })));
  const minutes = minuteSeries(series.flatMap((s) => s.points));
  const annotations = (await Promise.all(policyServices.map(policyAnnotations))).flat();
  const common = { start: start.getTime(), end: end.getTime(), annotations };
  return h("div", { class: "charts" },
    lineChart({ ...common, title: "Requests / s", format: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(2)),
      points: minutes.map((m) => ({ t: m.t, v: m.requests / 60 })) }),
    lineChart({ ...common, title: "Errors %", color: "#dc2626", format: (v) => `${v.toFixed(1)}%`,
      points: minutes.map((m) => ({ t: m.t, v: m.requests ? (100 * m.errors) / m.requests : null })) }),
    lineChart({ ...common, title: "p99 latency", color: "#7c3aed", format: (v) => fmtMs(v),
      points: minutes.map((m) => ({ t: m.t, v: m.p99 })) }));
}

async function traces(query, session) {
  const { start, end } = session.range();
  const found = await api("/api/v1/traces", {
    query: { ...query, start: start.toISOString(), end: end.toISOString(), limit: 10 },
  });
  return traceTable(found.traces);
}

function statsTable(stats) {
  return h("div", { class: "stats" },
    [["rate", fmtRate(stats.rate_per_s)], ["errors", fmtPct(stats.error_ratio)],
      ["p50", fmtMs(stats.p50_ms)], ["p99", fmtMs(stats.p99_ms)], ["requests", String(stats.requests)]]
      .map(([k, v]) => h("div", { class: "stat" }, h("span", { class: "muted" }, k), h("strong", {}, v))));
}

async function showEdge(panel, edge, session) {
  clear(panel, h("h2", {}, `${edge.caller} → ${edge.callee}`), statsTable(edge.stats), h("p", { class: "muted" }, "Loading…"));
  const [charts, table] = await Promise.all([
    redCharts([edge], [edge.caller], session),
    traces({ service: edge.caller, span_kind: "client", attr: `meshlens.upstream=${edge.callee}` }, session),
  ]);
  clear(panel, h("h2", {}, `${edge.caller} → ${edge.callee}`), statsTable(edge.stats),
    charts, h("h3", {}, "Recent traces"), table);
}

async function showNode(panel, graph, service, session) {
  const node = graph.nodes.find((n) => n.service === service);
  const incoming = graph.edges.filter((e) => e.callee === service);
  const edges = incoming.length ? incoming : graph.edges.filter((e) => e.caller === service);
  const head = [h("h2", {}, service, node.virtual ? badge("no spans of its own", "muted") : null),
    node.server ? statsTable(node.server) : h("p", { class: "muted" }, "No server-side statistics.")];
  clear(panel, ...head, h("p", { class: "muted" }, "Loading…"));
  const [charts, table] = await Promise.all([
    redCharts(edges, [service, ...incoming.map((e) => e.caller)], session),
    traces({ service }, session),
  ]);
  clear(panel, ...head, h("p", { class: "muted" }, incoming.length ? "Calls into this service" : "Calls from this service"),
    charts, h("h3", {}, "Recent traces"), table);
}

export async function renderMap(el, _args, session) {
  if (timer) clearInterval(timer);
  const { start, end } = session.range();
  const graph = await api("/api/v1/services/map", { query: { from: start.toISOString(), to: end.toISOString() } });
  const canvas = h("div", { id: "map", class: "map", "data-testid": "service-map" });
  const panel = h("aside", { class: "panel", id: "detail" },
    h("p", { class: "muted" }, "Click a service or an edge for its RED charts and traces."));
  const summary = h("p", { class: "muted" },
    `${graph.nodes.length} services, ${graph.edges.length} edges, from ${graph.source}`);
  clear(el, h("div", { class: "map-layout" },
    h("section", { class: "card map-card" }, h("div", { class: "row" }, h("h1", {}, "Service map"), summary), legend(), canvas),
    panel));
  if (graph.nodes.length === 0) {
    clear(canvas, h("p", { class: "empty" }, "No traffic in this window."));
    return;
  }
  // The canvas needs its final size before layout, so build the graph once the view is attached.
  requestAnimationFrame(() => {
    const cy = window.cytoscape({
      container: canvas, elements: elements(graph), style: STYLE, wheelSensitivity: 0.3, maxZoom: 1.25, minZoom: 0.2,
      layout: { name: "breadthfirst", directed: true, roots: roots(graph), spacingFactor: 1.5, padding: 40 },
    });
    window.meshlensMap = cy;
    const fail = (err) => clear(panel, h("div", { class: "error-box" }, err.message));
    cy.on("tap", "node", (ev) => showNode(panel, graph, ev.target.id(), session).catch(fail));
    cy.on("tap", "edge", (ev) => {
      const e = graph.edges.find((x) => `${x.caller}→${x.callee}` === ev.target.id());
      showEdge(panel, e, session).catch(fail);
    });
  });
  timer = setInterval(async () => {
    if (!document.body.contains(canvas) || !window.meshlensMap) return clearInterval(timer);
    try {
      const r = session.range();
      const fresh = await api("/api/v1/services/map", { query: { from: r.start.toISOString(), to: r.end.toISOString() } });
      const cy = window.meshlensMap;
      const known = new Set(cy.elements().map((x) => x.id()));
      const els = elements(fresh);
      if (els.some((x) => !known.has(x.data.id)) || els.length !== known.size) return;
      for (const x of els) cy.getElementById(x.data.id).data(x.data);
      graph.edges = fresh.edges;
      graph.nodes = fresh.nodes;
    } catch {
      // a failed refresh keeps the last map; the next tick retries
    }
  }, REFRESH_MS);
}

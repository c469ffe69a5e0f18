// A small SVG line chart: one series, time on x, annotations as labelled vertical lines.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 360, H = 150, PAD = { l: 46, r: 10, t: 22, b: 22 };

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function hhmm(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

/** points: [{t: ms, v: number|null}], annotations: [{t: ms, label}] */
export function lineChart({ title, points, format, color = "#3b82f6", annotations = [], start, end }) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  svg.append(s("text", { x: PAD.l, y: 14, class: "chart-title" }, title));
  const t0 = start ?? Math.min(...points.map((p) => p.t));
  const t1 = Math.max(end ?? Math.max(...points.map((p) => p.t)), t0 + 60000);
  const values = points.map((p) => p.v).filter((v) => v !== null && Number.isFinite(v));
  const vmax = Math.max(...values, 0) * 1.15 || 1;
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / vmax) * (H - PAD.t - PAD.b);
  for (const frac of [0, 0.5, 1]) {
    const v = vmax * frac;
    svg.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: PAD.l - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" }, format(v)));
  }
  svg.append(s("text", { x: PAD.l, y: H - 6, class: "axis" }, hhmm(t0)));
  svg.append(s("text", { x: W - PAD.r, y: H - 6, class: "axis", "text-anchor": "end" }, hhmm(t1)));
  if (values.length === 0) {
    svg.append(s("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no data"));
  } else {
    const sorted = [...points].filter((p) => p.v !== null).sort((a, b) => a.t - b.t);
    const d = sorted.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
    svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    for (const p of sorted) svg.append(s("circle", { cx: x(p.t), cy: y(p.v), r: 2, fill: color }));
  }
  let lastX = -Infinity, row = 0;
  for (const a of [...annotations].sort((p, q) => p.t - q.t)) {
    if (a.t < t0 || a.t > t1) continue;
    row = x(a.t) - lastX < 80 ? row + 1 : 0;  // stack labels of changes close in time
    lastX = x(a.t);
    svg.append(s("line", { x1: x(a.t), x2: x(a.t), y1: PAD.t, y2: H - PAD.b, class: "annotation" }));
    const nearEnd = x(a.t) > W - 90;  // keep the label inside the plot
    const label = s("text", {
      x: x(a.t) + (nearEnd ? -3 : 3), y: PAD.t + 9 + 10 * (row % 4), class: "annotation-label",
      "text-anchor": nearEnd ? "end" : "start",
    }, a.label);
    label.append(s("title", {}, a.title || a.label));
    svg.append(label);
  }
  return h("figure", { class: "chart-box" }, svg);
}

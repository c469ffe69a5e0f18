// Tiny DOM helpers: all text becomes text nodes, never parsed as markup.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  return el;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${ms.toFixed(0)} ms`;
  return `${ms.toFixed(1)} ms`;
}

export function fmtPct(ratio) {
  if (ratio === null || ratio === undefined) return "–";
  return `${(ratio * 100).toFixed(ratio < 0.01 && ratio > 0 ? 2 : 1)} %`;
}

export function fmtRate(rps) {
  return rps >= 10 ? `${rps.toFixed(0)}/s` : `${rps.toFixed(2)}/s`;
}

export function fmtTime(value) {
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" }, err.message || String(err));
}

export function kv(entries) {
  const rows = Object.entries(entries).sort(([a], [b]) => a.localeCompare(b));
  return h("table", { class: "kv" },
    h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k),
      h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v))))));
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

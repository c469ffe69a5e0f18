// Incidents: grouped anomalies with ranked root-cause candidates and their evidence.
import { api } from "../api.js";
import { badge, clear, fmtTime, h } from "../dom.js";

function evidence(value) {
  if (value === null || value === undefined) return null;
  if (Array.isArray(value)) return h("ul", { class: "evidence" }, value.map((v) => h("li", {}, typeof v === "object" ? JSON.stringify(v) : String(v))));
  if (typeof value === "object") return h("ul", { class: "evidence" }, Object.entries(value).map(([k, v]) => h("li", {}, h("strong", {}, k), ": ", typeof v === "object" ? JSON.stringify(v) : String(v))));
  return h("p", { class: "evidence" }, String(value));
}

const num = (v, digits = 2) => (typeof v === "number" ? v.toFixed(digits) : "–");

function detail(incident) {
  return h("div", { "data-testid": "incident-detail" },
    h("h2", {}, incident.summary),
    h("p", { class: "muted" }, `${fmtTime(incident.start)} – ${fmtTime(incident.end)} · services: ${incident.services.join(", ")}`),
    h("h3", {}, "Ranked root causes"),
    incident.root_causes.length ? h("ol", { class: "causes" }, incident.root_causes.map((c, i) =>
      h("li", { class: i === 0 ? "top" : "" },
        h("div", { class: "row" }, h("strong", {}, c.service), badge(`score ${num(c.score)}`, i === 0 ? "bad" : ""),
          h("span", { class: "muted" }, `self-time z ${num(c.self_time_z)} · edge gap z ${num(c.edge_gap_z)} · error origin z ${num(c.error_origin_z)}`)),
        evidence(c.evidence),
        (c.spans || []).length ? h("p", {}, "Example traces: ", (c.spans || []).slice(0, 3).map((s) =>
          [h("a", { href: `#/traces/${s.trace_id || s}`, class: "mono" }, String(s.trace_id || s)), " "])) : null)))
      : h("p", { class: "empty" }, "No candidates ranked yet."),
    h("h3", {}, "Anomalies"),
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, ["Subject", "Signal", "Start", "Observed", "Expected", "Score"].map((c) => h("th", {}, c)))),
      h("tbody", {}, incident.anomalies.map((a) => h("tr", {}, h("td", {}, String(a.subject)), h("td", {}, a.signal),
        h("td", {}, fmtTime(a.start)), h("td", { class: "num" }, num(a.observed)), h("td", { class: "num" }, num(a.expected)),
        h("td", { class: "num" }, num(a.score)))))));
}

export async function renderIncidents(el, args, session) {
  const { start, end } = session.range();
  const list = await api("/api/v1/incidents", { query: { from: start.toISOString(), to: end.toISOString() } });
  const panel = h("aside", { class: "panel" }, h("p", { class: "muted" }, "Select an incident."));
  const show = async (id) => clear(panel, detail(await api(`/api/v1/incidents/${id}`)));
  clear(el, h("div", { class: "split" },
    h("section", { class: "card" }, h("h1", {}, "Incidents"),
      list.incidents.length ? h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["Start", "Summary", "Services", "Top cause"].map((c) => h("th", {}, c)))),
        h("tbody", {}, list.incidents.map((i) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/incidents/${i.id}`; } },
          h("td", {}, fmtTime(i.start)), h("td", {}, i.summary), h("td", {}, i.services.join(", ")),
          h("td", {}, i.root_causes[0] ? badge(i.root_causes[0].service, "bad") : "–")))))
        : h("p", { class: "empty" }, "No incidents in this window.")),
    panel));
  const chosen = args[0] || list.incidents[0]?.id;
  if (chosen) await show(chosen);
}

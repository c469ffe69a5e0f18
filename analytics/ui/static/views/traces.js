// Trace search and the span waterfall (attributes, events and the sidecar's policy decisions).
import { api } from "../api.js";
import { badge, clear, fmtMs, h, kv } from "../dom.js";

// meshlens.* attributes that describe the call rather than a decision a policy layer took.
const CONTEXT = new Set(["meshlens.upstream", "meshlens.route", "meshlens.peer_identity", "meshlens.workload"]);

/** The sidecar's policy decisions on a span: retries, breaker, outlier, rate limit, fault, authz. */
export function decisions(span) {
  return Object.fromEntries(Object.entries(span.attributes).filter(([k, v]) =>
    k.startsWith("meshlens.") && !CONTEXT.has(k) && v !== "" && !(k === "meshlens.attempt" && v === "1")));
}

export function traceTable(traces) {
  if (!traces.length) return h("p", { class: "empty" }, "No traces found.");
  return h("table", { class: "grid traces" },
    h("thead", {}, h("tr", {}, ["Trace", "Root", "Started", "Duration", "Spans", "Services"].map((c) => h("th", {}, c)))),
    h("tbody", {}, traces.map((t) => h("tr", { class: t.error_count ? "has-error" : "" },
      h("td", {}, h("a", { href: `#/traces/${t.trace_id}`, class: "mono" }, t.trace_id.slice(0, 16))),
      h("td", {}, `${t.root_service}: ${t.root_name}`, t.error_count ? badge(`${t.error_count} errors`, "bad") : null),
      h("td", {}, new Date(t.start_time_unix_nano / 1e6).toISOString().slice(11, 23)),
      h("td", { class: "num" }, fmtMs(t.duration_ms)),
      h("td", { class: "num" }, String(t.span_count)),
      h("td", {}, t.services.join(", "))))));
}

export async function renderTraces(el, _args, session) {
  const services = (await api("/api/v1/services")).services;
  const form = h("form", { class: "filters", id: "trace-search" },
    h("label", {}, "Service", h("select", { name: "service" }, h("option", { value: "" }, "any"),
      services.map((s) => h("option", { value: s }, s)))),
    h("label", {}, "Status", h("select", { name: "status" },
      ["", "error", "ok", "unset"].map((s) => h("option", { value: s }, s || "any")))),
    h("label", {}, "Min duration", h("input", { name: "min_duration", placeholder: "e.g. 100ms", size: 8 })),
    h("label", {}, "Attribute", h("input", { name: "attr", placeholder: "http.response.status_code=503", size: 28 })),
    h("button", { type: "submit", class: "primary" }, "Search"));
  const results = h("div", { id: "trace-results" });
  const search = async () => {
    const data = Object.fromEntries(new FormData(form));
    const { start, end } = session.range();
    clear(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const found = await api("/api/v1/traces", { query: { ...data, start: start.toISOString(), end: end.toISOString(), limit: 50 } });
      clear(results, traceTable(found.traces));
    } catch (err) {
      clear(results, h("div", { class: "error-box" }, err.message));
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  clear(el, h("section", { class: "card" }, h("h1", {}, "Traces"), form, results));
  await search();
}

function order(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const s of spans) {
    const parent = ids.has(s.parent_span_id) ? s.parent_span_id : "";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const out = [];
  const walk = (parent, depth) => {
    const kids = (children.get(parent) || []).sort((a, b) => a.start_time_unix_nano - b.start_time_unix_nano);
    for (const s of kids) { out.push({ span: s, depth }); if (depth < 64) walk(s.span_id, depth + 1); }
  };
  walk("", 0);
  return out;
}

function spanDetail(span) {
  const policy = decisions(span);
  return h("div", { class: "span-detail", "data-testid": "span-detail" },
    h("h2", {}, `${span.service}: ${span.name}`),
    h("p", { class: "muted" }, `${span.kind} · ${fmtMs(span.duration_ns / 1e6)} · status ${span.status_code}`,
      span.status_message ? ` (${span.status_message})` : ""),
    Object.keys(policy).length ? [h("h4", {}, "Policy decisions"), h("div", { class: "decisions" },
      Object.entries(policy).map(([k, v]) => badge(`${k.replace(/^meshlens\./, "")} = ${v}`, "policy")))] : null,
    h("h4", {}, "Attributes"), kv(span.attributes),
    h("h4", {}, "Resource"), kv(span.resource_attributes),
    span.events.length ? [h("h4", {}, "Events"), h("ul", {}, span.events.map((e) =>
      h("li", {}, `${fmtMs((e.time_unix_nano - span.start_time_unix_nano) / 1e6)} ${e.name} `, JSON.stringify(e.attributes))))] : null);
}

export async function renderTrace(el, traceId) {
  const trace = await api(`/api/v1/traces/${encodeURIComponent(traceId)}`);
  const rows = order(trace.spans);
  const t0 = Math.min(...trace.spans.map((s) => s.start_time_unix_nano));
  const t1 = Math.max(...trace.spans.map((s) => s.start_time_unix_nano + s.duration_ns));
  const total = Math.max(t1 - t0, 1);
  const detail = h("aside", { class: "panel" }, h("p", { class: "muted" }, "Click a span for its attributes."));
  const list = h("div", { class: "waterfall", "data-testid": "waterfall" },
    rows.map(({ span, depth }) => {
      const left = (100 * (span.start_time_unix_nano - t0)) / total;
      const width = Math.max((100 * span.duration_ns) / total, 0.3);
      const hasPolicy = Object.keys(decisions(span)).length > 0;
      const row = h("div", { class: `wf-row${span.status_code === "Error" ? " error" : ""}`, tabindex: 0 },
        h("div", { class: "wf-name", style: `padding-left:${depth * 14 + 6}px` },
          h("span", { class: "svc" }, span.service), ` ${span.name}`, hasPolicy ? badge("policy", "policy") : null),
        h("div", { class: "wf-track" }, h("div", { class: `wf-bar kind-${span.kind.toLowerCase()}`, style: `left:${left}%;width:${width}%` }),
          left + width > 82
            ? h("span", { class: "wf-dur inside", style: `left:${left}%` }, fmtMs(span.duration_ns / 1e6))
            : h("span", { class: "wf-dur", style: `left:${left + width}%` }, fmtMs(span.duration_ns / 1e6))));
      const select = () => {
        for (const r of list.querySelectorAll(".selected")) r.classList.remove("selected");
        row.classList.add("selected");
        clear(detail, spanDetail(span));
      };
      row.addEventListener("click", select);
      row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(); });
      return row;
    }));
  clear(el, h("div", { class: "split" },
    h("section", { class: "card" },
      h("p", {}, h("a", { href: "#/traces" }, "← Traces")),
      h("h1", {}, "Trace ", h("span", { class: "mono" }, trace.trace_id)),
      h("p", { class: "muted" }, `${trace.spans.length} spans · ${fmtMs(total / 1e6)} · ${new Date(t0 / 1e6).toISOString()}`),
      list),
    detail));
  list.querySelector(".wf-row")?.click();
}

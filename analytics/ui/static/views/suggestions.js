// Policy suggestions: evidence, counterfactual replay, Accept / Reject (operators only).
import { api, ApiError } from "../api.js";
import { badge, clear, errorBox, fmtTime, h } from "../dom.js";

const API = "/api/v1/suggestions";

function edgeText(edge) {
  if (!edge) return "";
  if (typeof edge === "string") return edge;
  if (Array.isArray(edge)) return edge.filter(Boolean).join(" → ");
  return [edge.caller, edge.callee].filter(Boolean).join(" → ") + (edge.route ? ` (${edge.route})` : "");
}

function value(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function facts(obj, testid) {
  if (!obj || typeof obj !== "object") return h("p", { class: "muted" }, value(obj));
  return h("table", { class: "kv", "data-testid": testid }, h("tbody", {},
    Object.entries(obj).map(([k, v]) => h("tr", {}, h("th", {}, k.replaceAll("_", " ")), h("td", {}, value(v))))));
}

const stateKind = { proposed: "warn", accepted: "good", rolled_out: "good", verified: "good", rejected: "muted", rolled_back: "bad" };

function actions(s, panel, session, reload) {
  if (!session.operator || s.state !== "proposed") return null;
  const reason = h("input", { name: "reason", placeholder: "reason", value: "accepted from the UI", size: 28 });
  const mode = h("select", { name: "mode" }, h("option", { value: "enforce" }, "enforce"), h("option", { value: "observe" }, "observe only"));
  const out = h("p", { role: "status" });
  const act = (verb, body) => async () => {
    try {
      await api(`${API}/${encodeURIComponent(s.id)}/${verb}`, { method: "POST", body });
      out.textContent = verb === "accept" ? "Accepted; the control plane is pushing the new policy." : "Rejected.";
      await reload(s.id);
    } catch (err) { clear(out, errorBox(err)); }
  };
  return h("div", { class: "actions", "data-testid": "suggestion-actions" },
    mode, reason,
    h("button", { class: "primary", "data-testid": "accept", onclick: () => act("accept", { mode: mode.value, reason: reason.value })() }, "Accept"),
    h("button", { class: "ghost", "data-testid": "reject", onclick: () => act("reject", { reason: reason.value })() }, "Reject"),
    out);
}

function detail(s, panel, session, reload) {
  const confidence = typeof s.confidence === "number" ? `${Math.round(s.confidence * 100)} % confidence` : null;
  return h("div", { "data-testid": "suggestion-detail" },
    h("h2", {}, s.summary || s.kind),
    h("p", {}, badge(s.state || "proposed", stateKind[s.state] || ""), " ", badge(s.kind || "policy", "muted"), " ",
      h("span", { class: "muted" }, [edgeText(s.edge), s.target, confidence].filter(Boolean).join(" · "))),
    actions(s, panel, session, reload),
    h("h3", {}, "Proposed change"), h("pre", { class: "doc" }, JSON.stringify(s.change ?? {}, null, 2)),
    h("h3", {}, "Evidence"), facts(s.evidence, "evidence"),
    s.replay ? [h("h3", {}, "Replay on the recorded window"), facts(s.replay, "replay")] : null,
    s.verification ? [h("h3", {}, "Verification"), facts(s.verification, "verification")] : null,
    s.policy_version ? h("p", {}, "Published as ", h("a", { href: `#/policies/${s.policy_service || ""}` }, `v${s.policy_version}`)) : null);
}

export async function renderSuggestions(el, args, session) {
  let list;
  try {
    list = await api(API);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      clear(el, h("section", { class: "card" }, h("h1", {}, "Suggestions"), h("p", { class: "empty" }, "The tuning service is not available on this server.")));
      return;
    }
    throw err;
  }
  const items = Array.isArray(list) ? list : list.suggestions || [];
  const panel = h("aside", { class: "panel" }, h("p", { class: "muted" }, "Select a suggestion."));
  const show = async (id) => {
    const s = await api(`${API}/${encodeURIComponent(id)}`);
    clear(panel, detail(s, panel, session, show));
  };
  clear(el, h("div", { class: "split" },
    h("section", { class: "card" }, h("h1", {}, "Suggestions"),
      h("p", { class: "muted" }, session.operator ? "Review the evidence and replay, then accept or reject." : "Read-only: operators accept or reject suggestions."),
      items.length ? h("table", { class: "grid", "data-testid": "suggestions" },
        h("thead", {}, h("tr", {}, ["Edge", "Kind", "Summary", "Confidence", "State", "Updated"].map((c) => h("th", {}, c)))),
        h("tbody", {}, items.map((s) => h("tr", { class: "clickable", dataset: { id: s.id }, onclick: () => { location.hash = `#/suggestions/${s.id}`; } },
          h("td", {}, edgeText(s.edge)), h("td", {}, s.kind), h("td", {}, s.summary),
          h("td", { class: "num" }, typeof s.confidence === "number" ? `${Math.round(s.confidence * 100)} %` : "–"),
          h("td", {}, badge(s.state || "proposed", stateKind[s.state] || "")),
          h("td", {}, s.updated_at ? fmtTime(s.updated_at) : "")))))
        : h("p", { class: "empty" }, "No suggestions right now.")),
    panel));
  const chosen = args[0] || items[0]?.id;
  if (chosen) await show(chosen);
}

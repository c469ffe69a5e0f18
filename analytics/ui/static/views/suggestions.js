// Policy suggestions: evidence, counterfactual replay, Accept / Reject (operators only).
import { api, ApiError } from "../api.js";
import { badge, clear, errorBox, fmtTime, h } from "../dom.js";

const API = "/api/v1/suggestions";

function edgeText(s) {
  return `${s.caller} → ${s.upstream}` + (s.route && s.route !== "default" ? ` (${s.route})` : "");
}

// Shares (extra_load, error_rate, budget ratio...) read as percentages; expected counts from the
// replay are fractional by nature and keep one decimal.
const SHARE = /(^|_)(load|rate|budget_ratio)$/; // not latency_ratio: that one is a factor

function value(v, key = "") {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (SHARE.test(key)) return `${(v * 100).toFixed(Math.abs(v) < 0.001 && v !== 0 ? 3 : 1)} %`;
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(3);
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function facts(obj, testid) {
  if (!obj || typeof obj !== "object") return h("p", { class: "muted" }, value(obj));
  return h("table", { class: "kv", "data-testid": testid }, h("tbody", {},
    Object.entries(obj).map(([k, v]) => h("tr", {}, h("th", {}, k.replaceAll("_", " ")), h("td", {}, value(v, k))))));
}

const stateKind = { proposed: "warn", accepted: "good", observing: "policy", enforcing: "good", verified: "good", rejected: "muted", superseded: "muted", rolled_back: "bad" };
const LIVE = new Set(["accepted", "observing", "enforcing", "verified"]);

function actions(s, session, reload) {
  if (!session.operator || !(s.state === "proposed" || LIVE.has(s.state))) return null;
  const reason = h("input", { name: "reason", placeholder: "reason", value: "reviewed in the UI", size: 26 });
  const out = h("div", { role: "status", class: "notice" });
  const act = (verb, body, done) => async () => {
    try {
      await api(`${API}/${encodeURIComponent(s.id)}/${verb}`, { method: "POST", body });
      await reload(s.id, done);
    } catch (err) { clear(out, errorBox(err)); }
  };
  if (s.state !== "proposed") {
    return h("div", { class: "actions", "data-testid": "suggestion-actions" }, reason,
      h("button", { class: "danger", "data-testid": "rollback", onclick: () => act("rollback", { reason: reason.value }, "Rolled back.")() }, "Roll back"),
      out);
  }
  const mode = h("select", { name: "mode" }, h("option", { value: "enforce" }, "enforce"), h("option", { value: "observe" }, "observe only first"));
  return h("div", { class: "actions", "data-testid": "suggestion-actions" },
    mode, reason,
    h("button", { class: "primary", "data-testid": "accept", onclick: () => act("accept", { mode: mode.value, reason: reason.value }, "Accepted: the control plane is pushing the new policy.")() }, "Accept"),
    h("button", { class: "ghost", "data-testid": "reject", onclick: () => act("reject", { reason: reason.value }, "Rejected.")() }, "Reject"),
    out);
}

function history(items) {
  if (!items || !items.length) return null;
  return [h("h3", {}, "History"), h("table", { class: "grid", "data-testid": "suggestion-history" },
    h("tbody", {}, items.map((e) => h("tr", {}, h("td", {}, badge(e.state, stateKind[e.state] || "")),
      h("td", {}, typeof e.at === "number" ? fmtTime(e.at) : String(e.at ?? "")), h("td", {}, e.actor || ""), h("td", {}, e.reason || "")))))];
}

function replayFacts(replay) {
  if (!replay) return null;
  const { text, ...numbers } = replay;
  return [h("h3", {}, "Replay on the recorded window"), text ? h("p", { class: "replay-text" }, text) : null, facts(numbers, "replay")];
}

function detail(s, session, reload, notice) {
  const confidence = typeof s.confidence === "number" ? `${Math.round(s.confidence * 100)} % confidence` : null;
  const window = s.window_start ? `window ${fmtTime(s.window_start)} – ${fmtTime(s.window_end)}` : null;
  return h("div", { "data-testid": "suggestion-detail" },
    h("h2", {}, s.summary || s.kind),
    h("p", {}, badge(s.state, stateKind[s.state] || ""), " ", badge(s.kind, "muted"), s.mode ? badge(s.mode, "policy") : null, " ",
      h("span", { class: "muted" }, [edgeText(s), confidence, window].filter(Boolean).join(" · "))),
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    actions(s, session, reload),
    s.policy_version ? h("p", {}, "Published as ", h("a", { href: `#/policies/${s.caller}` }, `${s.caller} policy v${s.policy_version}`),
      s.previous_version !== null && s.previous_version !== undefined ? ` (was v${s.previous_version})` : "", " · ", h("a", { href: "#/fleet" }, "fleet")) : null,
    replayFacts(s.replay),
    h("h3", {}, "Proposed change"), h("pre", { class: "doc" }, JSON.stringify(s.change ?? {}, null, 2)),
    h("h3", {}, "Evidence"), facts(s.evidence, "evidence"),
    s.verification ? [h("h3", {}, "Verification"), facts(s.verification, "verification")] : null,
    history(s.history));
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
  const show = async (id, notice = "") => {
    const s = await api(`${API}/${encodeURIComponent(id)}`);
    clear(panel, detail(s, session, show, notice));
  };
  clear(el, h("div", { class: "split" },
    h("section", { class: "card" }, h("h1", {}, "Suggestions"),
      h("div", { class: "row" },
        h("p", { class: "muted" }, session.operator ? "Review the evidence and replay, then accept or reject." : "Read-only: operators accept or reject suggestions."),
        session.operator ? h("button", { class: "small", "data-testid": "refresh", onclick: async (ev) => {
          ev.target.disabled = true;
          try { await api(`${API}/refresh`, { method: "POST" }); await renderSuggestions(el, args, session); }
          catch (err) { ev.target.replaceWith(errorBox(err)); }
        } }, "Recompute now") : null),
      items.length ? h("table", { class: "grid", "data-testid": "suggestions" },
        h("thead", {}, h("tr", {}, ["Edge", "Kind", "Summary", "Confidence", "State", "Updated"].map((c) => h("th", {}, c)))),
        h("tbody", {}, items.map((s) => h("tr", { class: "clickable", dataset: { id: s.id }, onclick: () => { location.hash = `#/suggestions/${s.id}`; } },
          h("td", {}, edgeText(s)), h("td", {}, s.kind), h("td", {}, s.summary),
          h("td", { class: "num" }, typeof s.confidence === "number" ? `${Math.round(s.confidence * 100)} %` : "–"),
          h("td", {}, badge(s.state || "proposed", stateKind[s.state] || "")),
          h("td", {}, s.updated_at ? fmtTime(s.updated_at) : "")))))
        : h("p", { class: "empty" }, "No suggestions right now.")),
    panel));
  const chosen = args[0] || items[0]?.id;
  if (chosen) await show(chosen);
}

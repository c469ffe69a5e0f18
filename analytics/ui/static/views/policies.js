// Policies: current document per service, version history, diff between versions, rollback.
import { api, ApiError } from "../api.js";
import { badge, clear, errorBox, fmtTime, h } from "../dom.js";

const CP = "/api/v1/controlplane";

/** Chart annotations for a service's policy versions (created_at is unix seconds). */
export async function policyAnnotations(service) {
  try {
    const versions = await api(`${CP}/policies/${encodeURIComponent(service)}/versions`, { query: { limit: 50 } });
    return versions.map((v) => ({ t: v.created_at * 1000, label: `${service} v${v.version}`, title: `${v.action}: ${v.reason}` }));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return [];
    throw err;
  }
}

function diffTable(changes) {
  if (!changes.length) return h("p", { class: "empty" }, "No differences.");
  const show = (v) => (v === undefined || v === null ? "" : JSON.stringify(v));
  return h("table", { class: "grid diff", "data-testid": "diff" },
    h("thead", {}, h("tr", {}, ["Path", "Change", "Old", "New"].map((c) => h("th", {}, c)))),
    h("tbody", {}, changes.map((c) => h("tr", { class: `op-${c.op}` }, h("td", { class: "mono" }, c.path), h("td", {}, c.op),
      h("td", { class: "mono old" }, show(c.old)), h("td", { class: "mono new" }, show(c.new))))));
}

async function serviceView(panel, service, session, notice = "") {
  const versions = await api(`${CP}/policies/${encodeURIComponent(service)}/versions`);
  const current = versions[0];
  const diffBox = h("div", {});
  const status = h("p", { class: "notice", role: "status" }, notice);
  const pick = (name, selected) => h("select", { name }, versions.map((v) =>
    h("option", { value: v.version, selected: v.version === selected }, `v${v.version}`)));
  const fromSel = pick("from", versions[1]?.version ?? current.version);
  const toSel = pick("to", current.version);
  const showDiff = async () => {
    try {
      const changes = await api(`${CP}/policies/${encodeURIComponent(service)}/diff`, { query: { from_version: fromSel.value, to_version: toSel.value } });
      clear(diffBox, diffTable(changes));
    } catch (err) { clear(diffBox, errorBox(err)); }
  };
  fromSel.addEventListener("change", showDiff);
  toSel.addEventListener("change", showDiff);
  const rollback = (target) => {
    const reason = h("input", { name: "reason", placeholder: "reason (required)", required: true, minlength: 1, size: 30 });
    const form = h("form", { class: "inline-form" }, reason, h("button", { type: "submit", class: "danger" }, `Roll back to v${target}`),
      h("button", { type: "button", class: "ghost", onclick: () => form.remove() }, "Cancel"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const made = await api(`${CP}/policies/${encodeURIComponent(service)}/rollback`, { method: "POST", body: { to_version: target, reason: reason.value } });
        await serviceView(panel, service, session, `Published v${made.version} (rollback to v${target}).`);
      } catch (err) { form.replaceWith(errorBox(err)); }
    });
    return form;
  };
  const rows = versions.map((v) => {
    const cell = h("td", {});
    if (session.operator && v.version !== current.version) {
      cell.append(h("button", { class: "small", "data-testid": `rollback-${v.version}`, onclick: () => cell.replaceChildren(rollback(v.version)) }, "Roll back here"));
    }
    return h("tr", { dataset: { version: v.version } }, h("td", {}, `v${v.version}`, v.version === current.version ? badge("current", "good") : null),
      h("td", {}, fmtTime(v.created_at)), h("td", {}, v.author), h("td", {}, v.action, v.source_version ? ` (from v${v.source_version})` : ""),
      h("td", {}, v.reason), cell);
  });
  clear(panel, h("h2", {}, `Policy for ${service}`), status,
    h("h3", {}, "History"),
    h("table", { class: "grid", "data-testid": "history" }, h("thead", {}, h("tr", {}, ["Version", "Created", "Author", "Action", "Reason", ""].map((c) => h("th", {}, c)))), h("tbody", {}, rows)),
    h("h3", {}, "Diff"), h("div", { class: "row" }, "from ", fromSel, " to ", toSel), diffBox,
    h("h3", {}, `Current document (v${current.version})`), h("pre", { class: "doc" }, JSON.stringify(current.document, null, 2)));
  if (versions.length > 1) await showDiff();
}

export async function renderPolicies(el, args, session) {
  const policies = await api(`${CP}/policies`);
  const panel = h("section", { class: "card grow" }, h("p", { class: "muted" }, "Select a service."));
  clear(el, h("div", { class: "split narrow-left" },
    h("section", { class: "card" }, h("h1", {}, "Policies"),
      policies.length ? h("ul", { class: "nav-list" }, policies.map((p) =>
        h("li", { class: p.service === args[0] ? "active" : "" }, h("a", { href: `#/policies/${p.service}` }, p.service), badge(`v${p.version}`, "muted"))))
        : h("p", { class: "empty" }, "No policies published yet.")),
    panel));
  const chosen = args[0] || policies[0]?.service;
  if (chosen) await serviceView(panel, chosen, session);
}

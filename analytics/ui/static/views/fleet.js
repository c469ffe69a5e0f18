// Fleet: every registered sidecar with the policy version it ACKed (or NACKed) vs the current one.
import { api } from "../api.js";
import { badge, clear, fmtTime, h } from "../dom.js";

export function syncBadge(entry) {
  if (entry.nack) return badge(`NACK v${entry.nack.version ?? "?"}`, "bad");
  if (entry.acked_version === null) return badge("pending", "warn");
  if (entry.in_sync && entry.acked_version === 0) return badge("ACKed (no policy)", "good");
  if (entry.in_sync) return badge(`ACKed v${entry.acked_version}`, "good");
  return badge(`v${entry.acked_version} (behind)`, "warn");
}

export async function renderFleet(el) {
  const fleet = await api("/api/v1/controlplane/fleet");
  const now = Date.now() / 1000;
  clear(el, h("section", { class: "card" },
    h("h1", {}, "Fleet"),
    h("p", { class: "muted" }, `${fleet.length} sidecars, ${fleet.filter((e) => e.in_sync).length} in sync`),
    fleet.length ? h("table", { class: "grid", "data-testid": "fleet" },
      h("thead", {}, h("tr", {}, ["Service", "Instance", "Address", "Labels", "Policy", "Current", "Last seen"].map((c) => h("th", {}, c)))),
      h("tbody", {}, fleet.map((e) => h("tr", { dataset: { instance: e.instance, service: e.service } },
        h("td", {}, h("a", { href: `#/policies/${e.service}` }, `${e.namespace}/${e.service}`)),
        h("td", { class: "mono" }, e.instance),
        h("td", { class: "mono" }, e.address),
        h("td", {}, Object.entries(e.labels).map(([k, v]) => badge(`${k}=${v}`, "muted"))),
        h("td", { class: "sync" }, syncBadge(e), e.nack ? h("div", { class: "muted small" }, e.nack.error) : null),
        h("td", { class: "num" }, e.current_version ? `v${e.current_version}` : "–"),
        h("td", {}, `${Math.max(0, now - e.last_seen).toFixed(0)} s ago`, h("div", { class: "muted small" }, `registered ${fmtTime(e.registered_at)}`)))))) 
      : h("p", { class: "empty" }, "No sidecars registered.")));
}

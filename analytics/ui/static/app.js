// Entry point: login with a token, session role, hash routing between the views.
import { api, token, ApiError } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { renderMap } from "./views/map.js";
import { renderTraces, renderTrace } from "./views/traces.js";
import { renderIncidents } from "./views/incidents.js";
import { renderSuggestions } from "./views/suggestions.js";
import { renderPolicies } from "./views/policies.js";
import { renderFleet } from "./views/fleet.js";

const $ = (id) => document.getElementById(id);

export const session = {
  name: "",
  role: "viewer",
  get operator() { return this.role === "operator"; },
  windowS() { return Number($("window").value); },
  range() {
    const end = new Date();
    return { start: new Date(end.getTime() - this.windowS() * 1000), end };
  },
};

const views = {
  map: renderMap,
  traces: (el, args, s) => (args[0] ? renderTrace(el, args[0]) : renderTraces(el, args, s)),
  incidents: renderIncidents,
  suggestions: renderSuggestions,
  policies: renderPolicies,
  fleet: renderFleet,
};

let generation = 0;

async function route() {
  const [name, ...args] = (location.hash.replace(/^#\/?/, "") || "map").split("/").map(decodeURIComponent);
  const render = views[name] || views.map;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === name);
  }
  const view = $("view");
  const mine = ++generation;
  clear(view, h("p", { class: "muted loading" }, "Loading…"));
  const target = h("div", { class: "view-body" });
  try {
    await render(target, args, session);
    if (mine === generation) clear(view, target);
  } catch (err) {
    if (mine === generation) clear(view, errorBox(err));
  }
}

function showLogin(message = "") {
  $("shell").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

async function start() {
  if (!token.get()) return showLogin();
  try {
    const me = await api("/api/v1/session");
    session.name = me.name;
    session.role = me.role;
  } catch (err) {
    token.clear();
    const refused = err instanceof ApiError && (err.status === 401 || err.status === 403);
    return showLogin(refused ? `That token was not accepted: ${err.message}` : err.message);
  }
  document.body.dataset.role = session.role;
  clear($("who"), h("span", {}, session.name), h("span", { class: `badge role-${session.role}` }, session.role));
  $("login").hidden = true;
  $("shell").hidden = false;
  await route();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token.set($("token").value.trim());
  start();
});
$("logout").addEventListener("click", () => {
  token.clear();
  showLogin();
});
$("window").addEventListener("change", route);
window.addEventListener("hashchange", route);
window.addEventListener("meshlens:unauthorized", () => {
  token.clear();
  showLogin("Your session ended; sign in again.");
});
start();

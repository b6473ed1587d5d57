// The customer portal: one subscription, reached with a link whose token is
// in the URL's fragment. The token moves into the tab's session and the
// fragment is removed, so it does not linger in the address bar or history.
// Helpers ($, el, time, row, badge, apiWith, deliveryList) are in common.js.
"use strict";

const TOKEN_KEY = "hookhost.portal-token";
const api = apiWith(TOKEN_KEY);

function showError(error) {
  const box = $("#error");
  box.textContent =
    error instanceof ApiError && error.status === 401
      ? `This link does not work (${error.message}). Ask your provider for a new one.`
      : error.message;
  box.hidden = false;
}

async function loadOverview() {
  const { subscription: sub, expires_at } = await api("GET", "/v1/portal");
  $("#who").textContent = sub.id;
  const facts = $("#endpoint-facts");
  facts.replaceChildren();
  const fact = (name, value) => {
    facts.append(el("dt", name));
    const dd = el("dd");
    dd.append(value instanceof Node ? value : document.createTextNode(value));
    facts.append(dd);
  };
  fact("Endpoint", sub.url);
  fact("Event types", sub.types.join(", "));
  fact("State", badge(sub.enabled && !sub.endpoint?.disabled ? "enabled" : "disabled"));
  if (sub.endpoint?.disabled) fact("Disabled because", sub.endpoint.disabled.reason);
  if (sub.endpoint?.last_success_ms) fact("Last success", time(sub.endpoint.last_success_ms));
  if (sub.endpoint?.failures) fact("Failed in a row", String(sub.endpoint.failures));
  fact("Signing secrets", String(sub.secrets_count));
  for (const r of sub.retiring_secrets ?? []) {
    const until = el("span", "an older secret also signs until ");
    until.append(time(r.until_ms));
    fact("Rotation", until);
  }
  fact("This link works until", time(Date.parse(expires_at)));
  $("#overview").hidden = false;
}

/** The portal's filters as a query. */
function deliveryFilters() {
  const form = $("#delivery-filter");
  const query = new URLSearchParams();
  for (const key of ["status", "type"]) {
    const value = form.elements[key].value.trim();
    if (value) query.set(key, value);
  }
  return query;
}

/** The list, detail and paging (common.js); made once the page is loaded. */
let deliveries = null;

async function loadDeliveries() {
  await deliveries.load();
  $("#deliveries").hidden = false;
}

async function rotateSecret() {
  const box = $("#rotate-result");
  box.replaceChildren();
  if (!confirm("Make a new signing secret? Your current one keeps working for 24 hours.")) return;
  try {
    const { secret, retiring_secrets } = await api("POST", "/v1/portal/rotate-secret");
    const code = el("code", secret);
    code.id = "new-secret";
    box.append(el("p", "Your new secret (shown only now; store it where your receiver reads it):"), code);
    const until = Math.max(...retiring_secrets.map((r) => r.until_ms));
    if (Number.isFinite(until)) {
      const note = el("p", "The previous secret keeps signing until ");
      note.append(time(until), ".");
      box.append(note);
    }
    await loadOverview();
  } catch (error) {
    box.textContent = error.message;
  }
}

async function loadTypes() {
  const { event_types } = await api("GET", "/v1/portal/event-types");
  const list = $("#type-list");
  list.replaceChildren();
  for (const t of event_types) {
    const item = el("details", null, "panel");
    item.append(el("summary", t.name));
    if (t.description) item.append(el("p", t.description));
    if (t.sample) item.append(el("pre", JSON.stringify(t.sample, null, 2)));
    list.append(item);
  }
  $("#type-empty").hidden = event_types.length > 0;
  $("#types").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  if (location.hash.length > 1) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(1)));
    history.replaceState(null, "", location.pathname);
  }
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showError(new Error("Open this page with the link your provider gave you."));
    return;
  }
  $("#rotate").addEventListener("click", () => rotateSecret());
  deliveries = deliveryList({
    api,
    base: "/v1/portal/deliveries",
    withSubscription: false,
    filters: deliveryFilters,
    refresh: loadDeliveries,
    showError,
  });
  loadOverview()
    .then(() => Promise.all([loadDeliveries(), loadTypes()]))
    .catch(showError);
});

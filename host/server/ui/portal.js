// The customer portal: one subscription, reached with a link whose token is
// in the URL's fragment. The token moves into the tab's session and the
// fragment is removed, so it does not linger in the address bar or history.
// Helpers ($, el, time, row, badge, apiWith, renderDelivery) are in common.js.
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
  fact("This link works until", time(Date.parse(expires_at)));
  $("#overview").hidden = false;
}

async function loadDeliveries() {
  const form = $("#delivery-filter");
  const query = new URLSearchParams({ limit: "100" });
  for (const key of ["status", "type"]) {
    const value = form.elements[key].value.trim();
    if (value) query.set(key, value);
  }
  if (pageCursor.after) query.set("after", pageCursor.after);
  const page = await api("GET", `/v1/portal/deliveries?${query}`);
  const { deliveries } = page;
  $("#delivery-count").textContent = countText(page, deliveries.length);
  pageCursor.next = page.next;
  $("#older").hidden = !page.next;
  $("#newest").hidden = !pageCursor.after;
  const body = $("#delivery-table tbody");
  body.replaceChildren();
  for (const d of deliveries) {
    const last = d.attempts.at(-1);
    const open = el("button", "Details", "quiet");
    open.type = "button";
    open.setAttribute("aria-label", `Details of delivery ${d.id}`);
    open.addEventListener("click", () => openDelivery(d.id).catch(showError));
    const tr = row([
      time(d.created_at_ms),
      d.type,
      badge(d.status),
      String(d.attempts.length),
      last ? (last.status ?? last.error ?? "no answer") : "—",
      open,
    ]);
    tr.dataset.delivery = d.id;
    body.append(tr);
  }
  $("#delivery-empty").hidden = deliveries.length > 0;
  $("#deliveries").hidden = false;
}

/** Where the shown page of deliveries starts, and where the next would. */
const pageCursor = { after: null, next: null };

let refreshTimer = null;

async function openDelivery(id) {
  clearTimeout(refreshTimer);
  const d = await api("GET", `/v1/portal/deliveries/${encodeURIComponent(id)}`);
  renderDelivery(d, { subscription: false });
  if (d.status === "pending") {
    refreshTimer = setTimeout(() => openDelivery(id).catch(showError), 1000);
  }
}

async function resend() {
  const id = $("#delivery-detail").dataset.delivery;
  const message = $("#detail-message");
  message.textContent = "";
  try {
    await api("POST", `/v1/portal/deliveries/${encodeURIComponent(id)}/resend`);
    message.textContent = "Queued again.";
    await openDelivery(id);
    await loadDeliveries();
  } catch (error) {
    message.textContent = error.message;
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
  $("#delivery-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    pageCursor.after = null;
    loadDeliveries().catch(showError);
  });
  $("#older").addEventListener("click", () => {
    pageCursor.after = pageCursor.next;
    loadDeliveries().catch(showError);
  });
  $("#newest").addEventListener("click", () => {
    pageCursor.after = null;
    loadDeliveries().catch(showError);
  });
  $("#resend").addEventListener("click", resend);
  $("#detail-close").addEventListener("click", () => {
    clearTimeout(refreshTimer);
    $("#delivery-detail").hidden = true;
  });
  loadOverview()
    .then(() => Promise.all([loadDeliveries(), loadTypes()]))
    .catch(showError);
});

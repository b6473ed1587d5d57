// Shared by the dashboard (app.js) and the customer portal (portal.js):
// calling the API with a bearer token from the tab's session, and building
// DOM nodes. Values from the server are only ever set as text.
"use strict";

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A function calling the API with the bearer token kept under `tokenKey`. */
function apiWith(tokenKey) {
  return (method, path, body) => call(tokenKey, method, path, body);
}

async function call(tokenKey, method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(tokenKey) ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await answer.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!answer.ok) {
    const why = parsed && typeof parsed.error === "string" ? parsed.error : text || answer.statusText;
    throw new ApiError(answer.status, `${answer.status}: ${why}`);
  }
  return parsed;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/** A time in the browser's zone, with UTC on hover. */
function time(ms) {
  if (!ms) return el("span", "—");
  const date = new Date(ms);
  const node = el("time", date.toLocaleString());
  node.dateTime = date.toISOString();
  node.title = `${date.toISOString()} (UTC)`;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell ?? "";
    tr.append(td);
  }
  return tr;
}

function badge(status) {
  return el("span", status, `badge status-${status}`);
}

/** "12 in all", or how far a long listing was counted. */
function countText(page, shown) {
  if (!page.total_exact) return `Showing ${shown}; at least ${page.total} match (counting stops there).`;
  return page.total > shown ? `Showing ${shown} of ${page.total}.` : `${page.total} in all.`;
}

/** Fills the delivery panel (#delivery-detail): facts, attempts, data. */
function renderDelivery(d, { subscription }) {
  const panel = $("#delivery-detail");
  panel.hidden = false;
  panel.dataset.delivery = d.id;
  panel.dataset.status = d.status;
  $("#detail-id").textContent = d.id;
  const facts = $("#detail-facts");
  facts.replaceChildren();
  const fact = (name, value) => {
    facts.append(el("dt", name));
    const dd = el("dd");
    dd.append(value instanceof Node ? value : document.createTextNode(value ?? "—"));
    facts.append(dd);
  };
  fact("Status", badge(d.status));
  if (subscription) fact("Subscription", d.subscription_id);
  fact("Type", d.type);
  fact("Event", d.event_id);
  fact("Created", time(d.created_at_ms));
  if (d.status === "pending") fact("Next attempt", time(d.next_attempt_at_ms));
  if (d.error) fact("Error", d.error);
  const attempts = $("#attempt-table tbody");
  attempts.replaceChildren();
  for (const a of d.attempts) {
    attempts.append(
      row([time(a.at_ms), a.status ?? "no answer", `${a.latency_ms.toFixed(1)} ms`, a.error ?? ""]),
    );
  }
  $("#attempt-empty").hidden = d.attempts.length > 0;
  $("#detail-data").textContent = JSON.stringify(d.data, null, 2);
  renderRequest(d.request);
}

/** The request as sent (rebuilt by the server, signatures and header values masked). */
function renderRequest(request) {
  const box = $("#request");
  box.hidden = !request;
  if (!request) return;
  $("#request-note").textContent =
    request.exact === true
      ? `POST ${request.url}, exactly as sent`
      : request.exact === false
        ? `POST ${request.url} as it would be sent now (the subscription changed since that attempt)`
        : `POST ${request.url} (not attempted yet: as it will be sent)`;
  const rows = $("#request-headers tbody");
  rows.replaceChildren(...request.headers.map(([name, value]) => row([name, value])));
  // Byte for byte as sent (no pretty-printing): the signature covers it.
  $("#request-body").textContent = request.body;
}

/**
 * The deliveries list with its detail panel, re-send and paging, as both
 * pages show it. `base` is the API path (`/v1/deliveries` or the portal's);
 * `filters()` gives the page's query; `refresh()` reloads the list the way
 * the page does (it may update more than the list).
 */
function deliveryList({ api, base, withSubscription, filters, refresh, showError }) {
  const cursor = { after: null, next: null };
  let timer = null;

  function stop() {
    clearTimeout(timer);
    timer = null;
  }

  async function open(id) {
    stop();
    const d = await api("GET", `${base}/${encodeURIComponent(id)}`);
    renderDelivery(d, { subscription: withSubscription });
    // While it is on its way, keep the page current.
    if (d.status === "pending") timer = setTimeout(() => open(id).catch(showError), 1000);
  }

  async function load() {
    const query = filters();
    query.set("limit", "100");
    if (cursor.after) query.set("after", cursor.after);
    const page = await api("GET", `${base}?${query}`);
    const { deliveries } = page;
    $("#delivery-count").textContent = countText(page, deliveries.length);
    cursor.next = page.next;
    $("#older").hidden = !page.next;
    $("#newest").hidden = !cursor.after;
    const body = $("#delivery-table tbody");
    body.replaceChildren();
    for (const d of deliveries) {
      const last = d.attempts.at(-1);
      const details = el("button", "Details", "quiet");
      details.type = "button";
      details.setAttribute("aria-label", `Details of delivery ${d.id}`);
      details.addEventListener("click", () => open(d.id).catch(showError));
      const tr = row([
        time(d.created_at_ms),
        ...(withSubscription ? [d.subscription_id] : []),
        d.type,
        badge(d.status),
        String(d.attempts.length),
        last ? (last.status ?? last.error ?? "no answer") : "—",
        details,
      ]);
      tr.dataset.delivery = d.id;
      body.append(tr);
    }
    $("#delivery-empty").hidden = deliveries.length > 0;
  }

  async function resend() {
    const id = $("#delivery-detail").dataset.delivery;
    const message = $("#detail-message");
    message.textContent = "";
    try {
      await api("POST", `${base}/${encodeURIComponent(id)}/resend`);
      message.textContent = "Queued again.";
      await open(id);
      await refresh();
    } catch (error) {
      message.textContent = error.message;
    }
  }

  const reloadFrom = (after) => {
    cursor.after = after;
    refresh().catch(showError);
  };
  $("#delivery-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    reloadFrom(null);
  });
  $("#older").addEventListener("click", () => reloadFrom(cursor.next));
  $("#newest").addEventListener("click", () => reloadFrom(null));
  $("#resend").addEventListener("click", resend);
  $("#detail-close").addEventListener("click", () => {
    stop();
    $("#delivery-detail").hidden = true;
  });
  return { load, stop, open };
}

// hookhost's operator dashboard: plain DOM, no framework and no build step.
// Every value from the server is written with textContent (never as HTML),
// so a hostile event type or endpoint answer cannot run script here.
"use strict";

// Helpers ($, el, time, row, badge, apiWith, ApiError) are in common.js.
const TOKEN_KEY = "hookhost.admin-token";

const api = apiWith(TOKEN_KEY);

function showError(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("Your session has no token any more: sign in again.");
    return;
  }
  const box = $("#error");
  box.textContent = error.message;
  box.hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

// --- signing in -----------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const token = $("#token").value.trim();
  $("#login-error").textContent = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api("GET", "/v1/subscriptions");
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("#login-error").textContent =
      error instanceof ApiError && (error.status === 401 || error.status === 403)
        ? `That token was refused (${error.message}).`
        : `The server did not answer as expected: ${error.message}`;
    return;
  }
  $("#token").value = "";
  enter();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  deliveries?.stop();
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message ?? "";
  $("#token").focus();
}

function enter() {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  show(location.hash.slice(1) || "deliveries");
}

// --- views ----------------------------------------------------------------------

const loaders = {
  overview: loadOverview,
  deliveries: loadDeliveries,
  subscriptions: loadSubscriptions,
  plugins: loadPlugins,
  "event-types": loadEventTypes,
};

function show(name) {
  if (!(name in loaders)) name = "deliveries";
  clearError();
  deliveries?.stop();
  clearTimeout(overviewTimer);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== name;
  for (const button of document.querySelectorAll("#nav button")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  history.replaceState(null, "", `#${name}`);
  loaders[name]().catch(showError);
}

// Overview --------------------------------------------------------------------

let overviewTimer = null;
const charts = {};

/** One uPlot chart in `#id`, drawn in the page's text colour (light or dark). */
function chart(id, series, data) {
  const box = $(`#${id}`);
  const width = Math.max(280, box.clientWidth - 16);
  if (charts[id] && charts[id].width === width) {
    charts[id].setData(data);
    return;
  }
  charts[id]?.destroy();
  const ink = getComputedStyle(document.body).color;
  const grid = { stroke: "rgba(128,128,128,0.25)" };
  charts[id] = new uPlot(
    {
      width,
      height: 200,
      series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false }))],
      axes: [
        { stroke: ink, grid },
        { stroke: ink, grid },
      ],
      scales: {
        // Always the last hour, so a young server's few points sit at the right.
        x: { time: true, range: () => [Date.now() / 1000 - 3600, Date.now() / 1000] },
        y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
      },
    },
    data,
    box,
  );
}

async function loadOverview() {
  clearTimeout(overviewTimer);
  const { points } = await api("GET", "/v1/stats/history");
  $("#overview-empty").hidden = points.length > 0;
  const at = points.map((p) => p.at_ms / 1000);
  const col = (key) => points.map((p) => p[key]);
  chart(
    "chart-flow",
    [
      ["events in/s", "#2f6fdb"],
      ["delivered/s", "#1f9d55"],
      ["failed attempts/s", "#d97706"],
      ["dead/s", "#c0392b"],
    ],
    [at, col("events_in_per_s"), col("delivered_per_s"), col("failed_attempts_per_s"), col("dead_per_s")],
  );
  chart("chart-latency", [["mean attempt ms", "#7c3aed"]], [at, col("mean_attempt_ms")]);
  chart(
    "chart-queue",
    [
      ["queued", "#2f6fdb"],
      ["in windows", "#0e9f9f"],
    ],
    [at, col("queue_depth"), col("window_events")],
  );
  $("#overview").dataset.points = String(points.length);
  overviewTimer = setTimeout(() => loadOverview().catch(showError), 10_000);
}

// Deliveries ------------------------------------------------------------------

async function loadDeliveries() {
  const form = $("#delivery-filter");
  const select = form.elements.subscription;
  const { subscriptions } = await api("GET", "/v1/subscriptions");
  const chosen = select.value;
  select.replaceChildren(el("option", "all"));
  select.firstChild.value = "";
  for (const sub of subscriptions) select.append(el("option", sub.id));
  select.value = chosen;
  const recoverSelect = $("#recover-form").elements.subscription;
  const recoverChosen = recoverSelect.value;
  recoverSelect.replaceChildren();
  for (const sub of subscriptions) recoverSelect.append(el("option", sub.id));
  if (recoverChosen) recoverSelect.value = recoverChosen;
  const since = $("#recover-form").elements.since;
  if (!since.value) since.value = localInput(Date.now() - 24 * 3600 * 1000);

  await deliveries.load();
}

/** The Deliveries page's filters as a query. */
function deliveryFilters() {
  const form = $("#delivery-filter");
  const query = new URLSearchParams();
  for (const key of ["subscription", "status", "type"]) {
    const value = form.elements[key].value.trim();
    if (value) query.set(key, value);
  }
  // The inputs are in the browser's zone; the API takes RFC 3339.
  for (const key of ["since", "until"]) {
    const value = form.elements[key].value;
    if (value) query.set(key, new Date(value).toISOString());
  }
  return query;
}

/** A time as a datetime-local input's value, in the browser's zone. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

async function recover(event) {
  event.preventDefault();
  const form = $("#recover-form");
  const message = $("#recover-message");
  message.textContent = "";
  const id = form.elements.subscription.value;
  const since = new Date(form.elements.since.value);
  if (Number.isNaN(since.getTime())) {
    message.textContent = "Give the time to recover from.";
    return;
  }
  try {
    const r = await api("POST", `/v1/subscriptions/${encodeURIComponent(id)}/recover`, {
      since: since.toISOString(),
    });
    const failing = r.still_failing.map((f) => `${f.id}: ${f.error}`).join("; ");
    message.textContent =
      `${r.resent} re-sent, ${r.filtered.length} now filtered, ${r.still_failing.length} still failing` +
      (failing ? ` (${failing})` : "") + ".";
    message.dataset.resent = String(r.resent);
    await loadDeliveries();
  } catch (error) {
    message.textContent = error.message;
  }
}

/** The list, detail and paging (common.js); made once the page is loaded. */
let deliveries = null;

// Subscriptions -----------------------------------------------------------------

function health(endpoint) {
  if (!endpoint) return "";
  if (endpoint.disabled) return `endpoint disabled: ${endpoint.disabled.reason ?? ""}`;
  if (endpoint.failures > 0) return `${endpoint.failures} failed in a row`;
  if (endpoint.last_success_ms) {
    const span = el("span", "ok, last success ");
    span.append(time(endpoint.last_success_ms));
    return span;
  }
  return "no attempts yet";
}

async function loadSubscriptions() {
  const { subscriptions } = await api("GET", "/v1/subscriptions");
  const body = $("#subscription-table tbody");
  body.replaceChildren();
  for (const sub of subscriptions) {
    const toggle = el("button", sub.enabled ? "Disable" : "Enable", "quiet");
    toggle.type = "button";
    toggle.setAttribute("aria-label", `${sub.enabled ? "Disable" : "Enable"} ${sub.id}`);
    toggle.addEventListener("click", () => setEnabled(sub.id, !sub.enabled));
    if (sub.source === "config") {
      toggle.disabled = true;
      toggle.title = "Defined in the config file: change it there";
    }
    const edit = el("button", "Edit", "quiet");
    edit.type = "button";
    edit.setAttribute("aria-label", `Edit ${sub.id}`);
    edit.addEventListener("click", () => openSubscriptionForm(sub));
    if (sub.source === "config") {
      edit.disabled = true;
      edit.title = "Defined in the config file: change it there";
    }
    const actions = el("span", null, "row-actions");
    actions.append(toggle, edit);
    const plugins = (sub.plugins ?? [])
      .map((p) => (p.config === undefined || p.config === null ? p.plugin : `${p.plugin} ${JSON.stringify(p.config)}`))
      .join(" → ");
    const tr = row([
      sub.id,
      sub.url,
      sub.source,
      plugins || "—",
      health(sub.endpoint),
      badge(sub.enabled ? "enabled" : "disabled"),
      actions,
    ]);
    tr.dataset.subscription = sub.id;
    body.append(tr);
  }
  $("#subscription-empty").hidden = subscriptions.length > 0;
}

const SUBSCRIPTION_FIELDS = ["id", "url", "types", "tier", "envelope", "seed", "secrets", "plugins"];

function clearSubscriptionErrors() {
  for (const field of SUBSCRIPTION_FIELDS) $(`#sub-${field}-error`).textContent = "";
  $("#sub-form-error").textContent = "";
}

/** Puts the server's message next to the field it names (`subscription.url: ...`). */
function showSubscriptionError(message) {
  const named = /subscription\.([a-z_]+)/.exec(message) ?? /field `([a-z_]+)`/.exec(message);
  const field = named && SUBSCRIPTION_FIELDS.includes(named[1]) ? named[1] : null;
  const slot = field ? $(`#sub-${field}-error`) : $("#sub-form-error");
  slot.textContent = message;
  (field ? $(`#sub-${field}`) : $("#sub-id")).focus();
}

/**
 * Opens the subscription form: empty to create one, or filled with `sub`
 * to change it (its id fixed; seed and secrets, never shown, kept unless typed).
 */
function openSubscriptionForm(sub) {
  const form = $("#subscription-form");
  clearSubscriptionErrors();
  form.reset();
  form.dataset.editing = sub ? sub.id : "";
  $("#subscription-form-title").textContent = sub ? `Edit subscription ${sub.id}` : "New subscription";
  $("#subscription-submit").textContent = sub ? "Save" : "Create";
  $("#sub-keep-hint").hidden = !sub;
  form.elements.id.readOnly = Boolean(sub);
  if (sub) {
    form.elements.id.value = sub.id;
    form.elements.url.value = sub.url;
    form.elements.types.value = (sub.types ?? []).join(", ");
    form.elements.tier.value = sub.tier;
    form.elements.envelope.value = sub.envelope;
    form.elements.plugins.value = JSON.stringify(sub.plugins ?? []);
  }
  form.hidden = false;
  (sub ? form.elements.url : form.elements.id).focus();
}

async function createSubscription(event) {
  event.preventDefault();
  clearSubscriptionErrors();
  const form = $("#subscription-form");
  const editing = form.dataset.editing;
  const value = (name) => form.elements[name].value.trim();
  let plugins;
  try {
    plugins = value("plugins") ? JSON.parse(value("plugins")) : [];
  } catch (error) {
    $("#sub-plugins-error").textContent = `Not valid JSON: ${error.message}`;
    return;
  }
  const body = {
    id: value("id"),
    url: value("url"),
    types: value("types").split(",").map((t) => t.trim()).filter(Boolean),
    tier: value("tier"),
    envelope: value("envelope"),
    secrets: value("secrets").split("\n").map((t) => t.trim()).filter(Boolean),
    plugins,
  };
  if (value("seed")) body.seed = value("seed");
  try {
    if (editing) {
      // A merge patch: seed and secrets stay unless new ones were typed.
      if (body.secrets.length === 0) delete body.secrets;
      delete body.id;
      await api("PATCH", `/v1/subscriptions/${encodeURIComponent(editing)}`, body);
    } else {
      await api("POST", "/v1/subscriptions", body);
    }
  } catch (error) {
    showSubscriptionError(error.message);
    return;
  }
  form.reset();
  form.hidden = true;
  $("#subscription-message").textContent = `${editing || body.id} ${editing ? "saved" : "created"}.`;
  await loadSubscriptions();
}

async function setEnabled(id, enabled) {
  const message = $("#subscription-message");
  message.textContent = "";
  try {
    await api("POST", `/v1/subscriptions/${encodeURIComponent(id)}/${enabled ? "enable" : "disable"}`);
    message.textContent = `${id} ${enabled ? "enabled" : "disabled"}.`;
    await loadSubscriptions();
  } catch (error) {
    message.textContent = error.message;
  }
}

// Plugins -------------------------------------------------------------------------

async function loadPlugins() {
  const { plugins } = await api("GET", "/v1/plugins");
  const body = $("#plugin-table tbody");
  body.replaceChildren();
  for (const p of plugins) {
    const s = p.serving;
    const version = s ? el("code", s.sha256.slice(0, 12)) : el("span", "not serving");
    if (s) version.title = s.sha256;
    const shadow = p.candidate
      ? `${p.candidate.sha256.slice(0, 12)}: ${p.candidate.shadow.agreed} agreed, ${p.candidate.shadow.disagreed} disagreed, ${p.candidate.shadow.candidate_errors} errors`
      : "—";
    const tr = row([
      p.name,
      version,
      s ? s.roles.join(", ") : "",
      s ? s.isolation : "",
      s ? loaded(s) : "",
      s ? String(s.calls) : "",
      s ? String(s.errors) : "",
      s ? `${s.mean_call_us.toFixed(1)} µs` : "",
      shadow,
      p.last_error ? p.last_error.error : "",
    ]);
    tr.dataset.plugin = p.name;
    body.append(tr);
  }
  $("#plugin-empty").hidden = plugins.length > 0;

  const form = $("#try-form");
  const chosen = form.elements.plugin.value;
  form.elements.plugin.replaceChildren();
  for (const p of plugins.filter((p) => p.serving)) form.elements.plugin.append(el("option", p.name));
  if (chosen) form.elements.plugin.value = chosen;
  await loadSamples();
}

/** When a version was loaded, and how long compiling (or the cache) took. */
function loaded(info) {
  const span = el("span");
  span.append(time(info.loaded_at_unix_ms));
  span.append(` (${info.load_ms.toFixed(0)} ms${info.from_cache ? ", from cache" : ""})`);
  return span;
}

/** PUT /v1/plugins/{name}: the file's bytes, checked and swapped in by the server. */
async function uploadPlugin(event) {
  event.preventDefault();
  const form = $("#upload-form");
  const message = $("#upload-message");
  const file = form.elements.file.files[0];
  if (!file) return;
  const name = form.elements.name.value.trim() || file.name.replace(/(\.next)?\.wasm$/, "");
  const candidate = form.elements.candidate.checked;
  message.textContent = `Uploading ${name}…`;
  const answer = await fetch(
    `/v1/plugins/${encodeURIComponent(name)}${candidate ? "?candidate=true" : ""}`,
    {
      method: "PUT",
      headers: {
        Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ""}`,
        "Content-Type": "application/wasm",
      },
      body: file,
    },
  );
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    message.textContent = `${answer.status}: ${body.error ?? answer.statusText}`;
    return;
  }
  message.textContent = `${body.file} is ${candidate ? "in shadow" : "serving"} (${body.installed.sha256.slice(0, 12)}).`;
  form.reset();
  await loadPlugins();
}

let samples = null;

async function loadSamples() {
  if (samples !== null) return;
  const { event_types } = await api("GET", "/v1/event-types");
  samples = event_types.filter((t) => t.sample);
  const select = $("#try-form").elements.sample;
  samples.forEach((t, i) => {
    const option = el("option", `${t.catalog}: ${t.name}`);
    option.value = String(i);
    select.append(option);
  });
}

function pickSample() {
  const form = $("#try-form");
  const t = samples?.[Number(form.elements.sample.value)];
  if (form.elements.sample.value === "" || !t) return;
  form.elements.event.value = JSON.stringify({ type: t.name, data: t.sample }, null, 2);
}

/** Parses a field's JSON, showing the problem next to it. */
function jsonField(form, name, errorId, optional) {
  const text = form.elements[name].value.trim();
  $(errorId).textContent = "";
  if (optional && text === "") return { ok: true, value: null };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    $(errorId).textContent = `Not valid JSON: ${error.message}`;
    return { ok: false };
  }
}

async function tryPlugin(event) {
  event.preventDefault();
  const form = $("#try-form");
  const result = $("#try-result");
  const trial = jsonField(form, "event", "#try-event-error", false);
  const config = jsonField(form, "config", "#try-config-error", true);
  if (!trial.ok || !config.ok) return;
  result.dataset.state = "running";
  result.textContent = "…";
  try {
    const name = form.elements.plugin.value;
    const { decision } = await api("POST", `/v1/plugins/${encodeURIComponent(name)}/try`, {
      event: trial.value,
      config: config.value,
    });
    result.textContent = JSON.stringify(decision, null, 2);
    result.dataset.state = "done";
  } catch (error) {
    result.textContent = error.message;
    result.dataset.state = "failed";
  }
}

// Event types ---------------------------------------------------------------------

let eventTypes = [];

async function loadEventTypes() {
  const [{ event_types }, { subscriptions }] = await Promise.all([
    api("GET", "/v1/event-types"),
    api("GET", "/v1/subscriptions"),
  ]);
  eventTypes = event_types;
  const body = $("#event-type-table tbody");
  body.replaceChildren();
  for (const t of event_types) {
    let sample = "—";
    if (t.sample) {
      sample = el("details");
      sample.append(el("summary", "sample"), el("pre", JSON.stringify(t.sample, null, 2)));
    }
    const tr = row([
      t.name + (t.upcoming ? " (upcoming)" : ""),
      t.catalog,
      t.tier,
      t.delivery ?? "direct",
      t.description,
      sample,
    ]);
    tr.dataset.type = t.name;
    body.append(tr);
  }
  $("#event-type-empty").hidden = event_types.length > 0;
  const form = $("#test-form");
  const chosen = { subscription: form.elements.subscription.value, type: form.elements.type.value };
  form.elements.subscription.replaceChildren(
    ...subscriptions.filter((s) => s.enabled).map((s) => el("option", s.id)),
  );
  form.elements.type.replaceChildren(...event_types.filter((t) => !t.upcoming).map((t) => el("option", t.name)));
  if (chosen.subscription) form.elements.subscription.value = chosen.subscription;
  if (chosen.type) form.elements.type.value = chosen.type;
  else fillTestSample();
}

function fillTestSample() {
  const form = $("#test-form");
  const t = eventTypes.find((t) => t.name === form.elements.type.value);
  form.elements.data.value = t?.sample ? JSON.stringify(t.sample, null, 2) : "{}";
  $("#test-data-error").textContent = "";
}

async function sendTestEvent(event) {
  event.preventDefault();
  const form = $("#test-form");
  const message = $("#test-message");
  message.textContent = "";
  const data = jsonField(form, "data", "#test-data-error", false);
  if (!data.ok) return;
  const id = form.elements.subscription.value;
  try {
    const answer = await api("POST", `/v1/subscriptions/${encodeURIComponent(id)}/test`, {
      type: form.elements.type.value,
      data: data.value,
    });
    if (!answer.sent) {
      message.textContent = `Not sent: ${answer.reason}.`;
      return;
    }
    message.replaceChildren(`Sent to ${id} as delivery `);
    const link = el("a", answer.delivery);
    link.href = "#deliveries";
    link.addEventListener("click", (e) => {
      e.preventDefault();
      show("deliveries");
      deliveries.open(answer.delivery).catch(showError);
    });
    message.append(link, ".");
  } catch (error) {
    message.textContent = error.message;
  }
}

// --- wiring -------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll("#nav button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  deliveries = deliveryList({
    api,
    base: "/v1/deliveries",
    withSubscription: true,
    filters: deliveryFilters,
    refresh: loadDeliveries,
    showError,
  });
  $("#recover-form").addEventListener("submit", recover);
  $("#new-subscription").addEventListener("click", () => openSubscriptionForm(null));
  $("#subscription-cancel").addEventListener("click", () => {
    $("#subscription-form").hidden = true;
  });
  $("#subscription-form").addEventListener("submit", createSubscription);
  $("#try-form").addEventListener("submit", tryPlugin);
  $("#upload-form").addEventListener("submit", (event) => uploadPlugin(event).catch(showError));
  $("#try-form").elements.sample.addEventListener("change", pickSample);
  $("#test-form").addEventListener("submit", sendTestEvent);
  $("#test-form").elements.type.addEventListener("change", fillTestSample);
  if (sessionStorage.getItem(TOKEN_KEY)) enter();
  else $("#token").focus();
});

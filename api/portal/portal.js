// The delivery portal: one account's subscriptions, their health and delivery logs, and the actions on
// them, all through the public API (api.js). Plain DOM, no framework, no build step.

import { ApiError, api, countDeliveries, path, takeTokenFromFragment, token } from "./api.js";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { subs: [], resources: [], selected: null, statusFilter: "", cursor: null, readOnly: false };
const DELIVERY_STATUSES = ["pending", "delivering", "held", "succeeded", "failed", "cancelled"];

// -- small helpers -----------------------------------------------------------------------------------

// Builds elements from data with textContent only: receivers' answers can never become markup.
function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "className") element.className = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

const when = (iso) => (iso ? h("time", { datetime: iso }, new Date(iso).toLocaleString()) : "—");
const badge = (status) => h("span", { className: `badge ${status}` }, status);

function notify(text) {
  const notice = $("#notice");
  notice.textContent = text;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => (notice.textContent = ""), 8000);
}

// Shows each `errors[].reason` next to the control it names ("filter.project_id" falls back to
// "filter"), and the whole detail at the top of the form when no field fits.
function showErrors(form, error) {
  const slots = [...form.querySelectorAll("[data-error-for]")];
  const slot = (field) => slots.find((s) => s.dataset.errorFor === field);
  const fields = error.errors.length ? error.errors : [{ field: "request", reason: error.message }];
  let first = null;
  for (const { field, reason } of fields) {
    const target = slot(field) || slot(field.split(/[.[]/)[0]) || slot("request");
    const text = target.dataset.errorFor === "request" && field !== "request" ? error.message : reason;
    target.textContent = target.textContent ? `${target.textContent}; ${text}` : text;
    const control = target.dataset.errorFor === "request" ? null : controlOf(form, target);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby", target.id);
      first = first || control;
    }
  }
  if (error.status === 403) markReadOnly(error.message);
  (first || slot("request"))?.focus?.();
}

function controlOf(form, slot) {
  if (!slot.id) slot.id = `err-${Math.random().toString(36).slice(2)}`;
  const name = slot.dataset.errorFor;
  return form.querySelector(`[name="${CSS.escape(name)}"]:not([type=checkbox])`) || null;
}

function clearErrors(form) {
  form.querySelectorAll("[data-error-for]").forEach((slot) => (slot.textContent = ""));
  form.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
}

// A `read` token gets 403 on every change: say so once and turn the action buttons off.
function markReadOnly(detail) {
  state.readOnly = true;
  disableWrites();
  $("#who").textContent = `This token can only read: actions are unavailable (${detail})`;
  $("#who").hidden = false;
}

function disableWrites() {
  if (state.readOnly) document.querySelectorAll("[data-write]").forEach((button) => (button.disabled = true));
}

// -- dialogs: showModal() keeps focus inside and Escape closes; focus returns to the opener -----------

function openDialog(dialog, opener) {
  dialog.returnTo = opener || document.activeElement;
  dialog.showModal();
}

// The close event comes a task after the dialog closed, when the browser has already given focus back
// (or lost it to a re-rendered opener): it only picks focus up when nothing holds it, never taking it
// from where the user has moved on to since.
for (const dialog of document.querySelectorAll("dialog")) {
  dialog.addEventListener("close", () => {
    const active = document.activeElement;
    const lost = !active || active === document.body || dialog.contains(active);
    if (lost && dialog.returnTo?.isConnected) dialog.returnTo.focus();
  });
  dialog.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => dialog.close()));
}

function confirmAction(text, yesLabel, opener) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  $("#confirm-yes").textContent = yesLabel;
  return new Promise((resolve) => {
    const yes = () => { dialog.close(); resolve(true); };
    $("#confirm-yes").addEventListener("click", yes, { once: true });
    dialog.addEventListener("close", () => { $("#confirm-yes").removeEventListener("click", yes); resolve(false); }, { once: true });
    openDialog(dialog, opener);
  });
}

function showSecret(subscription, opener) {
  $("#secret-value").value = subscription.secret;
  const grace = subscription.previous_secret_expires_at;
  $("#secret-grace").textContent = grace ? new Date(grace).toLocaleString() : "now (there was none)";
  openDialog($("#secret-dialog"), opener);
  $("#secret-value").select();
}

// Shown once: the value leaves the page when the dialog closes (nothing keeps it in the DOM).
$("#secret-dialog").addEventListener("close", () => ($("#secret-value").value = ""));

$("#secret-copy").addEventListener("click", async () => {
  await navigator.clipboard?.writeText($("#secret-value").value).catch(() => null);
  notify("Secret copied");
});

// -- signing in and out --------------------------------------------------------------------------------

async function enter() {
  $("#sign-in").hidden = true;
  $("#portal").hidden = false;
  $("#sign-out").hidden = false;
  try {
    state.resources = (await api("GET", "/resources?limit=200")).items;
    await loadSubscriptions();
    $("#subs-title").focus?.();
  } catch (error) {
    handle(error, $("#subs-error"));
  }
}

function signOut(message = "") {
  token.clear();
  Object.assign(state, { subs: [], selected: null, readOnly: false });
  $("#portal").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").hidden = true;
  $("#sign-in").hidden = false;
  $("#token").value = "";
  $("#token-error").textContent = message;
  $("#token").focus();
}

// Errors outside a form: a 401 ends the session (revoked or expired token), others go to `slot`.
function handle(error, slot) {
  if (!(error instanceof ApiError)) throw error;
  if (error.status === 401) return signOut(`The token was refused: ${error.message}`);
  if (error.status === 403) markReadOnly(error.message);
  slot.textContent = error.message;
  slot.focus?.();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("#token").value.trim();
  if (!value) {
    $("#token-error").textContent = "Paste a token first";
    return $("#token").focus();
  }
  token.set(value);
  enter();
});
$("#sign-out").addEventListener("click", () => signOut());

// -- the subscription list -----------------------------------------------------------------------------

async function loadSubscriptions() {
  $("#subs-error").textContent = "";
  const subs = [];
  let cursor = null;
  do {
    const page = await api("GET", `/subscriptions?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    subs.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  state.subs = subs;
  renderSubscriptions();
}

function health(sub) {
  const counts = h("dd", { "data-counts": sub.id }, `held ${sub.held_deliveries} · pending … · failed …`);
  // Pending and failed are not fields of the subscription: counted from its delivery log.
  Promise.all([countDeliveries(sub.id, ["pending", "delivering"]), countDeliveries(sub.id, ["failed"])])
    .then(([pending, failed]) => (counts.textContent = `held ${sub.held_deliveries} · pending ${pending} · failed ${failed}`))
    .catch(() => (counts.textContent = `held ${sub.held_deliveries}`));
  return h("dl", { className: "health" },
    h("dt", {}, "Failing since"), h("dd", { "data-health": "failing-since" }, when(sub.failing_since)),
    h("dt", {}, "Last success"), h("dd", { "data-health": "last-success" }, when(sub.last_success_at)),
    h("dt", {}, "Deliveries"), counts);
}

function subItem(sub) {
  return h("li", { className: "sub", "data-sub": sub.id },
    h("button", { type: "button", className: "sub-open", "aria-current": sub.id === state.selected ? "true" : false,
      onclick: () => openSubscription(sub.id) },
      h("span", { className: "target" }, sub.target_url),
      h("span", { className: "meta" }, badge(sub.status), ` ${sub.resource} · ${sub.events.join(", ")}`)),
    sub.description ? h("p", { className: "hint" }, sub.description) : null,
    sub.disabled_reason ? h("p", { className: "hint" }, `Disabled: ${sub.disabled_reason}`) : null,
    health(sub));
}

function renderSubscriptions() {
  const list = $("#subs");
  list.replaceChildren(...state.subs.map(subItem));
  if (!state.subs.length) list.append(h("li", { className: "empty" }, "No subscriptions yet."));
  disableWrites();
}

// The selected subscription's health (its list entry and facts) as the API has it now: refreshed with
// its log, so a delivery that failed or is held shows in the counts without reloading the whole list.
async function refreshHealth(id) {
  const sub = await api("GET", path("/subscriptions/{}", id));
  const index = state.subs.findIndex((s) => s.id === id);
  if (index < 0 || id !== state.selected) return;
  state.subs[index] = sub;
  const item = $(`#subs [data-sub="${CSS.escape(id)}"]`);
  const hadFocus = item?.contains(document.activeElement);
  item?.replaceWith(subItem(sub));
  $("#detail .facts")?.replaceWith(facts(sub));
  if (hadFocus) $(`#subs [data-sub="${CSS.escape(id)}"] .sub-open`)?.focus();
  disableWrites();
}

$("#reload-subs").addEventListener("click", () => loadSubscriptions().catch((e) => handle(e, $("#subs-error"))));
$("#new-sub").addEventListener("click", (event) => openForm(null, event.currentTarget));

// -- one subscription: details, actions, replay, delivery log ------------------------------------------

function openSubscription(id) {
  state.selected = id;
  state.statusFilter = "";
  renderSubscriptions();
  renderDetail();
  $("#detail-title").focus();
  loadDeliveries().catch((e) => handle(e, $("#action-error")));
}

function facts(sub) {
  return h("dl", { className: "facts" },
    h("dt", {}, "Id"), h("dd", {}, h("code", {}, sub.id)),
    h("dt", {}, "Target"), h("dd", {}, sub.target_url),
    h("dt", {}, "Status"), h("dd", {}, badge(sub.status), sub.disabled_reason ? ` ${sub.disabled_reason}` : ""),
    h("dt", {}, "Resource"), h("dd", {}, sub.resource),
    h("dt", {}, "Events"), h("dd", {}, sub.events.join(", ")),
    h("dt", {}, "Filter"), h("dd", {}, Object.keys(sub.filter).length ? JSON.stringify(sub.filter) : "none"),
    sub.columns !== undefined ? [h("dt", {}, "Columns"), h("dd", {}, sub.columns ? sub.columns.join(", ") : "all")] : null,
    sub.headers !== undefined ? [h("dt", {}, "Headers"), h("dd", {}, Object.keys(sub.headers || {}).join(", ") || "none")] : null,
    h("dt", {}, "Failing since"), h("dd", { "data-health": "failing-since" }, when(sub.failing_since)),
    h("dt", {}, "Last success"), h("dd", { "data-health": "last-success" }, when(sub.last_success_at)));
}

function renderDetail() {
  const sub = state.subs.find((s) => s.id === state.selected);
  const detail = $("#detail");
  if (!sub) {
    detail.hidden = true;
    return;
  }
  const action = (label, run, extra = {}) =>
    h("button", { type: "button", "data-write": true, disabled: state.readOnly, ...extra, onclick: (e) => act(run, e.currentTarget) }, label);
  const resume = sub.status === "active" ? null : sub.status === "paused" ? "Resume" : "Re-enable";
  detail.replaceChildren(
    h("h2", { id: "detail-title", tabindex: "-1" }, sub.description || sub.target_url),
    facts(sub),
    h("div", { className: "row actions" },
      h("button", { type: "button", "data-write": true, disabled: state.readOnly, onclick: (e) => openForm(sub, e.currentTarget) }, "Edit"),
      resume ? action(resume, () => setStatus(sub, "active")) : action("Pause", () => setStatus(sub, "paused")),
      action("Send test event", () => sendTest(sub)),
      action("Rotate secret", (opener) => rotate(sub, opener)),
      action("Delete", (opener) => remove(sub, opener), { className: "danger" })),
    h("p", { id: "action-error", className: "form-error", role: "alert", tabindex: "-1" }),
    replayForm(sub),
    h("div", { className: "row" },
      h("h3", { id: "log-title" }, "Delivery log"),
      h("label", { for: "log-status", className: "inline" }, "Status"),
      h("select", { id: "log-status", onchange: (e) => { state.statusFilter = e.target.value; loadDeliveries().catch((x) => handle(x, $("#action-error"))); } },
        h("option", { value: "" }, "all"), DELIVERY_STATUSES.map((s) => h("option", { value: s }, s))),
      h("button", { type: "button", className: "quiet", onclick: () => loadDeliveries().catch((x) => handle(x, $("#action-error"))) }, "Refresh log")),
    h("ul", { id: "log", className: "log", "aria-labelledby": "log-title" }),
    h("button", { type: "button", id: "log-more", className: "quiet", hidden: true, onclick: () => loadDeliveries(true).catch((x) => handle(x, $("#action-error"))) }, "Older deliveries"));
  $("#log-status").value = state.statusFilter;
  detail.hidden = false;
}

// Runs an action of the detail panel; its refusal (e.g. 403 for a read token, 429) shows under the buttons.
// A busy button ignores clicks rather than being disabled: a disabled one could not take focus back
// from a dialog the action opened.
async function act(run, button) {
  if (button.getAttribute("aria-busy") === "true") return;
  $("#action-error").textContent = "";
  button.setAttribute("aria-busy", "true");
  try {
    await run(button);
  } catch (error) {
    handle(error, $("#action-error"));
  } finally {
    button.removeAttribute("aria-busy");
  }
}

async function refreshSelected(focusLabel) {
  await loadSubscriptions();
  renderDetail();
  await loadDeliveries();
  const again = focusLabel && [...document.querySelectorAll("#detail .actions button")].find((b) => b.textContent === focusLabel);
  (again || $("#detail-title"))?.focus();
}

async function setStatus(sub, status) {
  await api("PATCH", path("/subscriptions/{}", sub.id), { status });
  notify(status === "paused" ? "Paused: new deliveries are held until you resume" : "Active: held deliveries go out now");
  await refreshSelected(status === "paused" ? "Resume" : "Pause");
}

async function sendTest(sub) {
  const delivery = await api("POST", path("/subscriptions/{}/test", sub.id));
  notify(`Test event queued as ${delivery.id}`);
  await loadDeliveries();
}

async function rotate(sub, opener) {
  const rotated = await api("POST", path("/subscriptions/{}/secret/rotate", sub.id));
  showSecret(rotated, opener);
  await loadSubscriptions();
}

async function remove(sub, opener) {
  if (!(await confirmAction(`Delete the subscription to ${sub.target_url}? Its pending deliveries are cancelled.`, "Delete", opener))) return;
  await api("DELETE", path("/subscriptions/{}", sub.id));
  state.selected = null;
  notify("Subscription deleted");
  await loadSubscriptions();
  renderDetail();
  $("#subs-title").focus();
}

function replayForm(sub) {
  const form = h("form", { className: "replay", novalidate: true, "aria-labelledby": "replay-title" },
    h("h3", { id: "replay-title" }, "Replay a time window"),
    h("p", { className: "form-error", "data-error-for": "request", role: "alert", tabindex: "-1" }),
    h("div", { className: "row" },
      h("div", {}, h("label", { for: "replay-since" }, "From"), h("input", { id: "replay-since", name: "since", type: "datetime-local", required: true }),
        h("p", { className: "field-error", "data-error-for": "since" })),
      h("div", {}, h("label", { for: "replay-until" }, "Until (empty: now)"), h("input", { id: "replay-until", name: "until", type: "datetime-local" }),
        h("p", { className: "field-error", "data-error-for": "until" }))),
    h("button", { type: "submit", "data-write": true, disabled: state.readOnly }, "Replay"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const since = form.since.value;
    if (!since) return showErrors(form, new ApiError(400, { detail: "since: required", errors: [{ field: "since", reason: "required" }] }));
    const body = { since: new Date(since).toISOString() };
    if (form.until.value) body.until = new Date(form.until.value).toISOString();
    try {
      const result = await api("POST", path("/subscriptions/{}/replay", sub.id), body);
      notify(`${result.count} event${result.count === 1 ? "" : "s"} queued again${result.truncated ? " (truncated: replay the rest next)" : ""}`);
      await loadDeliveries();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) return handle(error, $("#action-error"));
      showErrors(form, error);
    }
  });
  return form;
}

async function loadDeliveries(more = false) {
  const id = state.selected;
  const query = new URLSearchParams({ limit: "20" });
  if (state.statusFilter) query.set("status", state.statusFilter);
  if (more && state.cursor) query.set("cursor", state.cursor);
  const page = await api("GET", `${path("/subscriptions/{}/deliveries", id)}?${query}`);
  if (id !== state.selected || !$("#log")) return;
  const open = new Set([...document.querySelectorAll("#log details[open]")].map((d) => d.dataset.id));
  const items = page.items.map((d) => renderDelivery(d, open.has(d.id)));
  if (more) $("#log").append(...items);
  else $("#log").replaceChildren(...items);
  if (!$("#log").children.length) $("#log").append(h("li", { className: "empty" }, "No deliveries yet."));
  state.cursor = page.next_cursor;
  $("#log-more").hidden = !page.next_cursor;
  if (!more) await refreshHealth(id);
}

function renderDelivery(d, open) {
  const retryable = !["pending", "delivering", "held"].includes(d.status);
  const last = d.last_status_code ?? d.last_error ?? "";
  return h("li", { className: "delivery", "data-delivery": d.id },
    h("details", { "data-id": d.id, open },
      h("summary", {}, badge(d.status), ` ${d.event_type}`, d.key ? ` · key ${d.key}` : "",
        ` · ${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`, last !== "" ? ` · last ${last}` : "",
        h("span", { className: "hint" }, " · ", when(d.created_at))),
      h("p", { className: "hint" }, "Delivery ", h("code", {}, d.id),
        d.status === "pending" ? [" · next attempt ", when(d.next_attempt_at)] : ""),
      attemptsTable(d.attempt_log),
      h("h4", {}, "Event body"),
      d.payload !== undefined && d.payload !== null
        ? h("pre", { className: "body", tabindex: "0" }, JSON.stringify(d.payload, null, 2))
        : h("p", { className: "hint" }, d.event_id ? `Event ${d.event_id}: its body is no longer kept (pruned).` : "No body recorded.")),
    retryable
      ? h("button", { type: "button", "data-write": true, disabled: state.readOnly, className: "quiet",
          "aria-label": `Retry delivery ${d.id}`, onclick: (e) => act(() => retry(d), e.currentTarget) }, "Retry")
      : null);
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { className: "hint" }, "No attempt yet.");
  return h("div", { className: "scroll", tabindex: "0", role: "region", "aria-label": "Attempts" },
    h("table", {},
      h("thead", {}, h("tr", {}, ["When", "Status", "Duration", "Error", "Response"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, attempts.map((a) => h("tr", {},
        h("td", {}, when(a.attempted_at)), h("td", {}, a.status_code ?? "—"), h("td", {}, `${a.duration_ms} ms`),
        h("td", {}, a.error ?? ""), h("td", {}, h("code", {}, a.response_body ?? "")))))));
}

async function retry(delivery) {
  const again = await api("POST", path("/deliveries/{}/retry", delivery.id));
  notify(`Delivery ${again.id} is ${again.status} again`);
  await loadDeliveries();
  $(`[data-delivery="${CSS.escape(again.id)}"] summary`)?.focus();
}

// -- create and edit -----------------------------------------------------------------------------------

function filterFields(resourceName, filter = {}) {
  const resource = state.resources.find((r) => r.name === resourceName);
  const columns = resource ? resource.scope_columns : [];
  $("#f-filter").hidden = !columns.length;
  $("#f-filter-fields").replaceChildren(...columns.map((column) => h("div", {},
    h("label", { for: `f-filter-${column}` }, column),
    h("input", { id: `f-filter-${column}`, name: `filter.${column}`, "data-filter": column, value: filter[column] ?? "" }),
    h("p", { className: "field-error", "data-error-for": `filter.${column}` }))));
}

function openForm(sub, opener) {
  const form = $("#sub-form");
  form.reset();
  clearErrors(form);
  form.sub = sub;
  $("#sub-dialog-title").textContent = sub ? "Edit subscription" : "New subscription";
  $("#f-resource").replaceChildren(...state.resources.map((r) => h("option", { value: r.name }, r.name)));
  $("#f-resource").disabled = Boolean(sub);
  if (sub) {
    form.target_url.value = sub.target_url;
    $("#f-resource").value = sub.resource;
    form.querySelectorAll("[name=events]").forEach((box) => (box.checked = sub.events.includes(box.value)));
    form.description.value = sub.description ?? "";
    form.columns.value = sub.columns ? sub.columns.join(", ") : "";
  }
  form.columnsBefore = form.columns.value;
  filterFields($("#f-resource").value, sub ? sub.filter : {});
  openDialog($("#sub-dialog"), opener);
}

$("#f-resource").addEventListener("change", (e) => filterFields(e.target.value));

// The body holds what the form says; `columns` and `headers` only when the user filled them in (an API
// without those fields refuses unknown ones).
function formBody(form) {
  const body = {
    target_url: form.target_url.value.trim(),
    events: [...form.querySelectorAll("[name=events]:checked")].map((box) => box.value),
    filter: Object.fromEntries([...form.querySelectorAll("[data-filter]")]
      .filter((input) => input.value.trim() !== "").map((input) => [input.dataset.filter, input.value.trim()])),
    description: form.description.value.trim() || null,
  };
  if (!form.sub) body.resource = form.resource.value;
  if (form.columns.value !== form.columnsBefore) {
    const names = form.columns.value.split(",").map((c) => c.trim()).filter(Boolean);
    body.columns = names.length ? names : null;
  }
  if (form.headers.value.trim()) {
    body.headers = Object.fromEntries(form.headers.value.split("\n").filter((line) => line.trim())
      .map((line) => [line.split(":")[0].trim(), line.slice(line.indexOf(":") + 1).trim()]));
  }
  return body;
}

$("#sub-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const sub = form.sub;
  try {
    const saved = sub
      ? await api("PATCH", path("/subscriptions/{}", sub.id), formBody(form))
      : await api("POST", "/subscriptions", formBody(form));
    const dialog = $("#sub-dialog");
    dialog.close();
    state.selected = saved.id;
    await refreshSelected();
    notify(sub ? "Subscription saved" : "Subscription created");
    if (saved.secret) showSecret(saved, $("#detail-title"));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 401) {
      $("#sub-dialog").close();
      return handle(error, $("#subs-error"));
    }
    showErrors(form, error);
  }
});

// -- start -----------------------------------------------------------------------------------------------

takeTokenFromFragment();
if (token.get()) enter();
else $("#token").focus();

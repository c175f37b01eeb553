// The task board: reads /v1 (tasks, stats, accounts, journal) and follows
// /v1/task-events/stream. Filters live in the URL. No framework, no build step.
"use strict";

const KINDS = ["collection_call", "promise_reminder", "promise_check", "third_party_call", "field_visit",
  "supervisor_review", "formal_letter", "pre_due_reminder", "callback", "contact_repair",
  "payment_verification", "hold_review"];
const CHANNELS = ["phone_mobile", "phone_work", "phone_home", "sms", "contact_person", "visit", "letter", "none"];

const url = new URL(location.href);
const token = url.searchParams.get("access_token");
const state = {
  tab: url.searchParams.get("tab") || "scheduled",
  rows: new Map(), // task_id -> task data (with state), the highest revision seen
  cursor: null,
};
const $ = (sel) => document.querySelector(sel);
const form = $("#filters");

function api(path, params) {
  const u = new URL(path, location.href);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v != null) u.searchParams.set(k, v);
  if (token) u.searchParams.set("access_token", token);
  return u;
}
async function getJSON(path, params) {
  const r = await fetch(api(path, params));
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function fill(select, values) {
  for (const v of values) select.append(new Option(v.replaceAll("_", " "), v));
}
fill(form.kind, KINDS);
fill(form.channel, CHANNELS);

// Filters <-> URL. Due window inputs are in the viewer's local time.
function filters() {
  const f = {};
  for (const el of form.elements) {
    if (!el.name || !el.value) continue;
    f[el.name] = el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value;
  }
  return f;
}
function restoreFilters() {
  for (const el of form.elements) {
    const v = url.searchParams.get(el.name);
    if (!el.name || v == null) continue;
    if (el.type === "datetime-local") {
      const d = new Date(v);
      el.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    } else el.value = v;
  }
}
function saveURL() {
  const u = new URL(location.href);
  u.search = "";
  if (token) u.searchParams.set("access_token", token);
  u.searchParams.set("tab", state.tab);
  for (const [k, v] of Object.entries(filters())) u.searchParams.set(k, v);
  history.replaceState(null, "", u);
}

function matches(t) {
  if (t.state !== state.tab) return false;
  const f = filters();
  if (f.kind && t.kind !== f.kind) return false;
  if (f.channel && t.channel !== f.channel) return false;
  if (f.bucket && t.account.bucket !== f.bucket) return false;
  if (f.priority && String(t.priority) !== f.priority) return false;
  if (f.tone && t.tone !== f.tone) return false;
  if (f.account_id && t.account_id !== f.account_id) return false;
  if (f.due_after && new Date(t.due_at) < new Date(f.due_after)) return false;
  if (f.due_before && new Date(t.due_at) >= new Date(f.due_before)) return false;
  return true;
}

function fmt(instant, zone) {
  return new Intl.DateTimeFormat(undefined, {
    timeZone: zone, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  }).format(new Date(instant));
}
function dueCell(t) {
  const mode = $("#tzmode").value;
  const customer = fmt(t.due_at, t.timezone || "UTC");
  const mine = fmt(t.due_at, undefined);
  if (mode === "customer") return customer;
  if (mode === "viewer") return mine;
  return `${customer}<small>${mine} (mine)</small>`;
}
function money(m) {
  if (!m) return "";
  return `${(m.minor / 100).toLocaleString(undefined, { minimumFractionDigits: 2 })} ${m.currency}`;
}
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function rowHTML(t) {
  const a = t.account || {};
  return `<td class="due">${dueCell(t)}</td><td>${esc(t.account_id)}</td><td>${esc(t.kind.replaceAll("_", " "))}</td>` +
    `<td>${esc(t.channel.replaceAll("_", " "))}</td><td class="p${t.priority}">${t.priority}</td>` +
    `<td class="tone-${esc(t.tone)}">${esc(t.tone)}</td><td>${esc(a.bucket)}</td><td>${a.dpd ?? ""}</td>` +
    `<td>${money(a.overdue_amount)}</td><td class="reason" title="${esc(t.cancel_reason || t.reason)}">${esc(t.cancel_reason || t.reason)}</td>`;
}

function render() {
  const body = $("#tasks tbody");
  const shown = [...state.rows.values()].filter(matches)
    .sort((x, y) => (x.due_at < y.due_at ? -1 : x.due_at > y.due_at ? 1 : x.task_id < y.task_id ? -1 : 1));
  const existing = new Map([...body.children].map((tr) => [tr.dataset.taskId, tr]));
  const frag = document.createDocumentFragment();
  for (const t of shown) {
    let tr = existing.get(t.task_id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.taskId = t.task_id;
      if (t._fresh) tr.classList.add("fresh");
    }
    if (tr.dataset.rev !== String(t.revision) || tr.dataset.mode !== $("#tzmode").value) {
      tr.innerHTML = rowHTML(t);
      tr.dataset.rev = String(t.revision);
      tr.dataset.mode = $("#tzmode").value;
    }
    tr.dataset.account = t.account_id;
    tr.dataset.state = t.state;
    frag.append(tr);
  }
  body.replaceChildren(frag);
  $("#list-note").textContent = shown.length ? "" : "no tasks match";
}

// Task events carry no zone: the board learns an account's from its rows or, for an
// account it has not seen, asks /v1/accounts once.
const zones = new Map();
function zoneOf(t) {
  if (t.timezone) { zones.set(t.account_id, t.timezone); return; }
  if (zones.has(t.account_id)) { t.timezone = zones.get(t.account_id); return; }
  zones.set(t.account_id, null);
  getJSON(`/v1/accounts/${encodeURIComponent(t.account_id)}`).then((acc) => {
    zones.set(t.account_id, acc.timezone);
    for (const r of state.rows.values()) if (r.account_id === t.account_id) r.timezone = acc.timezone;
    for (const tr of document.querySelectorAll("#tasks tbody tr")) if (tr.dataset.account === t.account_id) tr.dataset.rev = "";
    render();
  }).catch(console.error);
}

function upsert(t, fresh) {
  zoneOf(t);
  const old = state.rows.get(t.task_id);
  if (old && (old.revision || 0) > (t.revision || 0)) return;
  if (old && old.state === "cancelled" && t.state !== "cancelled") return; // final
  if (!t.timezone && old) t.timezone = old.timezone;
  t._fresh = fresh;
  state.rows.set(t.task_id, t);
}

async function loadTasks(more) {
  if (state.tab === "dead") return;
  const params = { ...filters(), state: state.tab, limit: 200 };
  if (more && state.cursor) params.cursor = state.cursor;
  const page = await getJSON("/v1/tasks", params);
  if (!more) for (const [id, t] of state.rows) if (t.state === state.tab) state.rows.delete(id);
  for (const t of page.items) upsert(t, false);
  state.cursor = page.next_cursor;
  $("#load-more").hidden = !page.next_cursor;
  render();
}

function chart(hours) {
  const el = $("#chart");
  if (!hours.length) { el.innerHTML = '<span class="muted">nothing due in the next 24 h</span>'; return; }
  const start = new Date(hours[0].hour).getTime();
  const slots = Array.from({ length: 24 }, (_, i) => ({ t: start + i * 3600e3, n: 0 }));
  for (const h of hours) {
    const i = Math.round((new Date(h.hour).getTime() - start) / 3600e3);
    if (i >= 0 && i < 24) slots[i].n = h.count;
  }
  const max = Math.max(1, ...slots.map((s) => s.n));
  const w = 100 / 24;
  el.innerHTML = `<svg viewBox="0 0 100 40" preserveAspectRatio="none">${slots.map((s, i) =>
    `<rect x="${i * w + 0.3}" y="${30 - (28 * s.n) / max}" width="${w - 0.6}" height="${(28 * s.n) / max}"><title>${new Date(s.t).toLocaleString()}: ${s.n}</title></rect>`).join("")}</svg>`;
  el.insertAdjacentHTML("afterbegin", `<span class="muted" style="font-size:11px">due per hour, next 24 h (max ${max})</span>`);
}

async function loadStats() {
  const s = await getJSON("/v1/stats");
  for (const k of ["scheduled", "due", "cancelled"]) $(`#count-${k}`).textContent = s.by_state[k] ?? 0;
  $("#backlog").textContent = `outbox backlog ${s.outbox_backlog}`;
  chart(s.due_per_hour);
  const dead = $("#dead-queues tbody");
  if (s.dead_letters) {
    $("#count-dead").textContent = s.dead_letters.reduce((n, q) => n + q.count, 0);
    dead.innerHTML = s.dead_letters.map((q) => `<tr><td>${esc(q.queue)}</td><td>${q.count}</td></tr>`).join("");
  } else {
    dead.innerHTML = '<tr><td colspan="2" class="muted">not counted: the API has no AMQP_URL (collectionsctl dlq list)</td></tr>';
  }
  $("#dead-reasons tbody").innerHTML = s.dead_letter_reasons.map((r) =>
    `<tr><td>${esc(r.queue)}</td><td>${esc(r.reason)}</td><td>${r.count}</td><td>${esc(fmt(r.last_at))}</td><td class="reason" title="${esc(r.last_detail)}">${esc(r.last_detail)}</td></tr>`).join("")
    || '<tr><td colspan="5" class="muted">none</td></tr>';
}
let statsTimer = null;
function statsSoon() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(() => loadStats().catch(console.error), 500);
}

function follow() {
  const es = new EventSource(api("/v1/task-events/stream"));
  es.onopen = () => { $("#live").textContent = "live"; $("#live").className = "live on"; };
  es.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "live off"; };
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    const t = { ...ev.data, state: ev.type.replace("task.", "") };
    upsert(t, true);
    render();
    statsSoon();
  };
}

async function openTimeline(account) {
  const [acc, journal] = await Promise.all([
    getJSON(`/v1/accounts/${encodeURIComponent(account)}`),
    getJSON(`/v1/accounts/${encodeURIComponent(account)}/journal`, { limit: 500 }),
  ]);
  const s = acc.summary || {};
  $("#tl-title").textContent = `Account ${acc.account_id}`;
  const facts = [
    ["status", acc.status], ["zone", acc.timezone], ["DPD / bucket", `${s.dpd ?? ""} / ${s.bucket ?? ""}`],
    ["overdue", money(s.overdue_amount)], ["broken promises", s.broken_promises],
    ["open promise", acc.open_promise ? `${money(acc.open_promise.amount)} by ${acc.open_promise.promised_at ? fmt(acc.open_promise.promised_at, acc.timezone) : "?"}` : "none"],
    ["holds", (s.holds || []).join(", ") || "none"], ["restrictions", (s.restrictions || []).join(", ") || "none"],
    ["contacts 24 h / 7 d", `${acc.contacts_last_day} / ${acc.contacts_last_7_days}`], ["policy", acc.policy_version],
  ];
  $("#tl-summary").innerHTML = facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  $("#tl-open").innerHTML = acc.open_tasks.map((t) =>
    `<li>${esc(fmt(t.due_at, acc.timezone))} · ${esc(t.kind.replaceAll("_", " "))} · ${esc(t.channel)}</li>`).join("") || '<li class="muted">none</li>';
  $("#tl-journal").innerHTML = journal.items.map((l) =>
    `<li><span class="k">${esc(l.kind.replaceAll("_", " "))}</span> <span class="t">${esc(fmt(l.at, acc.timezone))} · policy ${esc(l.policy_version)}</span><br>${esc(l.detail)}</li>`).join("");
  $("#timeline").hidden = false;
  $("#timeline").dataset.account = account;
}

function selectTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === tab);
  const dead = tab === "dead";
  $("#tasks").hidden = dead; $("#filters").hidden = dead; $("#more").hidden = dead;
  $("#dead").hidden = !dead;
  saveURL();
  if (!dead) loadTasks(false).catch(console.error);
}

document.querySelector("#tabs").addEventListener("click", (e) => {
  const b = e.target.closest(".tab");
  if (b) selectTab(b.dataset.tab);
});
form.addEventListener("change", () => { saveURL(); loadTasks(false).catch(console.error); });
form.addEventListener("reset", () => setTimeout(() => { saveURL(); loadTasks(false).catch(console.error); }));
$("#tzmode").addEventListener("change", render);
$("#load-more").addEventListener("click", () => loadTasks(true).catch(console.error));
$("#tasks tbody").addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (tr) openTimeline(tr.dataset.account).catch(console.error);
});
$("#close-timeline").addEventListener("click", () => { $("#timeline").hidden = true; });

restoreFilters();
follow();
selectTab(state.tab);
loadStats().catch(console.error);
setInterval(() => loadStats().catch(console.error), 15000);

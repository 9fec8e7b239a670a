// The streamrec page: one viewer's lists (before and after the re-rank), live features, and events published
// from here through the ingest endpoint, with the seconds until the features show them.
// Everything from the server is put in the page as text (titles may hold anything), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: "", config: null, titles: new Map(), busy: false, published: 0 };
const FALLBACKS = {
  cold_start: "a viewer never seen: context and popularity only",
  features_unavailable: "the feature store did not answer: no live features",
  model_unavailable: "the model server is down: retrieval order",
  model_error: "the model rejected the request: retrieval order",
  rerank_timeout: "the LLM did not answer within its budget: Wide & Deep order",
  rerank_busy: "the LLM is busy: Wide & Deep order",
  rerank_error: "the LLM call failed: Wide & Deep order",
  rerank_invalid: "the LLM answered something unusable: Wide & Deep order",
  rerank_pending: "the re-rank is being computed: Wide & Deep order for now",
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "data") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function setStatus(text, warn = false) {
  $("status").textContent = text;
  $("status").className = warn ? "note warn" : "note";
}

function headers(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

async function getJson(path) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) throw new Error(`${path.split("?")[0]}: HTTP ${r.status} ${await errorText(r)}`);
  return r.json();
}

async function errorText(r) {
  try {
    const body = await r.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch (_) {
    return r.statusText;
  }
}

function uuid4() {
  if (window.crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------------------------------------------------------------- asking for a list

function query() {
  const p = new URLSearchParams({ user_id: $("user").value.trim(), k: $("k").value, compare: "true" });
  for (const id of ["device", "hour", "q"]) if ($(id).value.trim()) p.set(id, $(id).value.trim());
  return p;
}

async function recommend() {
  const body = await getJson(`/recommend?${query()}`);
  render(body);
  return body;
}

function render(body) {
  for (const it of [...body.items, ...(body.before_rerank || [])]) state.titles.set(it.item_id, it.title);
  const beforeIds = (body.before_rerank || []).map((it) => it.item_id);
  fill($("before"), body.before_rerank || [], () => false);
  fill($("final"), body.items, (it, i) => beforeIds[i] !== it.item_id);
  const badge = $("rerank-status");
  badge.textContent = `re-rank: ${body.rerank.status}${body.rerank.mode ? ` (${body.rerank.mode})` : ""}`;
  badge.className = body.rerank.applied || body.rerank.status === "disabled" ? "badge" : "badge fallback";
  $("flags").textContent = body.fallbacks.length
    ? "Fell back: " + body.fallbacks.map((f) => `${f} (${FALLBACKS[f] || "see the API docs"})`).join("; ")
    : "";
  renderFeatures(body);
}

function fill(list, items, moved) {
  list.replaceChildren(...items.map((it, i) => {
    const s = it.scores;
    const scores = [`retrieval ${s.retrieval.toFixed(3)} (${it.source})`,
      `W&D ${s.wide_deep === null ? "–" : s.wide_deep.toFixed(3)}`, `final ${s.final.toFixed(3)}`].join(" · ");
    return el("li", { class: moved(it, i) ? "moved" : "", data: { itemId: it.item_id } },
      el("div", { class: "title" }, it.title),
      el("div", { class: "genres" }, it.genres.join(", ")),
      el("div", { class: "scores" }, scores),
      el("div", { class: "reason" }, it.reason || ""),
      eventButtons(it));
  }));
}

function eventButtons(item) {
  return el("div", { class: "actions" },
    el("button", { type: "button", class: "small", onclick: () => publish(item, "click"),
      "aria-label": `click ${item.title}` }, "click"),
    el("button", { type: "button", class: "small", onclick: () => publish(item, "watch"),
      "aria-label": `watch ${item.title}` }, "watch"));
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
}

function renderFeatures(body) {
  const f = body.features, session = f.session || {}, ctx = f.context || {};
  const rows = [
    ["viewer", `${body.user_id}${body.cold_start ? " (cold start)" : ""}`],
    ["context", [ctx.daypart, ctx.device, ctx.is_weekend ? "weekend" : "weekday"].filter(Boolean).join(", ")],
    ["events", session.events_total ?? 0],
    ["this session", `${session.session_events ?? 0} events, ${seconds(session.session_length_s ?? 0)}`],
    ["feature age", f.found ? seconds(f.age_s) : "no live features"],
    ["profile", f.profile ? `${f.profile.profile_events} events, mostly ${f.profile.profile_top_genre}` : "none"],
  ];
  $("summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  const genres = state.config.genres;
  const values = Object.keys(genres).map((key) => [genres[key], Number(session[key] || 0)]);
  const top = Math.max(...values.map(([, v]) => v), 1e-9);
  values.sort((a, b) => b[1] - a[1]);
  $("affinity").replaceChildren(...values.map(([genre, v]) => el("div",
    { class: "bar", role: "listitem", data: { genre, value: v.toFixed(4) } },
    el("span", {}, genre),
    el("span", { class: "track" }, el("span", { class: "fill", style: `width: ${(100 * v / top).toFixed(1)}%` })),
    el("span", {}, v.toFixed(2)))));

  $("last-items").replaceChildren(...(session.last_items || []).map((id) =>
    el("li", {}, state.titles.has(id) ? `${state.titles.get(id)} (${id})` : id)));
  $("timings").tBodies[0].replaceChildren(...Object.entries(body.timings_ms).map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, v.toFixed(1)))));
}

// ---------------------------------------------------------------- publishing an event

async function publish(item, kind) {
  if (state.busy) return;
  state.busy = true;
  const seq = ++state.published;
  const user = $("user").value.trim();
  const ts = Date.now();
  const event = { event_id: uuid4(), event_type: kind, user_id: user, item_id: item.item_id, ts,
    device: $("device").value || "desktop", session_id: `${user}-web` };
  if (kind === "watch") event.watch_seconds = 1800;
  const fresh = $("freshness");
  fresh.className = "note";
  fresh.textContent = `publishing a ${kind} of “${item.title}”…`;
  delete fresh.dataset.seconds;
  try {
    const url = `${location.protocol}//${location.hostname}:${state.config.ingest_port}/events`;
    const r = await fetch(url, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify([event]) });
    if (!r.ok) throw new Error(`ingest: HTTP ${r.status} ${await errorText(r)}`);
    const [result] = (await r.json()).results;
    if (result.status !== "accepted") throw new Error(`ingest rejected the event: ${result.reason}: ${result.detail}`);
  } catch (e) {
    fresh.className = "note warn";
    fresh.textContent = String(e.message || e);
    return;
  } finally {
    state.busy = false;
  }
  await waitVisible(seq, ts, kind, item);
}

// Past the budget the page says so but keeps watching (a cold or restarting stream job catches up), until the
// give-up time has passed or a newer event is published, which then owns the note.
async function waitVisible(seq, ts, kind, item) {
  const fresh = $("freshness");
  const { freshness_budget_s: budget, freshness_give_up_s: giveUp } = state.config;
  const what = `${kind} of “${item.title}”`;
  for (;;) {
    if (seq !== state.published) return;
    let body = null;
    try {
      body = await recommend();
    } catch (e) {
      fresh.className = "note warn";
      fresh.textContent = `checking the features failed: ${e.message || e}; still watching…`;
    }
    if (seq !== state.published) return;
    const elapsed = (Date.now() - ts) / 1000;
    const late = elapsed > budget;
    if ((body?.features?.last_event_ts_ms ?? 0) >= ts) {
      fresh.dataset.seconds = elapsed.toFixed(2);
      fresh.className = late ? "note warn" : "note";
      fresh.textContent = `${what} → visible in ${elapsed.toFixed(2)} s` + (late ? ` (over the ${budget} s budget)` : "");
      return;
    }
    if (late) {
      fresh.className = "note warn";
      if (elapsed > giveUp) {
        fresh.textContent = `${what} accepted, but not in the features after ${elapsed.toFixed(0)} s ` +
          "(is the stream job running?)";
        return;
      }
      fresh.textContent = `${what} accepted, not in the features yet after ${elapsed.toFixed(0)} s ` +
        "(over budget: is the stream job running?); still watching…";
    }
    await new Promise((done) => setTimeout(done, late ? 1000 : 250));
  }
}

// ---------------------------------------------------------------- the catalog and the report

async function findItems(ev) {
  ev?.preventDefault();
  const p = new URLSearchParams({ limit: "20" });
  if ($("genre").value) p.set("genre", $("genre").value);
  if ($("title").value.trim()) p.set("q", $("title").value.trim());
  try {
    const items = await getJson(`/items?${p}`);
    for (const it of items) state.titles.set(it.item_id, it.title);
    $("catalog").replaceChildren(...items.map((it) => el("li", { data: { itemId: it.item_id } },
      el("div", { class: "title" }, it.title), el("div", { class: "genres" }, it.genres.join(", ")),
      eventButtons(it))));
    if (!items.length) $("catalog").replaceChildren(el("li", {}, "no item matches"));
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}

function renderReport(report) {
  if (!report) return;
  $("report").replaceChildren(
    el("p", {}, "Latest: ", el("a", { href: report.markdown }, `${report.name} (report.md)`)),
    ...report.plots.map((src) => el("a", { href: src }, el("img", { src, alt: `plot ${src.split("/").pop()}` }))));
}

// ---------------------------------------------------------------- start

async function ask(ev) {
  ev?.preventDefault();
  if (!$("user").value.trim()) return;
  try {
    const body = await recommend();
    setStatus(`${body.items.length} items for ${body.user_id} in ${body.timings_ms.total.toFixed(0)} ms`);
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
}

async function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  state.token = hash.get("token") || sessionStorage.getItem("streamrec-token") || "";
  $("token").addEventListener("change", () => {
    state.token = $("token").value.trim();
    sessionStorage.setItem("streamrec-token", state.token);
    start();
  });
  try {
    state.config = await getJson("/ui/config");
  } catch (e) {
    $("token-field").hidden = false;
    setStatus(`${e.message}: paste a token with recommend:any (or recommend:read for one viewer) and events:write`, true);
    return;
  }
  const c = state.config;
  $("users").replaceChildren(...c.users.map((u) => el("option", { value: u })));
  $("device").replaceChildren(el("option", { value: "" }, "their last one"), ...c.devices.map((d) => el("option", { value: d }, d)));
  $("hour").replaceChildren(el("option", { value: "" }, "now"),
    ...Array.from({ length: 24 }, (_, h) => el("option", { value: String(h) }, `${String(h).padStart(2, "0")}:00`)));
  $("genre").replaceChildren(el("option", { value: "" }, "any"), ...Object.values(c.genres).map((g) => el("option", { value: g }, g)));
  $("k").max = String(c.top_n);
  $("user").value = hash.get("user") || $("user").value || c.users[0] || "";
  renderReport(c.report);
  await ask();
}

$("ask").addEventListener("submit", ask);
$("find").addEventListener("submit", findItems);
$("new-user").addEventListener("click", () => {
  $("user").value = `guest-${uuid4().slice(0, 8)}`;
  ask();
});
start();

// The edgebus web console: plain JS, no build step, no library (docs/HTTP.md).
// It reads /api/status every POLL_MS while visible, and tails a topic with an EventSource.
"use strict";

const POLL_MS = 5000;
const MAX_TAIL = 200;        // records kept in the list
const MAX_POINTS = 300;      // chart points per series
const MAX_LAG_SAMPLES = 120; // lag samples per group (10 minutes at POLL_MS)
const COLORS = ["#0b6bcb", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5f3dc4", "#087f5b"];

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const svgEl = (tag, attrs) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};
const bytes = (n) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};
const rate = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

const state = {
  prev: null,        // the previous status document and when it came
  rates: {},         // topic -> {in, out} records/s
  lag: {},           // group -> [lag samples]
  source: null,      // the EventSource of the tail
  series: new Map(), // chart: key -> [{t, v}]
};

// --- navigation ------------------------------------------------------------------------------
function show() {
  const [view, arg] = (location.hash.slice(1) || "overview").split("/");
  for (const s of document.querySelectorAll(".view")) s.classList.toggle("on", s.id === view);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.id === `nav-${view}`);
  if (view === "tail") startTail(arg ? decodeURIComponent(arg) : $("#tail-topic").value);
}
window.addEventListener("hashchange", show);

// --- status ----------------------------------------------------------------------------------
async function api(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  const doc = await r.json();
  if (!r.ok) throw new Error(doc.error ? `${doc.error.name}: ${doc.error.message}` : r.statusText);
  return doc;
}

async function poll() {
  if (document.hidden) return;
  try {
    const doc = await api("/api/status");
    const now = Date.now();
    if (state.prev) {
      const dt = (now - state.prev.at) / 1000;
      for (const [name, t] of Object.entries(doc.topics)) {
        const p = state.prev.doc.topics[name];
        if (p && dt > 0) state.rates[name] = {
          in: Math.max(0, (t.records_in - p.records_in) / dt),
          out: Math.max(0, (t.records_out - p.records_out) / dt),
        };
      }
    }
    state.prev = { doc, at: now };
    for (const g of doc.groups) {
      const s = (state.lag[g.group] ||= []);
      s.push(g.lag);
      if (s.length > MAX_LAG_SAMPLES) s.shift();
    }
    $("#conn").textContent = `up ${Math.round(doc.uptime_s)} s`;
    renderOverview(doc);
    renderTopics(doc);
    renderGroups(doc);
  } catch (e) {
    $("#conn").textContent = `offline: ${e.message}`;
  }
}

function card(label, value, warn) {
  const c = el("div", { class: warn ? "card warn" : "card" });
  c.append(el("span", { class: "muted" }, label), el("b", {}, value));
  return c;
}

function renderOverview(doc) {
  const d = doc.disk;
  let rin = 0, rout = 0;
  for (const r of Object.values(state.rates)) { rin += r.in; rout += r.out; }
  $("#cards").replaceChildren(
    card("disk free", `${bytes(d.free)} of ${bytes(d.total)}`, d.state !== "ok"),
    card("data", bytes(doc.data_bytes)),
    card("memory (RSS)", bytes(doc.rss_bytes)),
    card("CPU", doc.cpu_percent == null ? "-" : `${doc.cpu_percent}%`),
    card("records in/s", rate(rin)),
    card("records out/s", rate(rout)),
    card("clients", String(doc.clients.length)),
    card("version", doc.version),
  );
  const body = $("#clients tbody");
  body.replaceChildren(...doc.clients.map((c) => {
    const tr = el("tr");
    for (const v of [c.id, c.pid, c.uid, c.requests, bytes(c.output_bytes)]) tr.append(el("td", {}, String(v)));
    return tr;
  }));
}

function renderTopics(doc) {
  const names = Object.keys(doc.topics).filter((n) => !n.startsWith("__"));
  $("#topics-table tbody").replaceChildren(...names.map((name) => {
    const t = doc.topics[name];
    const r = state.rates[name] || { in: 0, out: 0 };
    const tr = el("tr", { "data-topic": name });
    const a = el("a", { href: `#tail/${encodeURIComponent(name)}` }, name);
    const td = el("td");
    td.append(a);
    tr.append(td, el("td", {}, String(t.partitions.length)),
      el("td", {}, t.partitions.map((p) => `${p.log_start_offset}\u2013${p.log_end_offset}`).join(", ")),
      el("td", {}, bytes(t.size_bytes)), el("td", {}, rate(r.in)), el("td", {}, rate(r.out)));
    return tr;
  }));
  const sel = $("#tail-topic");
  const current = sel.value;
  if (sel.options.length !== names.length || names.some((n, i) => sel.options[i].value !== n)) {
    sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(current)) sel.value = current;
  }
}

function sparkline(values, w = 600, h = 48) {
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  if (!values.length) return svg;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
  svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[0], "stroke-width": 2 }));
  return svg;
}

function renderGroups(doc) {
  const list = $("#groups-list");
  if (!doc.groups.length) { list.replaceChildren(el("p", { class: "muted" }, "No consumer groups.")); return; }
  list.replaceChildren(...doc.groups.map((g) => {
    const box = el("div", { class: "group", "data-group": g.group });
    box.append(el("strong", {}, g.group),
      el("span", { class: "muted" }, ` ${g.state}, ${g.members} member(s), lag ${g.lag}`),
      sparkline(state.lag[g.group] || []));
    const table = el("table");
    table.append(...g.partitions.map((p) => {
      const tr = el("tr");
      for (const v of [`${p.topic}/${p.partition}`, `committed ${p.committed}`, `end ${p.log_end_offset}`, `lag ${p.lag}`]) {
        tr.append(el("td", {}, v));
      }
      return tr;
    }));
    box.append(table);
    return box;
  }));
}

// --- the live tail ---------------------------------------------------------------------------
function startTail(topic) {
  if (!topic) { $("#tail-state").textContent = "No topic yet."; return; }
  if (state.source && state.source.topic === topic) return;
  if (state.source) state.source.close();
  $("#tail-topic").value = topic;
  $("#tail-list").replaceChildren();
  state.series = new Map();
  drawChart();
  const params = new URLSearchParams(location.search);
  const back = params.get("back") || "50";
  const src = new EventSource(`/api/topics/${encodeURIComponent(topic)}/tail?back=${encodeURIComponent(back)}`);
  src.topic = topic;
  state.source = src;
  src.onopen = () => { $("#tail-state").textContent = `tailing ${topic}`; };
  src.onerror = (ev) => {
    if (ev.data) {  // the server's own error event: the stream ended, and it says why
      src.close();
      if (state.source === src) state.source = null;  // choosing the topic again starts anew
      $("#tail-state").textContent = `${topic}: ${JSON.parse(ev.data).message}`;
      return;
    }
    $("#tail-state").textContent = `reconnecting to ${topic}\u2026`;
  };
  src.addEventListener("record", (ev) => onRecord(JSON.parse(ev.data)));
  src.addEventListener("gap", (ev) => {
    const g = JSON.parse(ev.data);
    $("#tail-state").textContent = `retention removed offsets ${g.from}\u2013${g.to - 1} of partition ${g.partition}`;
  });
}

function onRecord(r) {
  if ($("#tail-pause").checked) return;
  let parsed = null;
  if (r.encoding === "utf8" && r.value) { try { parsed = JSON.parse(r.value); } catch (e) { /* not JSON */ } }
  const li = el("li", { class: "record", "data-offset": String(r.offset), "data-partition": String(r.partition) });
  li.append(el("div", { class: "meta" },
    `p${r.partition} @${r.offset} \u00b7 ${new Date(r.timestamp).toLocaleTimeString()}${r.key != null ? ` \u00b7 key ${r.key}` : ""}`));
  li.append(el("pre", {}, parsed !== null ? JSON.stringify(parsed, null, 2) : String(r.value)));
  const list = $("#tail-list");
  list.prepend(li);
  while (list.children.length > MAX_TAIL) list.lastChild.remove();
  const field = $("#tail-field").value.trim();
  const v = parsed && field ? field.split(".").reduce((o, k) => (o == null ? o : o[k]), parsed) : undefined;
  if (typeof v === "number") {
    const key = r.key ?? (parsed.id != null ? String(parsed.id) : `p${r.partition}`);
    const s = state.series.get(key) || [];
    s.push({ t: r.timestamp, v });
    if (s.length > MAX_POINTS) s.shift();
    state.series.set(key, s);
    scheduleChart();
  }
}

let chartPending = false;
function scheduleChart() {
  if (chartPending) return;
  chartPending = true;
  requestAnimationFrame(() => { chartPending = false; drawChart(); });
}

function drawChart() {
  const svg = $("#chart");
  const W = 600, H = 220, L = 40, B = 18;
  const all = [...state.series.values()].flat();
  svg.replaceChildren();
  $("#legend").replaceChildren();
  if (!all.length) return;
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t));
  let v0 = Math.min(...all.map((p) => p.v)), v1 = Math.max(...all.map((p) => p.v));
  if (v0 === v1) { v0 -= 1; v1 += 1; }
  const x = (t) => L + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - L - 6) : (W - L) / 2);
  const y = (v) => 6 + (1 - (v - v0) / (v1 - v0)) * (H - B - 12);
  for (const v of [v0, (v0 + v1) / 2, v1]) {
    svg.append(svgEl("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#e3e3e0" }));
    const label = svgEl("text", { x: 2, y: y(v) + 4, "font-size": 11, fill: "#6b7280" });
    label.textContent = v.toFixed(1);
    svg.append(label);
  }
  let i = 0;
  for (const [key, pts] of state.series) {
    const color = COLORS[i++ % COLORS.length];
    svg.append(svgEl("polyline", {
      points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2,
    }));
    for (const p of pts) svg.append(svgEl("circle", { class: "pt", cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5, fill: color }));
    const item = el("span");
    const dot = el("i");
    dot.style.background = color;
    item.append(dot, `${key}: ${pts[pts.length - 1].v}`);
    $("#legend").append(item);
  }
}

$("#tail-topic").addEventListener("change", () => { location.hash = `#tail/${encodeURIComponent($("#tail-topic").value)}`; });
$("#tail-form").addEventListener("submit", (e) => e.preventDefault());
document.addEventListener("visibilitychange", poll);
poll().then(show);
setInterval(poll, POLL_MS);

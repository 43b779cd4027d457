// The lockstep dashboard: one EventSource on /dashboard/events brings a snapshot of the watched
// namespace at a bounded rate (the server coalesces: a slow page gets the newest); `apply`
// renders it. Operator actions are POSTs to /dashboard/api/{action} with the admin token as a
// bearer header. `window.lockstep` exposes the state and each update's measured cost (the
// Performance API measure "lockstep-apply") for tests and the curious.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const namespace = params.get("namespace") || "";
  const fields = (params.get("fields") ?? "confidence,last_signal,pnl").split(",").map(f => f.trim()).filter(Boolean);
  const $ = id => document.getElementById(id);
  const SEVERITY = { "?": 0, healthy: 1, degraded: 2, stuck: 3, unhealthy: 4 };
  const state = { snapshot: null, filter: "", sort: params.get("sort") || "id", applied: [], source: null };
  window.lockstep = state;

  const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const ago = ms => ms == null ? "-" : ms < 1000 ? `${ms} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : ms < 3600000 ? `${Math.floor(ms / 60000)} min ${Math.floor(ms % 60000 / 1000)} s` : `${(ms / 3600000).toFixed(1)} h`;

  // Token and actor: kept for this tab only.
  for (const id of ["token", "actor"]) {
    const saved = sessionStorage.getItem("lockstep-" + id);
    if (saved !== null) $(id).value = saved;
    $(id).addEventListener("change", () => sessionStorage.setItem("lockstep-" + id, $(id).value));
  }

  // ---- the agent grid
  const columns = ["id", "role", "status", "health", "breaker", "queue", ...fields.map(f => "state." + f), ""];
  $("agents-head").innerHTML = columns.map(c => {
    const key = { id: "id", status: "status", health: "health", queue: "queue" }[c];
    return key ? `<th class="sortable" data-sort="${key}">${esc(c)}</th>` : `<th>${esc(c)}</th>`;
  }).join("");
  $("sort").value = state.sort;

  function visibleAgents() {
    const s = state.snapshot;
    if (!s) return [];
    const f = state.filter;
    let rows = f ? s.agents.filter(a => a.id.toLowerCase().includes(f) || a.role.toLowerCase().includes(f)
      || a.status.toLowerCase().includes(f) || a.health.toLowerCase().includes(f) || (a.paused && "paused".includes(f))) : s.agents.slice();
    const byId = (a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    const order = {
      id: byId,
      status: (a, b) => (a.status < b.status ? -1 : a.status > b.status ? 1 : 0) || byId(a, b),
      health: (a, b) => (SEVERITY[b.health] ?? 0) - (SEVERITY[a.health] ?? 0) || byId(a, b),
      queue: (a, b) => b.queue - a.queue || byId(a, b),
    }[state.sort] || byId;
    rows.sort(order);
    return rows;
  }

  // The grid is kept, row by row (keyed by agent id): an update writes only the cells whose text
  // changed and moves only the rows whose place changed, so applying one stays cheap with
  // thousands of agents.
  const rowsById = new Map();

  function cellsOf(a) {
    const status = a.paused && a.status !== "paused" ? `${a.status} (paused)` : a.status;
    const cells = [[a.id, ""], [a.role, ""], [status, a.paused ? "paused" : ""], [a.health, "h-" + a.health],
      [a.breaker, "b-" + a.breaker], [String(a.queue), ""]];
    for (const v of a.fields) cells.push([v == null ? "-" : String(v), ""]);
    return cells;
  }

  function newRow(id, n) {
    const tr = document.createElement("tr");
    tr.dataset.agent = id;
    // Each cell holds one text node whose data is rewritten: cheaper than replacing it.
    const tds = [], texts = [];
    for (let i = 0; i < n; i++) {
      const td = tr.appendChild(document.createElement("td"));
      tds.push(td); texts.push(td.appendChild(document.createTextNode("")));
    }
    const actions = tr.appendChild(document.createElement("td"));
    const toggle = actions.appendChild(document.createElement("button"));
    actions.append(" ");
    const restart = actions.appendChild(document.createElement("button"));
    toggle.dataset.agent = restart.dataset.agent = id;
    restart.dataset.act = "restart"; restart.textContent = "Restart";
    return { tr, tds, texts, toggle, text: new Array(n).fill(null), cls: new Array(n).fill(null), paused: null };
  }

  function renderAgents() {
    const s = state.snapshot;
    const rows = visibleAgents();
    const body = $("agents-body");
    const keep = new Set();
    let at = body.firstChild;
    for (const a of rows) {
      const cells = cellsOf(a);
      let r = rowsById.get(a.id);
      if (!r || r.tds.length !== cells.length) { r = newRow(a.id, cells.length); rowsById.set(a.id, r); }
      keep.add(a.id);
      for (let i = 0; i < cells.length; i++) {
        const [text, cls] = cells[i];
        if (r.text[i] !== text) { r.texts[i].data = text; r.text[i] = text; }
        if (r.cls[i] !== cls) { r.tds[i].className = cls; r.cls[i] = cls; }
      }
      if (r.paused !== a.paused) {
        r.toggle.dataset.act = a.paused ? "resume" : "pause";
        r.toggle.textContent = a.paused ? "Resume" : "Pause";
        r.paused = a.paused;
      }
      if (at === r.tr) at = at.nextSibling;
      else body.insertBefore(r.tr, at);
    }
    while (at) { const next = at.nextSibling; body.removeChild(at); at = next; }
    for (const id of rowsById.keys()) if (!keep.has(id)) rowsById.delete(id);
    const shown = rows.length === s.agents.length ? `${s.agents.length}` : `${rows.length} of ${s.agents.length} shown`;
    $("agent-count").textContent = s.agents_total > s.agents.length ? `(${shown}; ${s.agents_total} registered, the first ${s.agents.length} listed)` : `(${shown})`;
  }

  // ---- the other panels
  function renderTable(id, rows, cells) {
    $(id).innerHTML = rows.length ? rows.map(r => `<tr>${cells(r)}</tr>`).join("") : `<tr><td class="muted" colspan="9">none</td></tr>`;
  }

  function render() {
    const s = state.snapshot;
    $("title").textContent = `${s.version} · namespace ${s.namespace}`;
    renderAgents();
    renderTable("sync-body", s.sync_points, p => `<td>${esc(p.id)}</td><td>${esc(p.kind)}</td><td>${p.arrived}/${p.required}</td>`
      + `<td class="missing">${p.missing.length ? p.missing.map(esc).join(", ") : `${Math.max(0, p.required - p.arrived)} more`}</td><td>${ago(p.waiting_ms)}</td>`);
    renderTable("votes-body", s.votes, v => `<td>${esc(v.id)}</td><td>${esc(v.question)}</td><td>${esc(v.state)}</td><td>${v.ballots}/${v.required}</td>`
      + `<td class="missing">${v.missing.map(esc).join(", ")}</td><td>${ago(v.age_ms)}</td>`);
    renderTable("tasks-body", s.tasks, q => `<td>${esc(q.kind)}</td><td>${q.waiting}</td><td>${q.ready}</td><td>${q.held}</td><td>${q.completed}</td>`
      + `<td>${q.dead_lettered}</td><td>${ago(q.oldest_ready_ms)}</td>`);
    renderTable("audit-body", s.audit.slice().reverse(), e => `<td>${e.seq}</td><td>${ago(s.now_ms - e.at_ms)} ago</td><td>${esc(e.actor)}</td><td>${esc(e.command)}</td>`
      + `<td>${esc(e.namespace ? e.namespace + "/" : "")}${esc(e.target)}</td><td>${esc(e.outcome)}</td><td title="${esc(e.detail)}">${esc(e.detail)}</td>`);
    $("audit-dropped").textContent = s.audit_dropped ? `(${s.audit_dropped} older entries dropped)` : "";
    const h = s.health;
    $("health-score").textContent = `${Math.round(h.score * 100)} % healthy`;
    $("health-counts").textContent = `healthy ${h.healthy} · degraded ${h.degraded} · stuck ${h.stuck} · unhealthy ${h.unhealthy} · score over time: every namespace`;
    plot($("health-plot"), [{ color: "#4caf50", points: h.history.map(([at, score]) => [at, score * 100]) }], 100);
    const rates = { pub: [], del: [], drop: [] };
    for (let i = 1; i < s.rates.length; i++) {
      const a = s.rates[i - 1], b = s.rates[i], secs = (b.at_ms - a.at_ms) / 1000;
      if (secs <= 0 || b.published < a.published) continue;
      rates.pub.push([b.at_ms, (b.published - a.published) / secs]);
      rates.del.push([b.at_ms, (b.delivered - a.delivered) / secs]);
      rates.drop.push([b.at_ms, (b.dropped - a.dropped) / secs]);
    }
    const last = k => rates[k].length ? rates[k][rates[k].length - 1][1].toFixed(1) : "-";
    $("rates-now").textContent = `published ${last("pub")} · delivered ${last("del")} · dropped ${last("drop")}`;
    plot($("rates-plot"), [{ color: "#4a90d9", points: rates.pub }, { color: "#4caf50", points: rates.del }, { color: "#e05050", points: rates.drop }]);
    const stop = s.emergency;
    $("emergency").hidden = !stop;
    if (stop) $("emergency").textContent = `EMERGENCY STOP by ${stop.actor} (${ago(s.now_ms - stop.since_ms)} ago): ${stop.reason}`;
  }

  // Lines over time on a canvas: x from the oldest point to the newest, y from 0 to the top.
  function plot(canvas, lines, top) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    const all = lines.flatMap(l => l.points);
    if (all.length < 2) { ctx.fillStyle = "#8a96a3"; ctx.fillText("gathering…", 8, 16); return; }
    const x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
    const y1 = top ?? Math.max(1, ...all.map(p => p[1])) * 1.1;
    ctx.strokeStyle = "#2c343d"; ctx.beginPath(); ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
    ctx.fillStyle = "#8a96a3"; ctx.fillText(y1.toFixed(top ? 0 : 1), 4, 12);
    for (const l of lines) {
      ctx.strokeStyle = l.color; ctx.lineWidth = 1.5; ctx.beginPath();
      l.points.forEach(([x, y], i) => {
        const px = x1 === x0 ? w : (x - x0) / (x1 - x0) * (w - 2) + 1, py = h - 2 - y / y1 * (h - 16);
        i ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
      });
      ctx.stroke();
    }
  }

  // One live update: parse, render, and measure (Performance API).
  function apply(snapshot) {
    const t0 = performance.now();
    performance.mark("lockstep-apply-start");
    state.snapshot = snapshot;
    render();
    performance.mark("lockstep-apply-end");
    performance.measure("lockstep-apply", "lockstep-apply-start", "lockstep-apply-end");
    const ms = performance.now() - t0;
    state.applied.push({ seq: snapshot.seq, agents: snapshot.agents.length, ms });
    if (state.applied.length > 100) state.applied.shift();
    return ms;
  }
  state.apply = apply;

  // ---- live updates
  function connect() {
    const q = new URLSearchParams({ namespace, fields: fields.join(",") });
    const source = new EventSource("/dashboard/events?" + q);
    state.source = source;
    source.addEventListener("snapshot", e => {
      $("live").className = "badge on"; $("live").textContent = "live";
      apply(JSON.parse(e.data));
    });
    source.onerror = () => { $("live").className = "badge off"; $("live").textContent = "reconnecting"; };
  }

  // ---- operator actions
  function notice(text, ok) {
    const n = $("notice");
    n.textContent = text; n.className = "notice " + (ok ? "ok" : "error");
  }

  async function act(action, body, label) {
    const headers = { "Content-Type": "application/json" };
    const token = $("token").value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    const actor = $("actor").value.trim();
    if (actor) headers["X-Lockstep-Actor"] = actor;
    try {
      const r = await fetch("/dashboard/api/" + action, { method: "POST", headers, body: JSON.stringify(body) });
      const answer = await r.json().catch(() => ({ message: r.statusText }));
      if (r.ok) notice(`${label}: ${answer.detail}`, true);
      else if (r.status === 401 || r.status === 403) { notice(`${label} refused: ${answer.message} — enter the admin token above`, false); $("token").focus(); }
      else notice(`${label} failed (${answer.reason || r.status}): ${answer.message}`, false);
    } catch (e) {
      notice(`${label} failed: ${e}`, false);
    }
  }

  $("agents-body").addEventListener("click", e => {
    const b = e.target.closest("button[data-act]");
    if (!b) return;
    const agent = b.dataset.agent, verb = b.dataset.act;
    act(verb, { namespace, agent_id: agent }, `${verb} ${agent}`);
  });
  $("emergency-stop").addEventListener("click", () => {
    if (!confirm("Stop every agent of this server?")) return;
    act("emergency-stop", { reason: $("stop-reason").value }, "emergency stop");
  });
  $("resume-all").addEventListener("click", () => act("resume-all", {}, "resume all"));
  $("filter").addEventListener("input", () => { state.filter = $("filter").value.trim().toLowerCase(); if (state.snapshot) renderAgents(); });
  $("sort").addEventListener("change", () => { state.sort = $("sort").value; if (state.snapshot) renderAgents(); });
  $("agents-head").addEventListener("click", e => {
    const th = e.target.closest("th[data-sort]");
    if (!th) return;
    state.sort = th.dataset.sort; $("sort").value = state.sort;
    if (state.snapshot) renderAgents();
  });

  connect();
})();

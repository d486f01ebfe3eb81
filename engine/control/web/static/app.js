// pyfwd's dashboard: polls /api/state, shows the VIPs, their real servers
// and the latest events, computes the rates from successive snapshots, and
// sends the actions (drain, halt, online, weight) with the token.
// Every text goes into the page through textContent: nothing is parsed as
// HTML.  No framework, nothing from elsewhere: every file is pyfwd's.
"use strict";

(function () {
  const POLL_MS = 1500;
  const TOKEN_KEY = "pyfwd-dashboard-token";
  const COLUMNS = ["real", "state", "health", "weight", "scheduled",
    "active flows", "inactive flows", "new flows/s", "frames/s", "bytes/s",
    "actions"];
  const $ = (id) => document.getElementById(id);

  let previous = null;        // {time, counters: {key: {frames, ...}}}
  let actionsAllowed = false; // the server has a token configured
  let timer = null;
  const sections = new Map(); // VIP address -> its parts in the page

  // --- small helpers ---

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function number(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + " G";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + " M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + " k";
    return Math.abs(n) >= 10 || Number.isInteger(n) ? String(Math.round(n))
      : n.toFixed(1);
  }

  function bytes(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  function duration(s) {
    if (typeof s !== "number") return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    const m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m ? m + "m " + (s % 60) + "s" : (s % 60) + "s";
  }

  function clock(t) {
    const d = new Date(t * 1000);
    const same = d.toDateString() === new Date().toDateString();
    return (same ? "" : d.toLocaleDateString() + " ") +
      d.toLocaleTimeString([], {hour12: false});
  }

  function colClass(column) {
    return "col-" + column.replace(/[^a-z]+/g, "-");
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function say(text, kind) {
    const m = $("message");
    m.textContent = text;
    m.className = kind;
    m.hidden = false;
  }

  // --- the header: engine, HA role, access ---

  function fact(dl, name, value, cls) {
    dl.append(el("dt", null, name), el("dd", cls || null, value));
  }

  function renderEngine(s) {
    const dl = $("engine");
    dl.replaceChildren();
    const e = s.engine || {};
    fact(dl, "interface", e.iface + (e.inside_iface ? " / " +
      e.inside_iface : "") + (s.backend ? " (" + s.backend + ")" : ""));
    const role = (s.ha && s.ha.role) || "?";
    fact(dl, "HA role", role, "role role-" + role);
    if (s.ha && s.ha.since) fact(dl, "role since", clock(s.ha.since));
    fact(dl, "uptime", duration(e.uptime));
    const t = s.totals || {};
    const r = rate(t, "engine");
    fact(dl, "frames/s", number(r.frames));
    fact(dl, "new flows/s", number(r.flows_new));
    const p = $("problem");
    p.hidden = !s.problem;
    p.textContent = s.problem ? "engine not alive: " + s.problem : "";
  }

  function renderAccess() {
    const text = $("access-text"), form = $("token-form"), lock = $("lock");
    if (!actionsAllowed) {
      text.textContent = "Read-only: no dashboard token is configured " +
        "(pyfwd start --dashboard-token FILE)";
      form.hidden = true;
      lock.hidden = true;
    } else if (!token()) {
      text.textContent = "Actions need the token:";
      form.hidden = false;
      lock.hidden = true;
    } else {
      text.textContent = "Actions unlocked for this tab";
      form.hidden = true;
      lock.hidden = false;
    }
    document.body.classList.toggle("read-only", !actionsAllowed);
    const enabled = actionsAllowed && !!token();
    document.querySelectorAll("button.act, input.weight").forEach((b) => {
      b.disabled = !enabled || b.dataset.current === "1";
    });
  }

  // --- rates ---

  let counters = {};          // this snapshot's, by key

  function rate(c, key) {
    counters[key] = {frames: c.frames, bytes: c.bytes,
      flows_new: c.flows_new};
    const out = {frames: null, bytes: null, flows_new: null};
    const before = previous && previous.counters[key];
    const dt = previous ? currentTime - previous.time : 0;
    if (!before || dt <= 0) return out;
    for (const k of Object.keys(out)) {
      const d = c[k] - before[k];
      if (typeof d === "number" && d >= 0) out[k] = d / dt;
    }
    return out;
  }
  let currentTime = 0;

  // --- VIPs and real servers ---

  function vipSection(v) {
    let part = sections.get(v.vip);
    if (part) return part;
    const section = el("section", "vip");
    section.dataset.vip = v.name;
    const h2 = el("h2");
    const name = el("span", "name"), addr = el("span", "addr");
    h2.append(name, " ", addr);
    const facts = el("p", "vip-facts");
    const table = el("table", "reals");
    const tr = el("tr");
    COLUMNS.forEach((c) => tr.append(el("th", colClass(c), c)));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(tr);
    section.append(h2, facts, table);
    part = {section, name, addr, facts, tbody: table.tBodies[0],
      rows: new Map()};
    sections.set(v.vip, part);
    return part;
  }

  function actionButton(label, action, v, r) {
    const b = el("button", "act act-" + action, label);
    b.type = "button";
    b.dataset.action = action;
    b.addEventListener("click", () => act({action, vip: v.name,
      real: r.real}));
    return b;
  }

  function realRow(part, v, r) {
    let row = part.rows.get(r.real);
    if (row) return row;
    const tr = el("tr");
    tr.dataset.real = r.real;
    const cells = {};
    COLUMNS.forEach((c) => {
      cells[c] = el("td", colClass(c));
      tr.append(cells[c]);
    });
    const buttons = ["drain", "halt", "online"].map((a) =>
      actionButton(a[0].toUpperCase() + a.slice(1), a, v, r));
    const weight = el("input", "weight");
    weight.type = "number";
    weight.min = "0";
    weight.max = "65535";
    weight.placeholder = "weight";
    weight.setAttribute("aria-label", "new weight of " + r.real);
    const set = el("button", "act act-weight", "Set weight");
    set.type = "button";
    set.dataset.action = "weight";
    set.addEventListener("click", () => {
      const n = Number(weight.value);
      if (weight.value === "" || !Number.isInteger(n) || n < 0 ||
          n > 65535) {
        say("weight: a whole number from 0 to 65535, please", "error");
        return;
      }
      act({action: "weight", vip: v.name, real: r.real, weight: n});
      weight.value = "";
    });
    cells.actions.append(...buttons, weight, set);
    row = {tr, cells, buttons};
    part.rows.set(r.real, row);
    return row;
  }

  function renderReal(row, v, r) {
    const c = row.cells, rt = rate(r, v.vip + "|" + r.real);
    c.real.textContent = r.real + (r.state === "fallback" ? " (fallback)"
      : "");
    c.state.textContent = r.state;
    c.state.className = "col-state state state-" + r.state;
    c.health.textContent = r.health === null ? "not checked" : r.health;
    c.health.className = "col-health health-" + (r.health || "none");
    if (r.health_detail) c.health.title = r.health_detail;
    c.weight.textContent = r.weight;
    c.scheduled.textContent = r.scheduled ? "yes" + (r.why ? " (" + r.why +
      ")" : "") : "no: " + (r.why || "?");
    c.scheduled.className = "col-scheduled " + (r.scheduled ? "yes" : "no");
    // ipvsadm's ActiveConn and InActConn: established, closing
    c["active flows"].textContent = number(r.active);
    c["inactive flows"].textContent = number(r.inactive);
    c["new flows/s"].textContent = number(rt.flows_new);
    c["frames/s"].textContent = number(rt.frames);
    c["bytes/s"].textContent = bytes(rt.bytes) + "/s";
    row.buttons.forEach((b) => {
      b.dataset.current = (b.dataset.action === r.state ||
        r.state === "fallback") ? "1" : "0";
    });
    return rt;
  }

  function renderVips(vips) {
    const box = $("vips");
    const seen = new Set();
    if (!vips.length) {
      box.replaceChildren(el("p", "empty", "No VIP configured."));
      sections.clear();
      return;
    }
    box.querySelectorAll("p.empty").forEach((p) => p.remove());
    vips.forEach((v, i) => {
      seen.add(v.vip);
      const part = vipSection(v);
      part.section.dataset.vip = v.name;
      part.name.textContent = v.name;
      // an unnamed VIP is named by its address: say it once
      part.addr.textContent = v.name === v.vip ? "" : v.vip;
      const sum = {active: 0, inactive: 0, frames: 0, bytes: 0,
        flows_new: 0};
      const rows = new Set();
      v.reals.forEach((r, j) => {
        rows.add(r.real);
        const row = realRow(part, v, r);
        const rt = renderReal(row, v, r);
        sum.active += r.active || 0;
        sum.inactive += r.inactive || 0;
        for (const k of ["frames", "bytes", "flows_new"]) sum[k] += rt[k] || 0;
        if (part.tbody.children[j] !== row.tr) {
          part.tbody.insertBefore(row.tr, part.tbody.children[j] || null);
        }
      });
      for (const [key, row] of part.rows) {
        if (!rows.has(key)) { row.tr.remove(); part.rows.delete(key); }
      }
      const facts = ["mode " + v.mode.toUpperCase(),
        "scheduler " + v.scheduler];
      if (v.persistence) facts.push("persistence " + v.persistence + " s");
      if (v.fallback) facts.push("fallback " + v.fallback +
        (v.fallback_active ? " (ACTIVE: no real server up)" : ""));
      if (v.bgp) facts.push("BGP " + v.bgp);
      facts.push(v.reals.length + " real server(s)",
        number(sum.active) + " active flows",
        number(sum.inactive) + " inactive flows",
        number(sum.flows_new) + " new flows/s",
        number(sum.frames) + " frames/s", bytes(sum.bytes) + "/s");
      part.facts.textContent = facts.join(" · ");
      part.section.classList.toggle("fallback", !!v.fallback_active);
      if (box.children[i] !== part.section) {
        box.insertBefore(part.section, box.children[i] || null);
      }
    });
    for (const [key, part] of sections) {
      if (!seen.has(key)) { part.section.remove(); sections.delete(key); }
    }
  }

  // --- events ---

  function renderEvents(events) {
    const tbody = $("events").tBodies[0];
    const rows = events.slice().reverse().map((e) => {
      const tr = el("tr", "event kind-" + e.kind);
      tr.dataset.seq = e.seq;
      tr.append(el("td", "time", clock(e.time)), el("td", "kind", e.kind),
        el("td", null, e.vip || ""), el("td", null, e.real || ""),
        el("td", "text", e.text));
      return tr;
    });
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", "empty", "No event yet.");
      td.colSpan = 5;
      tr.append(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  // --- polling ---

  function render(s) {
    counters = {};
    currentTime = s.time;
    actionsAllowed = !!s.actions;
    renderEngine(s);
    renderVips(s.vips || []);
    renderEvents(s.events || []);
    renderAccess();
    previous = {time: s.time, counters};
  }

  async function load() {
    try {
      const r = await fetch("/api/state", {cache: "no-store",
        credentials: "same-origin"});
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      $("updated").textContent = "updated " + clock(Date.now() / 1000);
      document.body.classList.remove("stale");
    } catch (err) {
      $("updated").textContent = "no answer from the engine (" +
        err.message + "): retrying";
      document.body.classList.add("stale");
    }
  }

  let generation = 0;          // one chain of polls: the latest one's

  async function poll() {
    clearTimeout(timer);
    const mine = ++generation;
    await load();
    if (mine === generation) timer = setTimeout(poll, POLL_MS);
  }

  // --- actions ---

  async function act(body) {
    const what = body.action + " " + body.real + " of " + body.vip +
      (body.action === "weight" ? " to " + body.weight : "");
    let status = 0, reply = null;
    try {
      const r = await fetch("/api/action", {method: "POST",
        credentials: "same-origin", cache: "no-store",
        headers: {"Content-Type": "application/json",
          "X-Pyfwd-Token": token()},
        body: JSON.stringify(body)});
      status = r.status;
      reply = await r.json().catch(() => null);
    } catch (err) {
      say(what + ": not sent (" + err.message + ")", "error");
      return;
    }
    if (status === 200 && reply && reply.ok) {
      say(what + ": done", "ok");
    } else {
      const why = reply && reply.error ? reply.error : "HTTP " + status;
      say(what + ": refused (" + status + "): " + why, "error");
      if (status === 403 && /token/.test(why)) {
        sessionStorage.removeItem(TOKEN_KEY);   // ask again
        renderAccess();
      }
    }
    poll();
  }

  function start() {
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $("token").value = "";
      say("Token kept for this tab; the engine checks it on each action.",
        "ok");
      renderAccess();
    });
    $("lock").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      say("Locked: actions need the token again.", "ok");
      renderAccess();
    });
    poll();
  }

  start();
}());

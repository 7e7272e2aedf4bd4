// pairs-bot dashboard: the operator API's own page. No framework, no external URL: it reads the
// REST views once, then follows the bot live over /ws (metric events move z, state and equity;
// position, execution and operator alerts refresh the tables). The token comes from the URL
// fragment (#token=..., never sent to the server in a request line) or the form, and is kept in
// sessionStorage for this tab only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_EVENTS = 200;
  const MAX_POINTS = 300;
  let token = null;
  let socket = null;
  let retries = 0;
  let eventCount = 0;
  let refreshTimer = null;
  const equity = []; // [ts_ms, value]

  class AuthError extends Error {}

  function tokenFromPage() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      const value = decodeURIComponent(match[1]);
      sessionStorage.setItem("pairs-bot-token", value);
      history.replaceState(null, "", location.pathname + location.search); // the token leaves the address bar
      return value;
    }
    return sessionStorage.getItem("pairs-bot-token");
  }

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (response.status === 401) throw new AuthError("the API refused the token");
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST", cache: "no-store", body: JSON.stringify(body || {}),
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", "X-Operator": "dashboard" },
    });
    const answer = await response.json();
    if (response.status === 401) throw new AuthError("the API refused the token");
    return { status: response.status, answer };
  }

  // Operator controls: every one is an API call (journaled, through the engine), never a shortcut.
  async function act(path, label) {
    text($("action-result"), `${label}...`);
    try {
      const { status, answer } = await post(path, { reason: "dashboard" });
      text($("action-result"), status < 300 ? `${label}: ${answer.result || "done"}` : `${label}: ${answer.error}`);
    } catch (e) {
      text($("action-result"), `${label}: ${e.message}`);
    }
    scheduleRefresh();
  }

  let paused = false;

  function showPaused(value) {
    paused = value;
    const button = $("pause-toggle");
    button.hidden = false;
    text(button, paused ? "Resume entries" : "Pause entries");
    badge($("paused"), paused ? "entries paused" : "entries on", paused ? "warn" : "on");
  }

  let armed = { pair: null, until: 0 }; // survives the tables' re-rendering between the two clicks

  function closeButton(td, pairId) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "close";
    button.dataset.pair = pairId;
    const isArmed = armed.pair === pairId && Date.now() < armed.until;
    button.classList.toggle("armed", isArmed);
    text(button, isArmed ? "confirm close" : "close");
    button.addEventListener("click", () => {
      if (!(armed.pair === pairId && Date.now() < armed.until)) { // two clicks: a flatten is not undone
        armed = { pair: pairId, until: Date.now() + 5000 };
        button.classList.add("armed");
        text(button, "confirm close");
        return;
      }
      armed = { pair: null, until: 0 };
      button.disabled = true;
      act(`/pairs/${encodeURIComponent(pairId)}/close`, `close ${pairId}`);
    });
    td.appendChild(button);
  }

  // -- rendering ------------------------------------------------------------------------------
  function text(el, value) { el.textContent = value === null || value === undefined ? "-" : String(value); }

  function money(value) {
    if (value === null || value === undefined) return "-";
    const n = Number(value);
    return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function signClass(el, value) {
    el.classList.remove("pos", "neg");
    const n = Number(value);
    if (n > 0) el.classList.add("pos"); else if (n < 0) el.classList.add("neg");
  }

  function badge(el, label, cls) {
    text(el, label);
    el.classList.remove("on", "off", "warn");
    if (cls) el.classList.add(cls);
  }

  function renderStatus(status) {
    text($("mode"), status.mode);
    showPaused(status.entries_paused);
    badge($("feed"), status.feed_lost ? "feed lost" : "feed ok", status.feed_lost ? "off" : "on");
    text($("open-pairs"), `${status.open_pairs} / ${status.pairs}`);
    text($("signals"), `${status.signals} / ${status.executed}`);
  }

  function cell(row, cls, value) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    text(td, value);
    row.appendChild(td);
    return td;
  }

  function stateCell(td, state) {
    td.className = `state state-${state}`;
    text(td, state);
  }

  function renderPairs(rows) {
    const body = $("pairs-body");
    body.replaceChildren();
    for (const p of rows) {
      const tr = document.createElement("tr");
      tr.dataset.pair = p.pair_id;
      cell(tr, "pair", p.pair_id);
      stateCell(cell(tr, "", ""), p.state);
      cell(tr, "num z", p.z === null ? null : p.z.toFixed(3));
      cell(tr, "num", p.qty_a);
      cell(tr, "num", p.qty_b);
      cell(tr, "entries", p.operator_disabled ? "disabled" : p.symbol_disabled ? "symbol off" : p.entries_enabled ? "on" : "paused");
      cell(tr, "num", p.refusals);
      body.appendChild(tr);
    }
  }

  function renderPositions(view) {
    const body = $("positions-body");
    body.replaceChildren();
    for (const p of view.positions) {
      const tr = document.createElement("tr");
      tr.dataset.pair = p.pair_id;
      cell(tr, "pair", p.pair_id);
      stateCell(cell(tr, "", ""), p.state);
      cell(tr, "num", p.qty_a);
      cell(tr, "num", p.qty_b);
      signClass(cell(tr, "num", money(p.unrealized_usdt)), p.unrealized_usdt);
      if (p.state === "LONG_SPREAD" || p.state === "SHORT_SPREAD") closeButton(cell(tr, "", ""), p.pair_id);
      else cell(tr, "", "");
      body.appendChild(tr);
    }
    const total = view.pnl.total;
    signClass($("realized"), total.realized_usdt);
    text($("realized"), money(total.realized_usdt));
    signClass($("unrealized"), total.unrealized_usdt);
    text($("unrealized"), money(total.unrealized_usdt));
  }

  function addEquity(ts, value) {
    if (value === null || value === undefined) return;
    equity.push([ts, Number(value)]);
    if (equity.length > MAX_POINTS) equity.splice(0, equity.length - MAX_POINTS);
    text($("equity"), money(value));
    drawSparkline();
  }

  function drawSparkline() {
    const values = equity.map((p) => p[1]);
    const lo = Math.min(...values), hi = Math.max(...values);
    const span = hi - lo || 1;
    const step = values.length > 1 ? 200 / (values.length - 1) : 0;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(38 - ((v - lo) / span) * 36).toFixed(1)}`);
    $("equity-line").setAttribute("points", points.join(" "));
    $("equity-sparkline").dataset.points = String(values.length);
  }

  function applyMetric(data) {
    text($("quotes-rate"), data.quotes_per_second.toFixed(1));
    text($("signals"), `${data.signals} / ${data.executed}`);
    showPaused(data.entries_paused);
    badge($("feed"), data.feed_lost ? "feed lost" : "feed ok", data.feed_lost ? "off" : "on");
    for (const p of data.pairs) {
      const tr = document.querySelector(`#pairs-body tr[data-pair="${CSS.escape(p.pair_id)}"]`);
      if (!tr) continue;
      stateCell(tr.children[1], p.state);
      text(tr.children[2], p.z === null ? null : p.z.toFixed(3));
    }
    addEquity(data.equity_ts_ms, data.equity_usdt);
  }

  function summary(ev) {
    const d = ev.data;
    switch (ev.type) {
      case "signal": return `${d.signal_type} z=${Number(d.z).toFixed(2)}`;
      case "order": return `${d.symbol} ${d.side} ${d.filled_qty}/${d.qty} ${d.status}`;
      case "position": return `${d.state} a=${d.qty_a} b=${d.qty_b}`;
      case "execution": return `${d.signal_type} ${d.status} (${d.reason})`;
      case "alert": return `${d.alert}${d.detail ? ": " + d.detail : ""}`;
      default: return "";
    }
  }

  function logEvent(ev) {
    const li = document.createElement("li");
    li.className = `${ev.type} ${ev.severity}`;
    li.dataset.type = ev.type;
    const time = new Date(ev.ts_ms).toISOString().slice(11, 23);
    li.textContent = `${time} ${ev.type} ${ev.pair_id || ""} ${summary(ev)}`;
    const list = $("events");
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  // -- live -----------------------------------------------------------------------------------
  function scheduleRefresh() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try { await refresh(); } catch (e) { console.warn("refresh failed:", e.message); }
    }, 150);
  }

  function onEvent(ev) {
    if (ev.type === "hello") return;
    eventCount += 1;
    text($("event-count"), eventCount);
    if (ev.type === "metric") { applyMetric(ev.data); return; }
    logEvent(ev);
    if (ev.type === "position" || ev.type === "execution" || ev.type === "alert") scheduleRefresh();
  }

  function setLive(open) {
    document.body.dataset.wsState = open ? "open" : "closed";
    badge($("ws-state"), open ? "live" : "live: reconnecting", open ? "on" : "off");
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`);
    socket.onopen = () => { retries = 0; setLive(true); };
    socket.onmessage = (message) => onEvent(JSON.parse(message.data));
    socket.onclose = () => {
      setLive(false);
      retries += 1;
      setTimeout(connect, Math.min(10000, 500 * 2 ** Math.min(retries, 5)));
    };
  }

  async function refresh() {
    const [status, pairs, positions] = await Promise.all([api("/status"), api("/pairs"), api("/positions")]);
    renderStatus(status);
    renderPairs(pairs.pairs);
    renderPositions(positions);
  }

  async function start() {
    try {
      await refresh();
      const curve = await api("/equity");
      for (const point of curve.samples) addEquity(point.ts_ms, point.equity_usdt);
      if (curve.now) addEquity(curve.now.ts_ms, curve.now.equity_usdt);
    } catch (e) {
      sessionStorage.removeItem("pairs-bot-token");
      askForToken(e instanceof AuthError ? "token refused" : e.message);
      return;
    }
    $("token-form").hidden = true;
    $("board").hidden = false;
    connect();
  }

  function askForToken(error) {
    $("board").hidden = true;
    $("token-form").hidden = false;
    text($("token-error"), error || "");
    $("token-input").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("pause-toggle").addEventListener("click", () => act(paused ? "/resume" : "/pause",
                                                            paused ? "resume entries" : "pause entries"));
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token-input").value.trim();
      if (!token) return;
      sessionStorage.setItem("pairs-bot-token", token);
      start();
    });
    token = tokenFromPage();
    if (token) start(); else askForToken("");
  });
})();

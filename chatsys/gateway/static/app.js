// chatsys web chat: no dependencies, no build step.
//
// Safety: everything that comes from the network is put on the page with textContent (or as an
// attribute value); nothing is ever parsed as HTML. The page's Content-Security-Policy allows only
// this script and refuses HTML sinks (Trusted Types) as a second line of defence.
//
// Reconnects: the socket is reopened with `since=<last message id>` after any drop, with a backoff.
// Messages are keyed by id (shown once, kept in id order). Frames sent on a socket that dropped
// before their ack are matched against what the room then holds and sent again only if missing.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  /** A DOM element; strings among the children become text nodes, never markup. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  // ---- contract rules the client checks before it asks (docs/protocol.md) -----------------
  const USER_RE = /^[\p{L}\p{Nd} ._-]+$/u;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

  function nameProblem(value) {
    if (!value) return "Enter a name.";
    if ([...value].length > 32) return "A name has at most 32 characters.";
    if (!USER_RE.test(value)) return "A name may contain only letters, digits, space, '.', '_' and '-'.";
    if (!value.trim()) return "A name must not be blank.";
    return null;
  }

  function roomProblem(value) {
    if (!value) return "Enter a room.";
    if (!ROOM_RE.test(value)) return "A room has 1–64 letters, digits, '_' or '-'.";
    return null;
  }

  /** Message ids sort in room order: "0000000042" or "1700000000000-3" (compare numerically). */
  function compareIds(a, b) {
    const [ah, at = "0"] = a.split("-");
    const [bh, bt = "0"] = b.split("-");
    return compareDigits(ah, bh) || compareDigits(at, bt);
  }

  function compareDigits(a, b) {
    const x = a.replace(/^0+/, "");
    const y = b.replace(/^0+/, "");
    if (x.length !== y.length) return x.length - y.length;
    return x < y ? -1 : x > y ? 1 : 0;
  }

  // ---- errors: one clear line per problem, with the contract's code -----------------------
  const ERRORS = {
    rate_limited: ["Slow down", "You are sending too quickly; wait a moment and try again."],
    too_large: ["Too large", "That is bigger than the server accepts."],
    unavailable: ["Service unavailable", "Part of the chat service is down; try again shortly."],
    bad_request: ["Not accepted", "The server did not accept that request."],
    not_found: ["Not found", "It does not exist in this room (any more)."],
    unauthorized: ["Session expired", "Your session is no longer valid; join again."],
    forbidden: ["Not allowed", "That belongs to another room."],
    internal: ["Server error", "Something went wrong on the server; try again."],
    network: ["Connection problem", "The server cannot be reached."],
  };

  /**
   * Show an error in the alert region. `code` is a contract code, "network", or an HTTP status
   * number when the server sent no JSON error. `source` groups errors that clear themselves
   * (the connection's clear once it is back).
   */
  function showError(code, message, context = "", source = "action") {
    const http = typeof code === "number";
    const [title, hint] = http
      ? [`HTTP error ${code}`, "The server answered with an unexpected error."]
      : ERRORS[code] || ["Error", "Something went wrong."];
    const detail = message || hint;
    const text = el("p", {},
      el("strong", { text: title }),
      http ? ": " : ` (${code}): `,
      context ? `${context} — ` : "",
      /[.!?]$/.test(detail) ? detail : `${detail}.`);
    const close = el("button", { type: "button", class: "dismiss", "aria-label": "Dismiss error", text: "×" });
    const box = el("div", { class: "error", "data-code": String(code), "data-source": source }, text, close);
    close.addEventListener("click", () => { box.remove(); $("text").focus(); });
    const errors = $("errors");
    errors.querySelectorAll(`[data-source="${source}"]`).forEach((old) => old.remove());
    errors.append(box);
    while (errors.children.length > 3) errors.firstElementChild.remove();
  }

  function clearErrors(source) {
    $("errors").querySelectorAll(`[data-source="${source}"]`).forEach((e) => e.remove());
  }

  /** The `{"error":{code,message}}` of an HTTP response, or its status when it has none. */
  function httpError(status, body) {
    try {
      const parsed = JSON.parse(body);
      if (parsed && parsed.error && typeof parsed.error.code === "string") {
        return [parsed.error.code, String(parsed.error.message || "")];
      }
    } catch (_) { /* not JSON */ }
    return [status, ""];
  }

  // ---- state ---------------------------------------------------------------------------------
  const S = {
    user: "", room: "", wanted: false, // joined, and the socket should stay open
    ws: null, connected: false, welcomed: false,
    token: null, session: null, sessions: new Set(), // every session id this page has had
    lastId: null, seen: new Set(), own: [], claimed: new Set(),
    refs: 0, outbox: [], inflight: new Map(), // ref -> {frame, session}
    attempt: 0, retryTimer: null, retryAt: 0, pingTimer: null, pongTimer: null,
  };

  function setStatus(text, state) {
    const status = $("status");
    status.textContent = text;
    status.dataset.state = state;
  }

  function setEnabled() {
    $("text").disabled = !S.wanted;
    $("send-button").disabled = !S.wanted;
    $("file").disabled = !S.connected;
    $("upload-button").disabled = !S.connected;
  }

  function showPending() {
    const waiting = S.outbox.length;
    $("pending").textContent = waiting
      ? `${waiting} message${waiting === 1 ? "" : "s"} waiting to be sent when the connection is back.`
      : "";
  }

  // ---- rendering -------------------------------------------------------------------------------
  function clock(ts) {
    return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function nearBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function addMessage(m) {
    if (!m || typeof m.id !== "string" || S.seen.has(m.id)) return; // shown once, ever
    S.seen.add(m.id);
    if (!S.lastId || compareIds(m.id, S.lastId) > 0) S.lastId = m.id;
    if (S.sessions.has(m.session)) {
      S.own.push({ id: m.id, kind: m.kind, text: m.text, file: m.file && m.file.id });
    }
    const mine = S.sessions.has(m.session);
    const when = new Date(m.ts);
    const meta = el("div", { class: "meta" },
      el("span", { class: "user", text: String(m.user) }), " ",
      el("time", { datetime: when.toISOString(), title: when.toLocaleString(), text: clock(m.ts) }));
    let body;
    if (m.kind === "file" && m.file) {
      const link = el("a", { href: `/api/files/${encodeURIComponent(m.file.id)}`, class: "file", text: String(m.file.name) });
      link.addEventListener("click", (ev) => { ev.preventDefault(); download(m.file); });
      body = el("div", { class: "body" }, link, el("span", { class: "size", text: ` (${size(m.file.size)})` }));
    } else {
      body = el("div", { class: "body", text: String(m.text) });
    }
    const item = el("li", { class: mine ? "msg mine" : "msg", "data-id": m.id }, meta, body);
    const list = $("messages");
    const stick = nearBottom(list);
    // Keep id order even if a frame arrives late: walk back from the end (usually 0 steps).
    let after = list.lastElementChild;
    while (after && compareIds(after.dataset.id, m.id) > 0) after = after.previousElementSibling;
    if (after) after.after(item); else list.prepend(item);
    $("empty").hidden = true;
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function addActivity(text, ts = Date.now()) {
    const when = new Date(ts);
    const item = el("li", {}, el("time", { datetime: when.toISOString(), text: clock(ts) }), ` ${text}`);
    const list = $("activity");
    list.append(item);
    while (list.children.length > 100) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  // ---- the socket --------------------------------------------------------------------------------
  function connect() {
    clearTimeout(S.retryTimer);
    S.retryTimer = null;
    const query = new URLSearchParams({ user: S.user, room: S.room });
    // Resume after the newest message seen; a room that was empty at the welcome resumes from 0.
    const since = S.lastId || (S.welcomed ? "0" : "");
    if (since) query.set("since", since);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/chat?${query}`);
    S.ws = ws;
    let opened = false;
    setStatus(S.welcomed ? "Reconnecting…" : "Connecting…", "busy");
    ws.addEventListener("open", () => { opened = true; });
    ws.addEventListener("message", (ev) => {
      if (S.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch (_) {
        showError("internal", "The server sent a frame that is not JSON.");
        return;
      }
      onFrame(frame);
    });
    ws.addEventListener("close", (ev) => {
      if (S.ws === ws) dropped(ev.code, opened);
    });
  }

  function onFrame(f) {
    switch (f.type) {
      case "welcome": return welcome(f);
      case "message": return addMessage(f);
      case "ack":
        if (S.inflight.delete(f.ref)) S.claimed.add(f.id);
        return;
      case "presence":
        if (!S.sessions.has(f.session)) addActivity(`${f.user} ${f.event === "join" ? "joined" : "left"}`);
        return;
      case "pong":
        clearTimeout(S.pongTimer);
        return;
      case "error": return frameError(f);
      default: return; // newer servers may send more
    }
  }

  function welcome(f) {
    const first = !S.welcomed;
    S.token = f.token;
    S.session = f.session;
    S.sessions.add(f.session);
    S.connected = true;
    S.attempt = 0;
    const list = $("messages");
    list.setAttribute("aria-busy", "true"); // history is not read out item by item
    (f.history || []).forEach(addMessage);
    list.setAttribute("aria-busy", "false");
    if (first && !list.children.length) $("empty").textContent = "No messages yet. Say hello!";
    S.welcomed = true;
    reconcile();
    clearErrors("connection");
    setStatus(`Connected as ${f.user} in #${f.room}`, "ok");
    addActivity(first ? `You joined #${f.room}` : "Reconnected");
    setEnabled();
    flush();
    heartbeat();
    if (first) $("text").focus();
  }

  /** Frames sent on a socket that dropped before their ack: stored after all, or send again. */
  function reconcile() {
    const resend = [];
    for (const [ref, item] of S.inflight) {
      if (item.session === S.session) continue;
      S.inflight.delete(ref);
      const f = item.frame;
      const stored = S.own.find((m) => !S.claimed.has(m.id)
        && (f.type === "text" ? m.kind === "text" && m.text === f.text : m.file === f.file_id));
      if (stored) S.claimed.add(stored.id); else resend.push(f);
    }
    S.outbox.unshift(...resend);
  }

  function frameError(f) {
    const item = f.ref ? S.inflight.get(f.ref) : null;
    if (item) S.inflight.delete(f.ref);
    let context = "";
    if (item && item.frame.type === "text") {
      const text = item.frame.text;
      context = `Message not sent: “${text.length > 40 ? `${text.slice(0, 40)}…` : text}”`;
      if (!$("text").value) $("text").value = text; // give it back, to send again with Enter
    } else if (item) {
      context = "File not shared";
    }
    showError(f.code, f.message, context);
  }

  function submit(frame) {
    frame.ref = `c${++S.refs}`;
    if (S.connected) transmit(frame);
    else S.outbox.push(frame);
    showPending();
  }

  function transmit(frame) {
    S.inflight.set(frame.ref, { frame, session: S.session });
    S.ws.send(JSON.stringify(frame));
  }

  /** Send what waited for the connection, keeping within the server's burst. */
  function flush() {
    if (!S.connected) return;
    S.outbox.splice(0, 30).forEach(transmit);
    showPending();
    if (S.outbox.length) setTimeout(flush, 1500);
  }

  function heartbeat() {
    clearInterval(S.pingTimer);
    S.pingTimer = setInterval(() => {
      if (!S.connected) return;
      S.ws.send(JSON.stringify({ type: "ping", ref: "hb" }));
      clearTimeout(S.pongTimer);
      S.pongTimer = setTimeout(() => forceDrop("no answer from the server"), 10000);
    }, 20000);
  }

  /** A socket the network lost may never report its close: give up on it and reconnect. */
  function forceDrop(why) {
    const ws = S.ws;
    if (!ws) return;
    dropped(1006, true, why); // forgets the socket first, so its late close event is ignored
    try { ws.close(); } catch (_) { /* already closing */ }
  }

  const CLOSES = {
    1001: "the server is restarting",
    1006: "the connection was lost",
    1008: "the server refused a frame",
    1009: "a frame was too big",
    1011: "the server hit an error",
    1013: "the server is overloaded",
  };

  async function dropped(code, opened, why) {
    S.ws = null;
    S.connected = false;
    clearInterval(S.pingTimer);
    clearTimeout(S.pongTimer);
    setEnabled();
    if (!S.wanted) return;
    const delay = Math.min(8000, 500 * 2 ** S.attempt) * (0.75 + Math.random() * 0.5);
    S.attempt += 1;
    S.retryAt = Date.now() + delay;
    S.retryTimer = setTimeout(connect, delay);
    const reason = why || CLOSES[code] || `closed with code ${code}`;
    if (opened) {
      addActivity(`Disconnected: ${reason}`);
    } else {
      // The browser hides why an upgrade failed: ask the server whether it is ready.
      const [errCode, message] = await diagnose();
      if (S.connected || !S.wanted) return;
      showError(errCode, message, "Cannot connect", "connection");
    }
    countdown();
  }

  async function diagnose() {
    try {
      const r = await fetch("/readyz", { cache: "no-store" });
      if (r.ok) return ["unavailable", "The chat connection was refused; retrying."];
      return httpError(r.status, await r.text());
    } catch (_) {
      return ["network", "The server cannot be reached; retrying."];
    }
  }

  function countdown() {
    if (S.connected || !S.wanted || !S.retryTimer) return;
    const seconds = Math.max(0, Math.ceil((S.retryAt - Date.now()) / 1000));
    setStatus(`Offline — reconnecting${seconds ? ` in ${seconds} s` : ""}…`, "busy");
    if (seconds) setTimeout(countdown, 1000);
  }

  window.addEventListener("online", () => { if (S.wanted && !S.connected && S.retryTimer) connect(); });
  window.addEventListener("offline", () => { if (S.connected) forceDrop("the network went away"); });

  // ---- forms ---------------------------------------------------------------------------------
  function fieldError(input, problem) {
    input.setAttribute("aria-invalid", problem ? "true" : "false");
    return problem;
  }

  $("join").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("name");
    const room = $("room");
    const problem = fieldError(name, nameProblem(name.value)) || fieldError(room, roomProblem(room.value));
    if (problem) {
      showError("bad_request", problem, "Cannot join", "join");
      (name.getAttribute("aria-invalid") === "true" ? name : room).focus();
      return;
    }
    clearErrors("join");
    clearErrors("connection");
    if (S.ws) { const old = S.ws; S.ws = null; old.close(1000); }
    clearTimeout(S.retryTimer);
    Object.assign(S, {
      user: name.value, room: room.value, wanted: true, connected: false, welcomed: false,
      token: null, session: null, sessions: new Set(), lastId: null, seen: new Set(), own: [],
      claimed: new Set(), outbox: [], inflight: new Map(), attempt: 0, retryTimer: null,
    });
    $("messages").replaceChildren();
    $("activity").replaceChildren();
    $("empty").hidden = false;
    $("empty").textContent = "Connecting…";
    showPending();
    setEnabled();
    connect();
  });

  $("send").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("text");
    const text = input.value;
    if (!S.wanted) return;
    if (!text.trim()) { input.focus(); return; }
    submit({ type: "text", text });
    input.value = "";
    input.focus();
  });

  $("upload").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("file").files[0];
    if (!file) { showError("bad_request", "Choose a file first.", "Nothing to upload"); return; }
    if (!S.connected) { showError("unavailable", "Wait until the connection is back.", "Not uploaded"); return; }
    const form = new FormData();
    form.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/files?room=${encodeURIComponent(S.room)}`);
    xhr.setRequestHeader("Authorization", `Bearer ${S.token}`);
    const box = $("progress-box");
    const bar = $("progress");
    const label = $("progress-text");
    const show = (percent) => {
      bar.value = percent;
      label.textContent = `${file.name}: ${Math.round(percent)} %`;
    };
    box.hidden = false;
    show(0);
    $("upload-button").disabled = true;
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) show((100 * e.loaded) / e.total); });
    const done = () => { box.hidden = true; setEnabled(); };
    xhr.addEventListener("load", () => {
      done();
      if (xhr.status === 201) {
        let info = null;
        try { info = JSON.parse(xhr.responseText); } catch (_) { /* handled below */ }
        if (!info || typeof info.id !== "string") { showError("internal", "The upload reply was unreadable.", "Not shared"); return; }
        submit({ type: "file", file_id: info.id });
        $("file").value = "";
        return;
      }
      const [code, message] = httpError(xhr.status, xhr.responseText);
      showError(code, message, `Upload of ${file.name} failed`);
    });
    xhr.addEventListener("error", () => { done(); showError("network", "The upload did not reach the server.", `Upload of ${file.name} failed`); });
    xhr.addEventListener("abort", done);
    xhr.send(form);
  });

  async function download(file) {
    if (!S.connected) { showError("unavailable", "Wait until the connection is back.", `Cannot download ${file.name}`); return; }
    let response;
    try {
      response = await fetch(`/api/files/${encodeURIComponent(file.id)}`, {
        headers: { Authorization: `Bearer ${S.token}` }, cache: "no-store",
      });
    } catch (_) {
      showError("network", "The download did not reach the server.", `Cannot download ${file.name}`);
      return;
    }
    if (!response.ok) {
      const [code, message] = httpError(response.status, await response.text());
      showError(code, message, `Cannot download ${file.name}`);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const save = el("a", { href: url, download: String(file.name), hidden: "" });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") $("errors").replaceChildren();
  });

  setEnabled();
  $("name").focus();
})();

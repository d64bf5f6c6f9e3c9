// The chat socket: connect, welcome, send with acks, heartbeat, and reconnect after any drop.
//
// The socket is reopened with `since=<last message id>` after a drop, with a backoff. Frames sent
// on a socket that dropped before their ack are matched against what the room then holds and sent
// again only if missing; frames typed while offline wait in the outbox.

import { $ } from "./dom.js";
import { clearErrors, httpError, showError } from "./errors.js";
import { addActivity, addMessage, setEnabled, setStatus, showPending } from "./render.js";
import { S } from "./state.js";

export function connect() {
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

/** Close the current socket on purpose (a new join): its close event is ignored. */
export function abandon() {
  if (S.ws) { const old = S.ws; S.ws = null; old.close(1000); }
  clearTimeout(S.retryTimer);
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

/** Send a `text` or `file` frame now, or once the connection is back. */
export function submit(frame) {
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

// What the page shows: the status line, the controls' state, messages and activity.

import { $, el } from "./dom.js";
import { compareIds } from "./rules.js";
import { S } from "./state.js";

export function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

export function setEnabled() {
  $("text").disabled = !S.wanted;
  $("send-button").disabled = !S.wanted;
  $("file").disabled = !S.connected;
  $("upload-button").disabled = !S.connected;
}

export function showPending() {
  const waiting = S.outbox.length;
  $("pending").textContent = waiting
    ? `${waiting} message${waiting === 1 ? "" : "s"} waiting to be sent when the connection is back.`
    : "";
}

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

// The file a message's link stands for; main.js downloads it when the link is clicked.
const linkedFiles = new WeakMap();
export const fileOf = (link) => linkedFiles.get(link);

export function addMessage(m) {
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
    linkedFiles.set(link, m.file);
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

export function addActivity(text, ts = Date.now()) {
  const when = new Date(ts);
  const item = el("li", {}, el("time", { datetime: when.toISOString(), text: clock(ts) }), ` ${text}`);
  const list = $("activity");
  list.append(item);
  while (list.children.length > 100) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

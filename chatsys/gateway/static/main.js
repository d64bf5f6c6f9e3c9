// chatsys web chat: ES modules, no dependencies, no build step. This module wires the forms.
//
// Safety: everything that comes from the network is put on the page with textContent (or as an
// attribute value, see dom.js); nothing is ever parsed as HTML. The page's Content-Security-Policy
// allows only this origin's scripts and refuses HTML sinks (Trusted Types) as a second line of
// defence.
//
// Modules: state.js (the one state object), socket.js (connect, resume, backoff), render.js
// (messages, activity, status), files.js (upload, download), errors.js, rules.js, dom.js.

import { $ } from "./dom.js";
import { clearErrors, showError } from "./errors.js";
import { download, upload } from "./files.js";
import { fileOf, setEnabled, showPending } from "./render.js";
import { nameProblem, roomProblem } from "./rules.js";
import { abandon, connect, submit } from "./socket.js";
import { S, startOver } from "./state.js";

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
  abandon();
  startOver(name.value, room.value);
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
  upload($("file").files[0]);
});

$("messages").addEventListener("click", (ev) => {
  const link = ev.target.closest("a.file");
  const file = link && fileOf(link);
  if (!file) return;
  ev.preventDefault();
  download(file);
});

document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") $("errors").replaceChildren();
});

setEnabled();
$("name").focus();

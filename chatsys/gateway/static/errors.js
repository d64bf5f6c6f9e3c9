// Errors: one clear line per problem, with the contract's code.

import { $, el } from "./dom.js";

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
export function showError(code, message, context = "", source = "action") {
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

export function clearErrors(source) {
  $("errors").querySelectorAll(`[data-source="${source}"]`).forEach((e) => e.remove());
}

/** The `{"error":{code,message}}` of an HTTP response, or its status when it has none. */
export function httpError(status, body) {
  try {
    const parsed = JSON.parse(body);
    if (parsed && parsed.error && typeof parsed.error.code === "string") {
      return [parsed.error.code, String(parsed.error.message || "")];
    }
  } catch (_) { /* not JSON */ }
  return [status, ""];
}

// Files over HTTP: upload with progress, then announce on the socket; download with the token.

import { $, el } from "./dom.js";
import { httpError, showError } from "./errors.js";
import { setEnabled } from "./render.js";
import { submit } from "./socket.js";
import { S } from "./state.js";

/** Upload `file` to the room (XMLHttpRequest, for its progress events), then share it. */
export function upload(file) {
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
}

/** Fetch with the bearer token (a plain link cannot send it), then save through a blob URL. */
export async function download(file) {
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

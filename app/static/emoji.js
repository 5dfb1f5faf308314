// The full emoji picker, for a reaction beyond the few the message offers: a
// dialog around the picker's frame (/emoji-picker, emoji-frame.js), made on
// first use so that its data loads only when someone wants it. The frame
// talks only by postMessage from this origin, and says only which emoji.

let dialog = null;
let frame = null;
let pending = null;  // the resolve of the open chooseEmoji()

function make() {
  dialog = document.createElement("dialog");
  dialog.className = "emoji-dialog";
  dialog.setAttribute("aria-label", "Choose an emoji");
  frame = document.createElement("iframe");
  frame.title = "Emoji picker: search or browse, then choose one";
  frame.src = "/emoji-picker";
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.textContent = "Close";
  close.onclick = () => finish(null);
  dialog.append(frame, close);
  dialog.addEventListener("close", () => finish(null));
  document.body.append(dialog);
  window.addEventListener("message", (event) => {
    if (event.origin !== window.location.origin || event.source !== frame.contentWindow) return;
    const said = event.data ?? {};
    if (said.ready && dialog.open) focusSearch();
    else if (typeof said.emoji === "string") finish(said.emoji);
    else if (said.close) finish(null);
  });
}

function focusSearch() {
  frame.focus();
  frame.contentWindow?.postMessage({ focus: true }, window.location.origin);
}

function finish(emoji) {
  const resolve = pending;
  pending = null;
  if (dialog.open) dialog.close();
  resolve?.(emoji);
}

// Open the picker; resolves with the emoji chosen, or null if it was closed.
export function chooseEmoji() {
  if (!dialog) make();
  finish(null);
  return new Promise((resolve) => {
    pending = resolve;
    dialog.showModal();
    focusSearch();
  });
}

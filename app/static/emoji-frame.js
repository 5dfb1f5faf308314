// The emoji picker (emoji-picker-element, pinned in app/web), in a frame of
// its own: it draws with inline styles, which the chat page's policy never
// allows (app/page.py). The frame holds no user text and no connection; it
// tells the page which emoji was chosen ({emoji}) or that the person closed it
// ({close}), and takes {focus} to put the cursor in its search field.
import "/static/vendor/emoji-picker/picker.js";

const picker = document.querySelector("emoji-picker");
const tell = (message) => parent.postMessage(message, location.origin);

picker.addEventListener("emoji-click", (event) => tell({ emoji: event.detail.unicode }));
addEventListener("keydown", (event) => {
  if (event.key === "Escape") tell({ close: true });
});
addEventListener("message", (event) => {
  if (event.origin !== location.origin || event.source !== parent) return;
  if (event.data?.focus) picker.shadowRoot.querySelector("input[type=search]")?.focus();
});
tell({ ready: true });

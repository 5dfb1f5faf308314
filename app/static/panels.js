// The rooms drawer and the people sheet of a narrow screen (chat.css, "Phones").
// One panel is open at a time: its button says so (aria-expanded), focus goes
// into it, and Escape, a tap on the scrim or choosing a room closes it and
// gives focus back to the button. On a wide screen both are always shown and
// the buttons are not.

const $ = (id) => document.getElementById(id);
const chat = $("chat");
const scrim = $("scrim");
const toggles = { rooms: $("rooms-toggle"), people: $("people-toggle") };
const panels = { rooms: $("rooms-panel"), people: $("people-panel") };
const narrow = window.matchMedia("(max-width: 720px)");

export function openPanel(which) {
  chat.dataset.panel = which;
  for (const [name, button] of Object.entries(toggles)) {
    button.setAttribute("aria-expanded", String(name === which));
  }
  scrim.hidden = false;
  // once it is visible (its visibility changes with the attribute above)
  const first = panels[which].querySelector("input, button:not([hidden]), [tabindex]");
  requestAnimationFrame(() => first?.focus());
}

export function closePanel({ refocus = false } = {}) {
  const which = chat.dataset.panel;
  if (!which) return;
  delete chat.dataset.panel;
  for (const button of Object.values(toggles)) button.setAttribute("aria-expanded", "false");
  scrim.hidden = true;
  if (refocus) toggles[which].focus();
}

export function isNarrow() {
  return narrow.matches;
}

for (const [which, button] of Object.entries(toggles)) {
  button.addEventListener("click", () => {
    if (chat.dataset.panel === which) closePanel({ refocus: true });
    else openPanel(which);
  });
}
scrim.addEventListener("click", () => closePanel({ refocus: true }));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && chat.dataset.panel) closePanel({ refocus: true });
});
narrow.addEventListener("change", () => closePanel());

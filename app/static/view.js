// DOM rendering for the Roomcast page. Every piece of user text goes through
// textContent, never innerHTML, so names and messages are shown as text.

import { formatted } from "./format.js";

const $ = (id) => document.getElementById(id);

export const els = {
  status: $("status"), whoami: $("whoami"), alert: $("alert"), login: $("login"),
  loginForm: $("login-form"), nameInput: $("name-input"), loginNote: $("login-note"),
  loginTitle: $("login-title"),
  chat: $("chat"),
  joinForm: $("join-form"), roomInput: $("room-input"), joined: $("joined-rooms"),
  open: $("open-rooms"), refresh: $("refresh-rooms"), title: $("room-title"),
  leave: $("leave-room"), messages: $("messages"), typing: $("typing"),
  composer: $("composer"), text: $("text-input"), members: $("member-list"),
  replyBar: $("reply-bar"), replyText: $("reply-text"), replyCancel: $("reply-cancel"),
  searchForm: $("search-form"), searchInput: $("search-input"),
  searchResults: $("search-results"), searchMore: $("search-more"),
  directs: $("direct-rooms"), notify: $("notify"), roomsToggle: $("rooms-toggle"),
  peopleToggle: $("people-toggle"), peopleCount: $("people-count"),
  settingsToggle: $("settings-toggle"), settingsDialog: $("settings-dialog"),
  topic: $("room-topic"), roomState: $("room-state"), roomKind: $("room-kind"),
  attach: $("attach"), fileInput: $("file-input"), uploads: $("uploads"),
  room: document.querySelector("section.room"),
};

// The names a text mentions, as the server reads them (docs/protocol.md):
// @name (letters and digits of any script, _ . -, less a trailing . or -)
// or @{any name}.
const MENTION = /(?<![\p{L}\p{M}\p{N}_])@(?:\{([^{}\n]{1,128})\}|([\p{L}\p{N}\p{M}_.\-]+))/gu;
export function mentionsOf(text) {
  return [...(text ?? "").matchAll(MENTION)].map(
    ([, braced, bare]) => (braced ?? bare.replace(/[.\-]+$/u, "")).normalize("NFC").trim());
}

export function mentionOf(name) {
  // how to mention `name`: @name, or @{name} where the short form would not carry it
  return mentionsOf(`@${name}`)[0] === name ? `@${name}` : `@{${name}}`;
}

// A room's name as people read it: a direct conversation is its other people.
export function roomLabel(room, me) {
  const people = room.with;
  if (!people) return room.name;
  const others = people.filter((p) => p !== me);
  return others.length ? others.join(", ") : me;
}

function count(n) {
  return n > 999 ? "999+" : String(n);
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "role" || key.startsWith("data-") || key.startsWith("aria-")) {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  node.append(...children);
  return node;
}

const PLAIN_ERRORS = {
  bad_request: "The server did not understand that request.",
  not_member: "You are not in that room any more. Join it again to write there.",
  too_large: "That message is too long.",
  rate_limited: "You are sending too fast. Wait a moment and try again.",
  unauthorized: "You are not allowed to do that.",
  not_found: "That message is not there any more.",
  unavailable: "The server cannot store messages right now. Your message will be retried.",
  internal: "Something went wrong on the server.",
  bad_name: "That name cannot be used: use 1 to 32 letters, digits or symbols.",
};

// (forbidden has no text here: the server's says which rule it was, and one
// text for all of them was wrong for most: a direct conversation not yours,
// a message past its edit window)
export function plainError(error) {
  const said = error?.message ? error.message[0].toUpperCase() + error.message.slice(1) : "";
  return PLAIN_ERRORS[error?.code]
    || (said && (/[.!?]$/.test(said) ? said : `${said}.`))
    || "Something went wrong.";
}

let alertTimer = null;
export function showAlert(text) {
  els.alert.textContent = text;
  els.alert.hidden = false;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => { els.alert.hidden = true; }, 8000);
}

export function showStatus(state, detail) {
  els.status.dataset.state = state;
  els.status.textContent = detail ? `${state} (${detail})` : state;
}

const timeFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat([], { dateStyle: "full", timeStyle: "short" });
const dayFormat = new Intl.DateTimeFormat([], { weekday: "long", day: "numeric", month: "long" });
const yearDayFormat = new Intl.DateTimeFormat([], { dateStyle: "long" });

// The day a message was sent, as people say it: Today, Yesterday, Monday 1
// December (with the year when it is not this one).
export function dayLabel(when, now = new Date()) {
  const midnight = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((midnight(now) - midnight(when)) / 86_400_000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  return (when.getFullYear() === now.getFullYear() ? dayFormat : yearDayFormat).format(when);
}

// One message as a list item. `send` is an outbox entry ({client_id, text,
// error}) for a message not yet stored: shown as sending, or as refused.
// `ui` says what to offer on a stored one: {quoted (the message it replies
// to, if loaded), mine, moderator, editing, picking (emoji to offer),
// confirming}. Its buttons carry data-action; the page handles them.
export function messageItem(message, send = null, ui = {}) {
  const stored = send === null;
  const when = stored ? new Date(message.ts) : null;
  const state = !stored ? (send.error ? "failed" : "pending") : message.deleted ? "deleted" : "";
  const item = el("li", { class: [state, ui.mentionsMe ? "mention" : "",
                                  ui.flashing ? "flash" : ""].join(" ").trim() },
    el("div", { class: "meta" },
      el("span", { class: "from", text: message.from }),
      el("time", stored ? { text: timeFormat.format(when), dateTime: when.toISOString(),
                            title: fullFormat.format(when) }
                        : { text: send.error ? plainError(send.error) : "sending…" }),
      message.edited && !message.deleted ? el("span", { class: "edited", text: "(edited)" }) : "",
      stored && !message.deleted ? actionBar(message, ui) : ""),
    message.reply_to ? replyLine(message.reply_to, ui.quoted) : "",
    ui.editing ? editForm(ui.draft ?? message.text)
      : message.deleted ? el("p", { class: "text", text: "message deleted" })
        : el("div", { class: "text" }, formatted(message.text)),
    stored && message.attachments?.length && !message.deleted
      ? el("div", { class: "attachments" },
           ...message.attachments.map((a) => attachmentItem(a, ui.link?.(a.id))))
      : "",
    message.reactions?.length ? reactionList(message.reactions, ui.me) : "",
    ui.picking ? picker(ui.picking) : "",
    ui.seenBy?.length ? el("p", { class: "seen", text: `Seen by ${ui.seenBy.join(", ")}` })
      : "");
  if (stored) item.dataset.seq = String(message.seq);
  else item.dataset.clientId = send.client_id;
  return item;
}

const THUMBNAIL = 320;  // the largest side of a thumbnail, as the server makes it

export function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// A file a message carries: an image as its thumbnail, opening the full size
// in a new tab; any other file as a card with its name and size, a download.
// `link` ({url, thumbnail}) comes from the files event; until it does, the
// file is named, with its place kept.
function attachmentItem(a, link) {
  const label = `${a.name} (${fileSize(a.size)})`;
  if (a.thumbnail) {
    const scale = Math.min(1, THUMBNAIL / Math.max(a.width, a.height));
    const size = { width: Math.max(1, Math.round(a.width * scale)),
                   height: Math.max(1, Math.round(a.height * scale)) };
    const picture = link
      ? el("img", { src: link.thumbnail, alt: a.name, loading: "lazy", ...size })
      : el("span", { class: "placeholder", text: a.name,
                     style: `width:${size.width}px;height:${size.height}px` });
    return link
      ? el("a", { class: "attachment image", href: link.url, target: "_blank",
                  rel: "noopener noreferrer", title: label, "data-file": a.id }, picture)
      : el("span", { class: "attachment image", "data-file": a.id }, picture);
  }
  const parts = [el("span", { class: "file-name", text: a.name }),
                 el("span", { class: "file-size", text: fileSize(a.size) })];
  return link
    ? el("a", { class: "attachment file", href: link.url, download: a.name, title: label,
                "data-file": a.id }, ...parts)
    : el("span", { class: "attachment file", "data-file": a.id }, ...parts);
}

// The files being uploaded from this page: name, progress, and what became
// of each ({name, size, sent, state: "uploading" | "waiting" | "failed", error}).
export function renderUploads(uploads) {
  els.uploads.hidden = uploads.length === 0;
  els.uploads.replaceChildren(...uploads.map((u) => el("li", { class: `upload ${u.state}` },
    el("span", { class: "file-name", text: u.name }),
    u.state === "failed"
      ? el("span", { class: "upload-error", text: u.error })
      : el("progress", { max: u.size || 1, value: u.sent,
                         "aria-label": `Sending ${u.name}` }),
    el("span", { class: "upload-state", text: u.state === "waiting"
      ? "connection lost: resuming…" : u.state === "failed" ? "" : fileSize(u.sent) }),
    el("button", { type: "button", class: "link", "data-upload": u.key,
                   text: u.state === "failed" ? "Dismiss" : "Cancel",
                   "aria-label": `${u.state === "failed" ? "Dismiss" : "Cancel"} ${u.name}` }))));
}

function button(action, text, props = {}) {
  return el("button", { type: "button", class: "act", "data-action": action, text, ...props });
}

function actionBar(message, ui) {
  return el("span", { class: "actions" },
    button("reply", "Reply"),
    button("react", "React", { "aria-expanded": String(Boolean(ui.picking)) }),
    ui.mine ? button("edit", "Edit") : "",
    !ui.mine && ui.governed ? button("report", "Report", { title: "Report it to the room's moderators" }) : "",
    ui.mine || ui.moderator
      ? button("delete", ui.confirming ? "Delete?" : "Delete",
               { class: ui.confirming ? "act danger" : "act" }) : "");
}

function replyLine(seq, quoted) {
  const said = !quoted ? `message ${seq}` : quoted.deleted ? "a deleted message"
    : `${quoted.from}: ${quoted.text}`;
  return el("button", { type: "button", class: "reply", "data-action": "jump",
                        "data-target": String(seq), text: `↪ ${said}`,
                        title: "Show the message this answers" });
}

function reactionList(reactions, me) {
  return el("div", { class: "reactions" }, ...reactions.map((r) => el("button", {
    type: "button", class: r.names.includes(me) ? "reaction mine" : "reaction",
    "data-action": "toggle", "data-emoji": r.emoji,
    "aria-pressed": String(r.names.includes(me)),
    title: r.names.join(", ")
      + (r.count > r.names.length ? ` and ${r.count - r.names.length} more` : ""),
  }, el("span", { class: "emoji", text: r.emoji }), ` ${r.count}`)));
}

function picker(emoji) {
  return el("div", { class: "picker", role: "group", "aria-label": "React with" },
    ...emoji.map((e) => button("pick", e, { class: "act emoji", "data-emoji": e,
                                            "aria-label": `React ${e}` })),
    button("more-emoji", "More…", { "aria-haspopup": "dialog", title: "Search every emoji" }));
}

function editForm(text) {
  const box = el("textarea", { class: "edit-text", rows: 2, value: text,
                               "aria-label": "Edit the message" });
  return el("form", { class: "edit-form", "data-action": "save" }, box,
    el("button", { type: "submit", text: "Save" }), button("cancel", "Cancel"));
}

// Render a room's stored messages, then its pending ones, keeping the reader's
// place: at the bottom if they were there, else at the same message.
export function renderMessages(room, ui = () => ({})) {
  const list = els.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const anchor = list.querySelector("li[data-seq]");
  const anchorTop = anchor ? anchor.offsetTop - list.scrollTop : 0;
  const items = [];
  if (room.messages.length && !room.olderExist) {
    items.push(el("li", { class: "edge", text: room.trimmed
      ? "Older messages were removed: this room keeps its history for a limited time."
      : "This is the start of the room." }));
  }
  if (!room.messages.length && !room.outbox.length && !room.olderExist) {
    items.push(el("li", { class: "edge empty", text: room.with
      ? "This is the start of your conversation. Say hello!"
      : "No messages here yet. Say hello!" }));
  }
  let day = null;
  let unreadShown = room.newAfter == null;
  for (const message of room.messages) {
    const label = dayLabel(new Date(message.ts));
    if (label !== day) {  // a line where a new day starts
      items.push(el("li", { class: "day", text: label }));
      day = label;
    }
    if (!unreadShown && message.seq > room.newAfter && message.from !== room.self) {
      items.push(el("li", { class: "new-line", text: "New messages" }));
      unreadShown = true;
    }
    items.push(messageItem(message, null, ui(message)));
  }
  for (const send of room.outbox) items.push(messageItem({ ...send, from: room.self }, send));
  const focused = focusedControl(list);
  list.replaceChildren(...items);
  const editing = list.querySelector(".edit-text");
  if (editing) {
    editing.focus();
    return;
  }
  if (atBottom || !anchor) {
    list.scrollTop = list.scrollHeight;
  } else {
    const same = list.querySelector(`li[data-seq="${anchor.dataset.seq}"]`);
    if (same) list.scrollTop = same.offsetTop - anchorTop;
  }
  // the keyboard's focus stays on the same control of the same message
  if (focused) list.querySelector(focused)?.focus({ preventScroll: true });
}

// A selector for the message control that has the focus, if one has.
function focusedControl(list) {
  const control = document.activeElement;
  const item = control?.closest?.("li[data-seq]");
  if (!item || !list.contains(item) || !control.dataset.action) return null;
  const emoji = control.dataset.emoji ? `[data-emoji="${CSS.escape(control.dataset.emoji)}"]` : "";
  return `li[data-seq="${item.dataset.seq}"] [data-action="${control.dataset.action}"]${emoji}`;
}

// Search results: each a button naming the room and sender, the text with the
// matched words in <mark> (as text, piece by piece).
// `rooms`: the page's rooms by name (a direct conversation is named by its people)
export function renderSearch(results, hasMore, rooms, me) {
  const where = (name) => roomLabel(rooms.get(name) ?? { name, with: null }, me);
  els.searchResults.replaceChildren(...results.map(({ message, marked }) => el("li", {},
    el("button", { type: "button", class: "result", "data-room": message.room,
                   "data-seq": String(message.seq) },
      el("span", { class: "where", text: `${where(message.room)} · ${message.from}` }),
      el("span", { class: "said" }, ...marked.map(([text, hit]) => (
        hit ? el("mark", { text }) : document.createTextNode(text))))))));
  if (!results.length) {
    els.searchResults.append(el("li", { class: "none", text: "Nothing found." }));
  }
  els.searchMore.hidden = !hasMore;
}

function badges(room) {
  return [
    room.mentions ? el("span", { class: "badge mention", text: `@${count(room.mentions)}`,
                                 "aria-label": `${room.mentions} mentioning you` }) : "",
    room.unread ? el("span", { class: "badge", text: count(room.unread),
                               "aria-label": `${room.unread} unread` }) : ""];
}

// The sidebar: your rooms (joined here, then the server's list of rooms you
// joined before), direct conversations, and the other rooms with people in
// them (`listed` is the server's rooms list); each room once, a room with
// people in it with how many.
export function renderRoomLists(rooms, current, listed, me, onSelect) {
  const here = new Map(listed.map((r) => [r.name, r.members]));
  const headcount = (name) => (here.get(name) > 0 ? [el("span", {
    class: "count", text: `${here.get(name)}`, "aria-label": `${here.get(name)} here now`,
    title: `${here.get(name)} here now` })] : []);
  const entry = (room) => el("li", {}, el("button", {
    type: "button", "aria-current": String(room.name === current),
    onclick: () => onSelect(room.name), title: room.name,
  }, el("span", { class: "name", text: roomLabel(room, me) }), ...badges(room),
  ...(room.with ? [] : headcount(room.name))));
  const known = [...rooms.values(), ...listed.filter((r) => "read" in r && !rooms.has(r.name))];
  const mine = new Set(known.map((r) => r.name));
  els.joined.replaceChildren(...known.filter((r) => !r.with).map(entry));
  els.directs.replaceChildren(...known.filter((r) => r.with).map(entry));
  const others = listed.filter((r) => !r.with && r.members > 0 && !mine.has(r.name));
  els.open.replaceChildren(...others.map(({ name }) =>
    el("li", {}, el("button", { type: "button", onclick: () => onSelect(name) },
      el("span", { text: name }), ...headcount(name)))));
}

// The room's title, topic, what holds you back there (`standing`: {text,
// mayWrite}) and who is here; with `onDirect` (token mode) each other member's
// name is a button that opens a direct conversation with them; with
// `moderating`, each other member has Mute, Remove and Ban buttons
// (data-action, data-user; `confirming` is the "user:action" awaiting its
// second click).
export function renderRoomHead(room, me, onDirect, standing, moderating, confirming) {
  els.title.textContent = room ? roomLabel(room, me) : "No room yet";
  els.leave.hidden = !room;
  els.peopleToggle.hidden = !room;
  els.peopleCount.textContent = room ? `(${room.count ?? room.members.length})` : "";
  els.settingsToggle.hidden = !room || !moderating;
  const topic = room?.settings?.topic ?? "";
  els.topic.textContent = topic;
  els.topic.hidden = !topic;
  els.roomState.textContent = standing?.text ?? "";
  els.roomState.hidden = !standing?.text;
  const mayWrite = Boolean(room) && (standing?.mayWrite ?? true);
  els.text.disabled = !mayWrite;
  for (const button of els.composer.querySelectorAll("button")) button.disabled = !mayWrite;
  const sanction = (name, action, label) => {
    const asking = confirming === `${name}:${action}`;
    return el("button", { type: "button", class: asking ? "act danger" : "act",
                          text: asking ? `${label}?` : label, "data-action": action,
                          "data-user": name, "aria-label": `${asking ? "Confirm: " : ""}${label} ${name}` });
  };
  els.members.replaceChildren(...(room ? room.members : []).map((name) => el("li", {},
    onDirect && name !== me
      ? el("button", { type: "button", class: "link person", text: name,
                       title: `Message ${name} directly`, onclick: () => onDirect(name) })
      : el("span", { text: name }),
    ...(moderating && name !== me ? [el("span", { class: "sanctions" },
      sanction(name, "mute", "Mute 10 min"), sanction(name, "remove", "Remove"),
      sanction(name, "ban", "Ban"))] : []))),
    // a large room's list comes a page at a time
    ...(room?.membersNext ? [el("li", { class: "more" }, el("button", {
      type: "button", class: "link", "data-action": "more-people",
      text: `Show more people (${room.members.length} of ${room.count})` }))] : []));
}

export function renderTyping(room) {
  const names = room ? [...room.typing.keys()] : [];
  els.typing.textContent = names.length === 0 ? ""
    : names.length === 1 ? `${names[0]} is typing…`
    : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
}

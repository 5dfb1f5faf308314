// The Roomcast page: one Socket.IO connection to /chat, the rooms it has
// joined, and the exactly-once delivery rules of docs/protocol.md: per room,
// `last` is the highest seq shown; older or repeated seqs are dropped, a gap
// is filled from history, and after a reconnect each room is rejoined with
// `since = last`. Sends carry a client_id and stay pending until acknowledged,
// so a send made offline goes out once the connection is back, exactly once.
// What is new: the server keeps the person's read marker per room; the page
// moves it when it shows a room's newest message in a visible tab, and shows
// unread and mention badges, mentions highlighted, "seen by" names and, once
// allowed by a click, a desktop notification for a mention in a hidden tab.
import {
  els, mentionsOf, plainError, renderMessages, renderRoomHead, renderRoomLists, renderSearch,
  renderTyping, renderUploads, messageItem, roomLabel, showAlert, showStatus,
} from "./view.js";
import { chooseEmoji } from "./emoji.js";
import { closePanel, isNarrow, openPanel } from "./panels.js";
import {
  applyAction, changedSettings, levelIn, mutedUntil, renderSettings, standing,
} from "./governance.js";

const config = document.body.dataset;
const params = new URLSearchParams(location.search);
// an invite to a private room (/?room=ROOM&invite=CODE): used on its join, then
// gone from the address bar (a link shared by accident lets nobody else in)
const invite = params.get("invite");
if (invite) {
  const url = new URL(location.href);
  url.searchParams.delete("invite");
  history.replaceState(null, "", url);
}
const ACK_TIMEOUT = 10000;      // ms to wait for an ack before trying again
const TYPING_IDLE = 3000;       // ms without a keystroke before we say we stopped
const TYPING_EXPIRY = 5000;     // ms after which someone else's typing signal lapses
const RETRYABLE = new Set(["unavailable", "rate_limited", "internal"]);

const rooms = new Map();        // name -> room state (see newRoom)
let current = null;             // name of the room in view
let openRooms = [];
let socket = null;
let myName = null;
let typingRoom = null;
let typingTimer = null;
let moderator = false;          // token mode: the token's moderator claim (the server checks)
const COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const CONFIRM_FOR = 4000;       // ms a Delete? button waits for the second click
const READ_EVERY = 1000;        // ms between two read marks of one room

function newRoom(name) {
  return {
    name, self: myName, messages: [], last: 0, olderExist: false, loadingOlder: false,
    members: [], typing: new Map(), unread: 0, outbox: [], joined: false,
    read: 0, mentions: 0, receipts: new Map(), with: null, marking: null,
    chain: Promise.resolve(),   // serialises deliveries for this room
    replyTo: null, editing: null, picking: null, confirming: null,  // seqs the UI is on
  };
}

function uiFor(room) {
  // what each message offers: see messageItem
  const bySeq = new Map(room.messages.map((m) => [m.seq, m]));
  const seen = seenBy(room);
  return (message) => ({
    mentionsMe: mentionsOf(message.text).includes(myName), seenBy: seen.get(message.seq),
    quoted: bySeq.get(message.reply_to) ?? null, me: myName,
    mine: message.from === myName, moderator: moderator || levelIn(room, false) >= 2,
    governed: Boolean(room.settings),
    editing: room.editing === message.seq, draft: room.draft,
    confirming: room.confirming === message.seq, flashing: room.flash === message.seq,
    picking: room.picking === message.seq ? emojiOffered(room) : null,
    link: (id) => linkFor(room, id),
  });
}

function emojiOffered(room) {
  const used = room.messages.flatMap((m) => (m.reactions ?? []).map((r) => r.emoji));
  return [...new Set([...COMMON_EMOJI, ...used])];
}

function seenBy(room) {
  // message seq -> the others whose read marker stops at it (the newest
  // message at or before their marker), for "seen by" under it
  const seqs = room.messages.filter((m) => !m.deleted).map((m) => m.seq);
  const at = new Map();
  for (const [user, seq] of room.receipts) {
    if (user === myName) continue;
    const upto = seqs.filter((s) => s <= seq).at(-1);
    if (upto === undefined) continue;
    if (!at.has(upto)) at.set(upto, []);
    at.get(upto).push(user);
  }
  return at;
}

function setReceipts(room, receipts) {
  for (const { user, seq } of receipts ?? []) {
    if (seq > (room.receipts.get(user) ?? -1)) room.receipts.set(user, seq);
  }
}

function render(room) {
  renderMessages(room, uiFor(room));
}

function clientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));  // works on plain http too
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function request(event, payload) {
  const ack = await socket.timeout(ACK_TIMEOUT).emitWithAck(event, payload);
  if (!ack || !ack.ok) throw Object.assign(new Error(event), { chat: ack?.error });
  return ack;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function requestPaced(event, payload) {
  // request(), waiting out rate_limited answers: a long catch-up is paced by
  // the server's reply budget
  for (;;) {
    try {
      return await request(event, payload);
    } catch (err) {
      if (err.chat?.code !== "rate_limited") throw err;
      await pause(err.chat.retry_after ?? 1000);
    }
  }
}

// -- delivery -----------------------------------------------------------------

function inOrder(room, task) {
  room.chain = room.chain.then(task).catch((err) => console.warn("delivery", err));
  return room.chain;
}

function take(room, entries) {
  // Take entries of the room's stream (messages, and changes to them) in seq
  // order, skipping any already taken; true if any was new.
  let added = false;
  for (const entry of [...entries].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0))) {
    if (entry.seq === undefined) {  // what retention removed: no gap, go on after it
      if (entry.to > room.last) {
        room.last = entry.to;
        room.trimmed = true;
        added = true;
      }
      continue;
    }
    if (entry.seq !== room.last + 1) continue;
    room.last = entry.seq;
    added = true;
    if (entry.kind) {
      applyChange(room, entry);
      continue;
    }
    room.messages.push(entry);
    room.outbox = room.outbox.filter((s) => s.client_id !== entry.client_id
                                            || entry.from !== myName);
    room.typing.delete(entry.from);
  }
  return added;
}

function applyChange(room, change) {
  if (change.target === undefined) {  // an action on the room (governance)
    const { out, note } = applyAction(room, change, myName);
    if (out) queueMicrotask(() => ousted(room, note));
    else if (note) showAlert(note);
    if (room.name === current) showHead(room);
    if (room.name === current) refreshSettings();  // (kept current)
    return;
  }
  // a change to a message not loaded here needs nothing: history shows it as it stands
  const message = room.messages.find((m) => m.seq === change.target);
  if (!message) return;
  if (change.kind === "edit") {
    message.text = change.text;
    message.edited = change.ts;
  } else if (change.kind === "delete") {
    message.text = "";
    message.deleted = true;
    delete message.reactions;
  } else {  // react, unreact: the change says where it left that emoji
    const others = (message.reactions ?? []).filter((r) => r.emoji !== change.emoji);
    const at = (message.reactions ?? []).findIndex((r) => r.emoji === change.emoji);
    const now = { emoji: change.emoji, count: change.count, names: change.names };
    if (change.count > 0) others.splice(at < 0 ? others.length : at, 0, now);
    message.reactions = others;
  }
}

function stream(ack) {
  // the entries of an ack that reads on, and first what retention removed of them
  return [...(ack.gone ? [ack.gone] : []), ...ack.messages, ...(ack.changes ?? [])];
}

async function catchUp(room, upto = Infinity) {
  while (room.last < upto) {
    const page = await requestPaced("history", { room: room.name, after: room.last,
                                                 limit: 200 });
    if (!take(room, stream(page)) || !page.more) break;
  }
}

function deliver(room, message) {
  return inOrder(room, async () => {
    if (message.seq <= room.last) return;
    const before = room.last;
    const appendOnly = !message.kind && room.outbox.length === 0 && message.seq === before + 1;
    if (message.seq > before + 1) await catchUp(room, message.seq - 1);  // a gap
    take(room, [message]);  // the gap's page may have brought it already
    showNew(room, before, appendOnly ? message : null);
  });
}

function caughtUp(room, seq) {
  // the server says the room is at `seq`: fetch what this page has not seen
  // (events the server's link to the other nodes may have lost)
  return inOrder(room, async () => {
    const before = room.last;
    if (seq > before) await catchUp(room, seq);
    showNew(room, before, null);
  });
}

function showNew(room, before, appended) {
  // show what arrived after seq `before`: `appended`, if it is the only new one
  if (room.last === before) return;
  const fresh = room.messages.filter((m) => m.seq > before && m.from !== myName
                                            && m.seq > room.read && !m.deleted);
  room.unread += fresh.length;
  room.mentions += fresh.filter((m) => room.with || mentionsOf(m.text).includes(myName)).length;
  if (room.name === current) {
    if (appended) appendItem(appended); else render(room);
    renderTyping(room);
    markRead(room);
  }
  renderLists();
}

// -- what is new ----------------------------------------------------------------

function atBottom() {
  const list = els.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function markRead(room) {
  // the room's newest message is on screen in a visible tab: move the marker
  // there (at most once a READ_EVERY per room; the server keeps the furthest)
  if (!room || room.name !== current || document.visibilityState !== "visible"
      || !atBottom() || room.last <= room.read || !room.joined || !socket?.connected) return;
  if (room.marking) return;
  room.marking = setTimeout(() => { room.marking = null; markRead(room); }, READ_EVERY);
  request("read", { room: room.name, seq: room.last }).then(reading, () => {});
}

function reading(state) {
  // where the person stands in a room: a read ack, or a read on another device
  const room = rooms.get(state.room);
  const listed = openRooms.find((r) => r.name === state.room);
  if (listed && state.read >= (listed.read ?? 0)) Object.assign(listed, state);
  if (room && state.read >= room.read) {
    room.read = state.read;
    room.unread = state.unread;
    room.mentions = state.mentions;
  }
  renderLists();
}

function notify(title, body, room) {
  // a desktop notification, only for a hidden tab and once the person allowed it
  if (document.visibilityState === "visible" || !("Notification" in window)
      || Notification.permission !== "granted") return;
  const shown = new Notification(title, { body, tag: `roomcast-${room}` });
  shown.onclick = () => { window.focus(); joinRoom(room); shown.close(); };
}

function showNotifyButton() {
  // once signed in: before, nothing could notify anyone
  els.notify.hidden = !socket || !("Notification" in window)
    || Notification.permission !== "default";
}

async function openDirect(name) {
  try {
    const ack = await request("direct", { with: [name] });
    await joinRoom(ack.room);
  } catch (err) {
    showAlert(plainError(err.chat));
  }
}

function appendItem(message) {
  const list = els.messages;
  const bottom = atBottom();
  const empty = list.querySelector("li.empty");  // "No messages here yet": not any more
  if (empty) return render(rooms.get(message.room));
  list.append(messageItem(message, null, uiFor(rooms.get(message.room))(message)));
  if (bottom || message.from === myName) list.scrollTop = list.scrollHeight;
}

// -- rooms --------------------------------------------------------------------

async function joinRoom(name, code = null) {
  if (rooms.has(name)) return selectRoom(name);
  const room = newRoom(name);
  rooms.set(name, room);
  try {
    await enter(room, code);
  } catch (err) {
    rooms.delete(name);
    showAlert(plainError(err.chat));
    return;
  }
  selectRoom(name);
  refreshOpenRooms();
}

function setMembers(room, listing) {
  // a join's ack, a catch_up or a small room's presence: every name of a small
  // room; of a large one, a first page, its count and where the rest begins
  room.members = listing.members;
  room.count = listing.count ?? listing.members.length;
  room.membersNext = listing.members_next ?? null;
}

function membersChanged(room, { members, joined, left, count }) {
  // a large room's presence: the tick's arrivals and departures, and its count
  if (members) return setMembers(room, { members, count });
  const here = new Set(room.members);
  for (const name of joined ?? []) here.add(name);
  for (const name of left ?? []) here.delete(name);
  room.members = [...here].sort();
  room.count = count;
}

async function morePeople(room) {
  // the next page of a large room's members
  const page = await request("members", { room: room.name, next: room.membersNext });
  room.members = [...new Set([...room.members, ...page.members])].sort();
  room.count = page.count;
  room.membersNext = page.members_next ?? null;
  if (room.name === current) showHead(room);
}

async function enter(room, code = null) {
  // a first join: the latest page (a room restored with unsent messages, too)
  const ack = await request("join", { room: room.name, ...(code ? { invite: code } : {}) });
  room.messages = ack.messages;
  room.last = ack.seq;
  room.olderExist = ack.more;
  room.trimmed = Boolean(ack.gone);  // older messages were removed (retention)
  setMembers(room, ack);
  room.joined = true;
  room.fresh = false;
  room.with = ack.with ?? null;
  room.settings = ack.settings ?? null;
  room.you = ack.you ?? null;
  setReceipts(room, ack.receipts);
  reading(ack);
  if (room.name === current) { showHead(room); render(room); }
}

function ousted(room, note) {
  // a ban or a removal took us out of the room: the server has; so does the page
  if (!rooms.has(room.name)) return;
  rooms.delete(room.name);
  saveOutbox();
  showAlert(note);
  if (current === room.name) selectRoom(rooms.keys().next().value ?? null);
  refreshOpenRooms();
}

// -- unsent messages, kept across a reload --------------------------------------

// The outbox of every room, in localStorage under the person's name, so that a
// reload while the server is away (the shell comes from the service worker,
// sw.js) shows what was typed, pending, and sends it once the server is back:
// each entry keeps its client_id, so a send that did go out is stored once.
function outboxKey() {
  return `roomcast.outbox.${myName}`;
}

function saveOutbox() {
  const kept = {};
  for (const room of rooms.values()) {
    const entries = room.outbox.filter((e) => !e.error)
      .map(({ client_id, text, reply_to, attachments }) => ({ client_id, text, reply_to,
                                                             attachments }));
    if (entries.length) kept[room.name] = entries;
  }
  if (Object.keys(kept).length) localStorage.setItem(outboxKey(), JSON.stringify(kept));
  else localStorage.removeItem(outboxKey());
}

function restoreOutbox() {
  let kept = {};
  try {
    kept = JSON.parse(localStorage.getItem(outboxKey()) ?? "{}");
  } catch {
    return;
  }
  for (const [name, entries] of Object.entries(kept)) {
    if (!Array.isArray(entries) || rooms.has(name)) continue;
    const room = newRoom(name);
    room.fresh = true;  // never joined by this page: a first join when connected
    room.outbox = entries.filter((e) => typeof e?.text === "string" && e.client_id)
      .map((e) => ({ ...e, attachments: Array.isArray(e.attachments) ? e.attachments : [],
                     inflight: false, error: null }));
    rooms.set(name, room);
  }
  const wanted = params.get("room");
  if (!current && rooms.size) selectRoom(rooms.has(wanted) ? wanted : rooms.keys().next().value);
}

async function rejoin(room) {
  // a refusal the server may lift (presence down, a fault) is retried with
  // back-off while connected: no reconnect would come to retry it. The join
  // runs in the room's order: an entry broadcast between the server's entering
  // us and its answer waits for the answer (as a gap, its fill would be
  // refused, not joined yet, and the entry lost until the room's next one)
  let ack = null;
  let failure = null;
  await inOrder(room, async () => {
    for (let delay = 500; !ack; delay = Math.min(delay * 2, 5000)) {
      const connection = socket;
      try {
        ack = await requestPaced("join", { room: room.name, since: room.last });
      } catch (err) {
        if (!RETRYABLE.has(err.chat?.code) || connection !== socket) {
          failure = err;
          return;
        }
        await pause(delay);
        if (!socket?.connected) {
          failure = err;
          return;
        }
      }
    }
    take(room, stream(ack));
    if (ack.more) await catchUp(room, ack.seq);
  });
  if (!ack) throw failure ?? new Error(`could not rejoin ${room.name}`);
  setMembers(room, ack);
  room.settings = ack.settings ?? null;
  room.you = ack.you ?? null;
  setReceipts(room, ack.receipts);
  if (room.name === current) showHead(room);  // who is here now, not before the drop
  room.joined = true;
  reading(ack);
  markRead(room);
}

async function leaveRoom(name) {
  try {
    await request("leave", { room: name });
  } catch (err) {
    if (err.chat?.code !== "not_member") return showAlert(plainError(err.chat));
  }
  rooms.delete(name);
  saveOutbox();  // (what was unsent there is dropped with the room)
  selectRoom(rooms.keys().next().value ?? null);
  refreshOpenRooms();
}

function selectRoom(name) {
  if (typingRoom && typingRoom !== name) stopTyping();
  const room = name ? rooms.get(name) : null;
  if (room && name !== current) {
    // opened with unread messages: a line above the first of them, while it is open
    room.newAfter = room.unread > 0 ? room.read : null;
  }
  current = name;
  if (room) closePanel();  // (a room chosen in the drawer: the room takes the screen)
  showReplyBar(room);
  showHead(room);
  if (room) render(room); else els.messages.replaceChildren();
  renderTyping(room);
  renderLists();
  markRead(room);
  // (on a phone, focusing the text field would open the keyboard over the room)
  if (room) (isNarrow() ? els.messages : els.text).focus();
  const url = new URL(location.href);
  if (name) url.searchParams.set("room", name); else url.searchParams.delete("room");
  history.replaceState(null, "", url);
}

function loadOlder(room) {
  // one load at a time per room; a caller that comes while one runs waits for it
  if (!room || !room.olderExist || room.messages.length === 0) return Promise.resolve();
  room.loadingOlder ||= (async () => {
    try {
      const page = await request("history", { room: room.name, before: room.messages[0].seq,
                                              limit: 50 });
      room.messages = [...page.messages, ...room.messages];
      room.olderExist = page.more;
      room.trimmed ||= Boolean(page.gone);
      if (room.name === current) render(room);
    } catch (err) {
      showAlert(plainError(err.chat));
    } finally {
      room.loadingOlder = null;
    }
  })();
  return room.loadingOlder;
}

let roomsRefresh = null;

function refreshOpenRoomsSoon() {
  // presence changes come in bursts (a thousand people joining after a
  // restart): ask for the rooms list once per burst, not once per change
  roomsRefresh ??= setTimeout(() => { roomsRefresh = null; refreshOpenRooms(); }, 2000);
}

async function refreshOpenRooms() {
  if (!socket?.connected) return;
  try {
    openRooms = (await request("rooms", {})).rooms;
    renderLists();
  } catch { /* the next refresh will do */ }
}

function renderLists() {
  renderRoomLists(rooms, current, openRooms, myName, (name) => joinRoom(name));
  const unread = [...rooms.values()].reduce((n, r) => n + r.unread, 0);
  document.title = unread ? `(${unread > 999 ? "999+" : unread}) Roomcast` : "Roomcast";
}

function showHead(room) {
  // in token mode a member's name opens a direct conversation with them; a
  // room's moderators see its settings and what they may do to its members
  const moderating = Boolean(room) && !room.with && levelIn(room, moderator) >= 2;
  renderRoomHead(room, myName, config.auth === "token" ? openDirect : null,
                 room ? standing(room, moderator) : null, moderating, room?.sanctioning);
  const muted = room ? mutedUntil(room) : null;
  if (muted) {  // the composer comes back when the mute ends
    clearTimeout(room.muteTimer);
    room.muteTimer = setTimeout(() => room.name === current && showHead(room),
                                muted - Date.now() + 100);
  }
}

// -- sending ------------------------------------------------------------------

function send(text) {
  const room = rooms.get(current);
  if (!room || !text.trim()) return;
  if (text.length > Number(config.maxText)) {
    return showAlert(`That message is too long (at most ${config.maxText} characters).`);
  }
  stopTyping();
  queue(room, text, [], room.replyTo);
  room.replyTo = null;
  showReplyBar(room);
  els.messages.scrollTop = els.messages.scrollHeight;
}

function queue(room, text, attachments, replyTo = null) {
  room.outbox.push({ client_id: clientId(), text, reply_to: replyTo, attachments,
                     inflight: false, error: null });
  saveOutbox();
  if (room.name === current) render(room);
  flush(room);
}

async function flush(room) {
  // One loop per room sends the outbox in order, one at a time; a send queued
  // while it runs is picked up by the same loop.
  if (room.flushing) return;
  room.flushing = true;
  try {
    for (;;) {
      const entry = room.outbox.find((e) => !e.error);
      if (!entry || !socket?.connected || !room.joined || !rooms.has(room.name)) return;
      try {
        const ack = await request("send", {
          room: room.name, text: entry.text, client_id: entry.client_id,
          ...(entry.reply_to ? { reply_to: entry.reply_to } : {}),
          ...(entry.attachments?.length ? { attachments: entry.attachments } : {}) });
        room.outbox = room.outbox.filter((e) => e !== entry);
        saveOutbox();
        await deliver(room, ack.message);
        if (room.name === current) render(room);
      } catch (err) {
        if (err.chat && !RETRYABLE.has(err.chat.code)) {
          entry.error = err.chat;
          saveOutbox();
          showAlert(plainError(err.chat));
          if (room.name === current) render(room);
        } else {  // timed out, busy or slowed down: the same client_id again, later
          setTimeout(() => flush(room), err.chat?.retry_after ?? 1000);
          return;
        }
      }
    }
  } finally {
    room.flushing = false;
  }
}

// -- files: sending them (tus, resumable), and links to read them ---------------

const UPLOAD_RETRIES = [0, 1000, 2000, 4000, 8000, 15000, 30000, 60000, 60000, 60000];
const LINK_MARGIN = 60_000;  // ms before a link expires at which it is asked for again
const uploads = [];          // files being sent from this page (see renderUploads)
const links = new Map();     // file id -> {url, thumbnail, expires} or {missing, expires}
const askingLinks = new Set();
let linksDue = null;         // the room whose links are asked for at the end of this turn

function sendFiles(files) {
  const room = rooms.get(current);
  if (!room || !room.joined || els.text.disabled) return;
  for (const file of files) upload(room, file);
}

// One file: granted (the upload event: the limits are counted then), sent with
// tus-js-client, which resumes after a dropped connection (retrying with the
// server's offset), then sent in a message of its own through the outbox.
async function upload(room, file) {
  const entry = { key: clientId(), name: file.name || "pasted file", size: file.size,
                  sent: 0, state: "uploading", error: null, tus: null, cancelled: false };
  uploads.push(entry);
  renderUploads(uploads);
  try {
    const { upload: grant } = await request("upload", { room: room.name, name: entry.name,
                                                        size: file.size });
    if (entry.cancelled) return;
    await new Promise((resolve, reject) => {
      entry.tus = new window.tus.Upload(file, {
        endpoint: new URL(grant.url, location.href).href,
        headers: { Authorization: `Bearer ${grant.token}` },
        metadata: { filename: entry.name },
        chunkSize: 8 * 1024 * 1024,
        retryDelays: UPLOAD_RETRIES,
        storeFingerprintForResuming: false,  // (a grant is for one upload: nothing to resume later)
        onProgress: (sent) => {
          Object.assign(entry, { sent, state: "uploading" });
          renderUploads(uploads);
        },
        onShouldRetry: (err) => {
          const status = err.originalResponse?.getStatus() ?? 0;
          const retry = !(status >= 400 && status < 500 && status !== 409 && status !== 423);
          if (retry) {
            entry.state = "waiting";
            renderUploads(uploads);
          }
          return retry;
        },
        onSuccess: resolve,
        onError: reject,
      });
      entry.tus.start();
    });
    forgetUpload(entry);
    queue(room, "", [grant.id]);
  } catch (err) {
    if (entry.cancelled) return;
    let said = null;
    try {
      said = JSON.parse(err.originalResponse?.getBody() ?? "null")?.error;
    } catch { /* not our error map */ }
    Object.assign(entry, { state: "failed",
                           error: plainError(err.chat ?? said ?? { code: "unavailable" }) });
    renderUploads(uploads);
  }
}

function forgetUpload(entry) {
  uploads.splice(uploads.indexOf(entry), 1);
  renderUploads(uploads);
}

function linkFor(room, id) {
  const link = links.get(id);
  if (link && link.expires - LINK_MARGIN > Date.now()) return link.missing ? null : link;
  if (linksDue === null) queueMicrotask(() => askLinks(linksDue));
  linksDue = room;
  return null;
}

async function askLinks(room) {
  linksDue = null;
  const now = Date.now();
  const wanted = [...new Set(room.messages.flatMap((m) => m.deleted ? []
    : (m.attachments ?? []).map((a) => a.id)))]
    .filter((id) => !askingLinks.has(id) && !(links.get(id)?.expires - LINK_MARGIN > now));
  for (let i = 0; i < wanted.length; i += 10) {  // (10 ids an ask)
    const ids = wanted.slice(i, i + 10);
    ids.forEach((id) => askingLinks.add(id));
    try {
      const ack = await request("files", { room: room.name, ids });
      for (const id of ids) {
        links.set(id, ack.files[id] ? { ...ack.files[id], expires: ack.expires }
          : { missing: true, expires: ack.expires });
      }
    } catch {
      // (not now: asked again at the next render)
    } finally {
      ids.forEach((id) => askingLinks.delete(id));
    }
  }
  if (wanted.length && room.name === current) render(room);
}

els.attach.addEventListener("click", () => els.fileInput.click());
els.fileInput.addEventListener("change", () => {
  sendFiles([...els.fileInput.files]);
  els.fileInput.value = "";
});
els.room.addEventListener("dragover", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault();
  els.room.classList.add("dropping");
});
els.room.addEventListener("dragleave", (event) => {
  if (!els.room.contains(event.relatedTarget)) els.room.classList.remove("dropping");
});
els.room.addEventListener("drop", (event) => {
  els.room.classList.remove("dropping");
  if (!event.dataTransfer?.files.length) return;
  event.preventDefault();
  sendFiles([...event.dataTransfer.files]);
});
els.text.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files ?? [])];
  if (!files.length) return;
  event.preventDefault();
  sendFiles(files);
});
els.uploads.addEventListener("click", (event) => {
  const key = event.target.closest("[data-upload]")?.dataset.upload;
  const entry = uploads.find((u) => u.key === key);
  if (!entry) return;
  entry.cancelled = true;
  entry.tus?.abort(true);  // (and DELETE: the server forgets it at once)
  forgetUpload(entry);
});

// -- changing messages: reply, react, edit, delete ----------------------------

function showReplyBar(room) {
  const quoted = room?.messages.find((m) => m.seq === room.replyTo);
  els.replyBar.hidden = !quoted;
  els.replyText.textContent = quoted ? `Replying to ${quoted.from}: ${quoted.text}` : "";
}

async function change(room, event, payload) {
  // the change comes back in the ack and is taken in the room's order, as
  // our own messages are; one that changed nothing needs nothing
  try {
    const ack = await request(event, { room: room.name, client_id: clientId(), ...payload });
    if (ack.change) await deliver(room, ack.change);
  } catch (err) {
    showAlert(plainError(err.chat));
  }
  if (room.name === current) render(room);
}

function toggleReaction(room, message, emoji) {
  const mine = (message.reactions ?? []).some((r) => r.emoji === emoji
                                                  && r.names.includes(myName));
  return change(room, mine ? "unreact" : "react", { seq: message.seq, emoji });
}

function onMessageAction(event) {
  const target = event.target.closest("[data-action]");
  const item = event.target.closest("li[data-seq]");
  const room = rooms.get(current);
  if (!target || !item || !room || target.tagName === "FORM") return;
  const seq = Number(item.dataset.seq);
  const message = room.messages.find((m) => m.seq === seq);
  if (!message) return;
  switch (target.dataset.action) {
    case "reply":
      room.replyTo = seq;
      showReplyBar(room);
      els.text.focus();
      return;
    case "react":
      room.picking = room.picking === seq ? null : seq;
      return render(room);
    case "pick":
      room.picking = null;
      return change(room, "react", { seq, emoji: target.dataset.emoji });
    case "more-emoji":
      return chooseEmoji().then((emoji) => {
        room.picking = null;
        if (room.name === current) render(room);
        els.messages.querySelector(`li[data-seq="${seq}"] [data-action=react]`)?.focus();
        return emoji ? change(room, "react", { seq, emoji }) : undefined;
      });
    case "toggle":
      return toggleReaction(room, message, target.dataset.emoji);
    case "edit":
      room.editing = seq;
      room.draft = message.text;
      return render(room);
    case "cancel":
      room.editing = null;
      return render(room);
    case "delete":  // a second click within CONFIRM_FOR deletes
      if (firstClick(room, "confirming", seq, render)) return undefined;
      return change(room, "delete", { seq });
    case "jump":
      return jumpTo(room, Number(target.dataset.target));
    case "report":
      return request("report", { room: room.name, seq })
        .then(() => showAlert("Reported to the room's moderators."))
        .catch((err) => showAlert(plainError(err.chat)));
    default:
  }
}

// -- governing rooms: settings, roles, sanctions, reports -----------------------

async function act(room, kind, payload) {
  // the action comes back in the ack and is taken in the room's order
  try {
    const ack = await request(kind, { room: room.name, client_id: clientId(), ...payload });
    if (rooms.has(room.name)) await deliver(room, ack.action);
    return ack;
  } catch (err) {
    showAlert(plainError(err.chat));
    return null;
  }
}

const SANCTIONS = { mute: { seconds: 600 }, remove: {}, ban: {} };

function onMemberAction(event) {
  const target = event.target.closest("[data-action]");
  const room = rooms.get(current);
  if (target?.dataset.action === "more-people" && room) {
    morePeople(room).catch((err) => showAlert(plainError(err.chat)));
    return;
  }
  if (!target || !room || !(target.dataset.action in SANCTIONS)) return;
  const { action, user } = target.dataset;
  // a removal or a ban takes a second click within CONFIRM_FOR
  if (action !== "mute" && firstClick(room, "sanctioning", `${user}:${action}`, showHead)) return;
  showHead(room);
  act(room, action, { user, ...SANCTIONS[action] });
}

function firstClick(room, field, asked, show) {
  // true on the first click of a two-click button (`room[field]` is what it
  // asks about, for CONFIRM_FOR ms; `show` redraws it); false on the second
  if (room[field] === asked) {
    room[field] = null;
    return false;
  }
  room[field] = asked;
  setTimeout(() => {
    if (room[field] !== asked) return;
    room[field] = null;
    if (room.name === current) show(room);
  }, CONFIRM_FOR);
  show(room);
  return true;
}

// Open the room settings dialog, or (refreshSettings) draw it again with what
// changed while it is open: never open it again once the person closed it
// while the answers were on their way.
function refreshSettings() {
  return els.settingsDialog.open ? openSettings({ refresh: true }) : undefined;
}

async function openSettings({ refresh = false } = {}) {
  const room = rooms.get(current);
  if (!room) return;
  try {
    const info = await request("room_info", { room: room.name });
    const level = levelIn({ you: info.you }, moderator);
    const [queue, audit] = info.governed && level >= 2
      ? await Promise.all([request("reports", { room: room.name }),
                           request("audit", { room: room.name, limit: 20 })])
      : [{ reports: [] }, { actions: [] }];
    room.settings = info.settings;
    if (refresh && !els.settingsDialog.open) return;  // closed meanwhile
    renderSettings(els.settingsDialog, room, info, level, queue.reports, audit.actions);
    if (!els.settingsDialog.open) els.settingsDialog.showModal();
  } catch (err) {
    showAlert(plainError(err.chat));
  }
}

async function onSettingsSubmit(event) {
  event.preventDefault();
  const room = rooms.get(current);
  const form = event.target;
  if (!room) return;
  if (form.dataset.action === "configure") {
    const asked = changedSettings(form, room.settings);
    if (!Object.keys(asked).length) return showAlert("Nothing to change.");
    if (await act(room, room.settings ? "configure" : "create", asked)) refreshSettings();
  } else if (form.dataset.action === "role") {
    const user = form.user.value.trim();
    if (await act(room, "role", { user, role: form.role.value || null })) refreshSettings();
  }
}

async function onSettingsClick(event) {
  const target = event.target.closest("button[data-action]");
  const room = rooms.get(current);
  if (!target || !room) return;
  const { action, user, seq } = target.dataset;
  if (action === "close") return els.settingsDialog.close();
  if (action === "invite") {
    try {
      const made = (await request("invite", { room: room.name, seconds: 7 * 86400 })).invite;
      const link = new URL("/", location.href);
      link.search = new URLSearchParams({ room: room.name, invite: made.code }).toString();
      const shown = els.settingsDialog.querySelector("input[name=invite-link]");
      shown.value = link.href;
      shown.hidden = false;
      shown.select();
    } catch (err) {
      showAlert(plainError(err.chat));
    }
    return;
  }
  if (action === "unban" || action === "unmute") {
    if (await act(room, action, { user })) refreshSettings();
  } else if (action === "resolve" || action === "delete-reported") {
    try {
      if (action === "delete-reported") await change(room, "delete", { seq: Number(seq) });
      await request("resolve", { room: room.name, seq: Number(seq) });
    } catch (err) {
      showAlert(plainError(err.chat));
    }
    refreshSettings();
  }
}

function onEditSubmit(event) {
  const form = event.target.closest("form.edit-form");
  const room = rooms.get(current);
  if (!form || !room) return;
  event.preventDefault();
  const seq = Number(form.closest("li[data-seq]").dataset.seq);
  const text = form.querySelector("textarea").value;
  room.editing = null;
  if (text.length > Number(config.maxText)) {
    showAlert(`That message is too long (at most ${config.maxText} characters).`);
  } else if (text.trim()) {
    change(room, "edit", { seq, text });
  }
  render(room);
}

async function jumpTo(room, seq) {
  // show message `seq`, loading older history until it is there
  while (!room.messages.some((m) => m.seq === seq) && room.olderExist) {
    const had = room.messages.length;
    await loadOlder(room);
    if (room.messages.length === had) break;  // could not load: said so already
  }
  if (room.name !== current) return;
  const item = els.messages.querySelector(`li[data-seq="${seq}"]`);
  if (!item) return showAlert("That message is not there any more.");
  item.scrollIntoView({ block: "center" });
  // highlighted for a moment, through any re-render meanwhile (a receipt, a message)
  room.flash = seq;
  item.classList.add("flash");
  setTimeout(() => {
    if (room.flash !== seq) return;
    room.flash = null;
    if (room.name === current) render(room);
  }, 2000);
}

// -- search -------------------------------------------------------------------

let search = { query: "", next: null, results: [] };

async function searchOn() {
  try {
    const ack = await request("search", {
      query: search.query, ...(search.next ? { cursor: search.next } : {}) });
    search.results.push(...ack.results);
    search.next = ack.next;
    renderSearch(search.results, Boolean(ack.next), rooms, myName);
  } catch (err) {
    showAlert(plainError(err.chat));
  }
}

async function openResult(event) {
  const hit = event.target.closest("button.result");
  if (!hit || !rooms.has(hit.dataset.room)) return;
  selectRoom(hit.dataset.room);
  await jumpTo(rooms.get(hit.dataset.room), Number(hit.dataset.seq));
}

// -- typing -------------------------------------------------------------------

function typing() {
  if (!current || !socket?.connected) return;
  if (typingRoom !== current) {
    stopTyping();
    typingRoom = current;
    socket.emit("typing", { room: current, active: true });
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE);
}

function stopTyping() {
  clearTimeout(typingTimer);
  if (typingRoom && socket?.connected && rooms.has(typingRoom)) {
    socket.emit("typing", { room: typingRoom, active: false });
  }
  typingRoom = null;
}

function someoneTyping({ room: name, user, active }) {
  const room = rooms.get(name);
  if (!room) return;
  clearTimeout(room.typing.get(user));
  if (active) {
    room.typing.set(user, setTimeout(() => {
      room.typing.delete(user);
      if (name === current) renderTyping(room);
    }, TYPING_EXPIRY));
  } else {
    room.typing.delete(user);
  }
  if (name === current) renderTyping(room);
}

// -- connection ---------------------------------------------------------------

function transportName() {
  return socket.io.engine?.transport?.name ?? "";
}

// In token mode the server takes the name from the token; show the same one.
function tokenClaims(token) {
  // read, not checked: the server checks the signature
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch { return {}; }
}

function tokenName(token) {
  const claims = tokenClaims(token);
  return claims.name ?? claims.sub ?? "?";
}

// -- token mode: where a token comes from, and what happens when it ends ------
// A token comes in the link (from the operator's sign-in page), from the
// server's --token-url (fetched with the browser's cookies: at the start when
// there is none, before the current one expires, and when one is refused), or
// pasted into the card. When the server refuses the token and the URL has no
// fresh one, the card asks for one (and links to --sign-in-url) while the
// rooms and what was typed wait: the session goes on where it was.

let renewTimer = null;
let fetchedAt = 0;  // when --token-url last gave a token (one refused soon after is not retried)
const REFETCH_AFTER = 10_000;

async function fetchToken() {
  if (!config.tokenUrl) return null;
  try {
    const response = await fetch(config.tokenUrl, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`token URL answered ${response.status}`);
    const { token } = await response.json();
    if (typeof token !== "string") throw new Error("token URL gave no token");
    fetchedAt = Date.now();
    return token;
  } catch (err) {
    console.warn("token URL", err);
    return null;
  }
}

function keepToken(auth, token) {
  auth.token = token;
  sessionStorage.setItem("roomcast.token", token);
  moderator = tokenClaims(token).moderator === true;
}

function scheduleRenewal(auth) {
  // at four fifths of the token's remaining life, fetch a fresh one, renew the
  // live connection with it and keep it for reconnects; a failure is tried
  // again, sooner each time
  clearTimeout(renewTimer);
  const exp = tokenClaims(auth.token).exp;
  if (!config.tokenUrl || typeof exp !== "number") return;
  const wait = Math.max(500, 0.8 * (exp * 1000 - Date.now()));
  renewTimer = setTimeout(async () => {
    const token = await fetchToken();
    if (token && tokenName(token) === myName) {
      keepToken(auth, token);
      if (socket?.connected) {
        await request("renew", { token }).catch((err) => console.warn("token renewal", err));
      }
    }
    if (socket?.auth === auth) scheduleRenewal(auth);
  }, wait);
}

async function tokenRefused(error) {
  const token = Date.now() - fetchedAt > REFETCH_AFTER ? await fetchToken() : null;
  if (token) {
    useToken(token);
    return;
  }
  clearTimeout(renewTimer);
  sessionStorage.removeItem("roomcast.token");
  els.chat.hidden = true;
  closePanel();
  els.status.hidden = true;
  els.loginTitle.textContent = "Sign in again";
  els.loginNote.textContent = `Your access has ended (${error.message}). Sign in again to`
    + " carry on where you were: your rooms and anything you typed are kept.";
  els.loginNote.hidden = false;
  els.login.hidden = false;
  els.nameInput.value = "";
  els.nameInput.focus();
}

// A new token: the same person's goes on with this session; another person's
// (or the first one) gets a page of their own.
function useToken(token) {
  const claims = tokenClaims(token);
  if (!socket) {
    sessionStorage.setItem("roomcast.token", token);
    return connect(token);
  }
  if ((claims.name ?? claims.sub ?? myName) !== myName) {
    sessionStorage.setItem("roomcast.token", token);
    return location.reload();
  }
  keepToken(socket.auth, token);
  els.loginNote.hidden = true;
  els.login.hidden = true;
  els.chat.hidden = false;
  els.status.hidden = false;
  scheduleRenewal(socket.auth);
  return socket.connect();
}

function connect(credential) {
  const tokenMode = config.auth === "token";
  const name = tokenMode ? tokenName(credential) : credential;
  // catch_up: this page fetches what it misses, so the server may skip live
  // events for it while it reads slower than its rooms speak, not cut it off
  const auth = { ...(tokenMode ? { token: credential } : { name }), catch_up: true };
  myName = name;
  moderator = tokenMode && tokenClaims(credential).moderator === true;
  els.whoami.textContent = `You are ${name}`;
  els.whoami.hidden = false;
  els.login.hidden = true;
  els.chat.hidden = false;
  els.roomsToggle.hidden = false;
  // a phone with no room to show yet: the rooms, to choose one
  if (!current && !params.get("room") && isNarrow()) openPanel("rooms");
  const transports = params.get("transport") === "polling" ? ["polling"]
                                                            : ["polling", "websocket"];
  restoreOutbox();
  // full jitter: each reconnect waits anywhere from 0 to twice the back-off, so
  // the pages of a node that went away do not come back as one herd
  socket = io(config.namespace, { auth, transports, randomizationFactor: 1 });
  els.status.hidden = false;
  showStatus("connecting");
  showNotifyButton();
  if (tokenMode) scheduleRenewal(auth);

  socket.on("connect", async () => {
    showStatus("connected", transportName());
    socket.io.engine.once("upgrade", () => showStatus("connected", transportName()));
    for (const room of rooms.values()) {
      try {
        await (room.fresh ? enter(room) : rejoin(room));
      } catch (err) { console.warn("rejoin", err); }
    }
    if (current) render(rooms.get(current));
    for (const room of rooms.values()) flush(room);
    refreshOpenRooms();
    const wanted = params.get("room");
    if (wanted && !rooms.has(wanted)) { params.delete("room"); joinRoom(wanted, invite); }
  });
  socket.on("disconnect", (reason) => {
    for (const room of rooms.values()) room.joined = false;
    showStatus(navigator.onLine ? "reconnecting" : "offline");
    // the client reconnects by itself after a network or transport failure,
    // but not when the server ended the namespace session: ask again then
    if (reason === "io server disconnect") setTimeout(() => socket?.connect(), 1000);
  });
  socket.io.on("reconnect_attempt", (n) => showStatus(
    navigator.onLine ? "reconnecting" : "offline", `attempt ${n}`));
  socket.on("connect_error", (err) => {
    if (err.data?.code === "unauthorized" && tokenMode) {
      tokenRefused(err.data);
    } else if (err.data?.code) {  // refused by the server, not a network failure
      showAlert(plainError(err.data));
      if (err.data.code === "bad_name" || err.data.code === "unauthorized") logout();
    } else {
      showStatus(navigator.onLine ? "reconnecting" : "offline");
    }
  });
  socket.on("message", (message) => {
    const room = rooms.get(message.room);
    if (room) deliver(room, message);
  });
  socket.on("change", (change) => {
    const room = rooms.get(change.room);
    if (room) deliver(room, change);
  });
  socket.on("report", (report) => {
    if (els.settingsDialog.open && report.room === current) return refreshSettings();
    if (!("resolved" in report)) showAlert(`New report in ${report.room}: see its settings.`);
  });
  socket.on("catch_up", (event) => {
    const { room: name, seq } = event;
    const room = rooms.get(name);
    if (!room || !room.joined) return;  // a rejoin catches up by itself
    setMembers(room, event);
    if (name === current) showHead(room);
    caughtUp(room, seq);
  });
  socket.on("presence", (event) => {
    const room = rooms.get(event.room);
    if (room) {
      membersChanged(room, event);
      if (event.room === current) showHead(room);
    }
    refreshOpenRoomsSoon();
  });
  socket.on("typing", someoneTyping);
  socket.on("read", reading);
  socket.on("receipt", ({ room: name, receipts }) => {
    const room = rooms.get(name);
    if (!room) return;
    setReceipts(room, receipts);
    if (name === current) render(room);
  });
  socket.on("mention", ({ room: name, message }) => {
    // a joined room counts it with the message itself; another one is listed anew
    if (!rooms.has(name)) refreshOpenRoomsSoon();
    const where = rooms.get(name) ?? openRooms.find((r) => r.name === name);
    notify(`${message.from} in ${where ? roomLabel(where, myName) : name}`, message.text, name);
  });
  socket.on("direct", ({ room: name, from }) => {
    refreshOpenRoomsSoon();
    notify(`${from} started a conversation with you`, "", name);
  });
}

function logout() {
  clearTimeout(renewTimer);
  socket?.disconnect();
  socket = null;
  localStorage.removeItem("roomcast.name");
  sessionStorage.removeItem("roomcast.token");
  closePanel();
  els.chat.hidden = true;
  els.roomsToggle.hidden = true;
  els.login.hidden = false;
  els.whoami.hidden = true;
  els.status.hidden = true;  // (nothing is connected before signing in)
  showNotifyButton();
  els.nameInput.focus();
}

// -- wiring -------------------------------------------------------------------

if ("serviceWorker" in navigator) {  // the app shell, for a reload while the server is away
  navigator.serviceWorker.register("/sw.js").catch((err) => console.warn("service worker", err));
}

els.loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = els.nameInput.value.trim();
  if (!value) return;
  if (config.auth === "token") {
    useToken(value);
    return;
  }
  localStorage.setItem("roomcast.name", value);
  connect(value);
});
els.joinForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = els.roomInput.value.trim();
  if (!els.roomInput.checkValidity()) {
    return showAlert("Room names are 1 to 64 letters, digits or _ . : -");
  }
  const kind = els.roomKind?.value;
  if (kind) {  // a new room of one's own: created first, then joined
    try {
      await request("create", { room: name, private: kind === "private",
                                client_id: clientId() });
    } catch (err) {
      return showAlert(err.chat?.code === "conflict"
        ? `${name} exists already: pick another name, or join it as it is.`
        : plainError(err.chat));
    }
    els.roomKind.value = "";
  }
  els.roomInput.value = "";
  joinRoom(name);
});
els.members.addEventListener("click", onMemberAction);
els.settingsToggle.addEventListener("click", () => openSettings());
els.settingsDialog.addEventListener("submit", onSettingsSubmit);
els.settingsDialog.addEventListener("click", onSettingsClick);
els.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(els.text.value);
  els.text.value = "";
});
els.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    els.composer.requestSubmit();
  }
});
els.text.addEventListener("input", typing);
els.messages.addEventListener("click", onMessageAction);
els.messages.addEventListener("submit", onEditSubmit);
els.messages.addEventListener("input", (event) => {
  const room = rooms.get(current);
  if (room && event.target.matches(".edit-text")) room.draft = event.target.value;
});
els.messages.addEventListener("keydown", (event) => {
  const room = rooms.get(current);
  if (!room || !event.target.matches(".edit-text")) return;
  if (event.key === "Escape") {
    room.editing = null;
    render(room);
  } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    event.target.form.requestSubmit();
  }
});
let pressTimer = null;  // a long press on a touch screen opens a message's actions
els.messages.addEventListener("pointerdown", (event) => {
  const item = event.target.closest("li[data-seq]");
  if (event.pointerType !== "touch" || !item) return;
  pressTimer = setTimeout(() => {
    for (const open of els.messages.querySelectorAll("li.open")) open.classList.remove("open");
    item.classList.add("open");
  }, 500);
});
for (const type of ["pointerup", "pointercancel", "pointerleave"]) {
  els.messages.addEventListener(type, () => clearTimeout(pressTimer));
}
els.replyCancel.addEventListener("click", () => {
  const room = rooms.get(current);
  if (room) room.replyTo = null;
  showReplyBar(room);
});
els.searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = els.searchInput.value.trim();
  if (!query || !socket?.connected) return;
  search = { query, next: null, results: [] };
  searchOn();
});
els.searchMore.addEventListener("click", searchOn);
els.searchResults.addEventListener("click", openResult);
els.messages.addEventListener("scroll", () => {
  if (els.messages.scrollTop < 40) loadOlder(rooms.get(current));
});
els.leave.addEventListener("click", () => current && leaveRoom(current));
els.messages.addEventListener("scroll", () => markRead(rooms.get(current)));
// A view at the newest message stays there when the list gets shorter (a
// phone's keyboard opening, a window resized): the last message stays in view.
let pinned = true;
els.messages.addEventListener("scroll", () => { pinned = atBottom(); });
new ResizeObserver(() => {
  if (pinned) els.messages.scrollTop = els.messages.scrollHeight;
}).observe(els.messages);
document.addEventListener("visibilitychange", () => markRead(rooms.get(current)));
els.notify.addEventListener("click", async () => {
  // the browser's prompt, only ever after this click
  await Notification.requestPermission();
  showNotifyButton();
});
showNotifyButton();
els.refresh.addEventListener("click", refreshOpenRooms);
window.addEventListener("online", () => socket && !socket.connected && socket.connect());
window.addEventListener("offline", () => showStatus("offline"));
setInterval(refreshOpenRooms, 15000);

if (config.auth === "token") {
  // a token in the link (e.g. from a sign-in page) is kept for this tab only
  const token = params.get("token") || sessionStorage.getItem("roomcast.token");
  if (token) {
    sessionStorage.setItem("roomcast.token", token);
    const url = new URL(location.href);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
    connect(token);
  } else {
    els.nameInput.focus();
    fetchToken().then((fetched) => fetched && !socket && useToken(fetched));
  }
} else {
  const initialName = (params.get("name") || localStorage.getItem("roomcast.name") || "")
    .trim();
  if (initialName) {
    if (params.get("name")) localStorage.setItem("roomcast.name", initialName);
    connect(initialName);
  } else {
    els.nameInput.focus();
  }
}

// Governed rooms on the page (docs/protocol.md, "Governing rooms"): what a
// room's settings and your standing in it mean for you, what each action in
// its stream changes, and the room settings dialog for its owners and
// moderators. The server decides every action; the page only offers what
// your role allows and says plainly what holds you back.

import { el } from "./view.js";

const LEVEL = { owner: 3, moderator: 2, member: 1 };
const timeFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat([], { dateStyle: "medium", timeStyle: "short" });

function until(ms) {
  const when = new Date(ms);
  return when.toDateString() === new Date().toDateString()
    ? timeFormat.format(when) : dateFormat.format(when);
}

// Your level in a room: your role's, or a moderator's everywhere with the
// token's moderator claim.
export function levelIn(room, moderatorClaim) {
  return Math.max(LEVEL[room.you?.role] ?? 0, moderatorClaim ? 2 : 0);
}

export function mutedUntil(room) {
  const muted = room.you?.muted;
  return muted && muted > Date.now() ? muted : null;
}

// What holds you back in a room now, as one plain sentence (null: nothing),
// and whether you may write there.
export function standing(room, moderatorClaim) {
  const settings = room.settings;
  const level = levelIn(room, moderatorClaim);
  const muted = mutedUntil(room);
  if (muted) return { text: `You are muted here until ${until(muted)}.`, mayWrite: false };
  if (settings?.locked && level < 2) {
    return { text: "This room is read-only: only its moderators write here.", mayWrite: false };
  }
  if (settings?.slow && level < 2) {
    return { text: `Slow mode: one message every ${settings.slow} s.`, mayWrite: true };
  }
  return { text: null, mayWrite: true };
}

// Apply an action of the room's stream (a change without target) to what the
// page knows; says whether it took you out of the room, and what to tell you.
export function applyAction(room, action, me) {
  if (action.settings) room.settings = { ...(room.settings ?? {}), ...action.settings };
  if (action.kind === "create" && action.from === me) room.you = { role: "owner" };
  if (action.user !== me) return { out: false, note: null };
  const why = action.reason ? `: ${action.reason}` : "";
  switch (action.kind) {
    case "ban":
      return { out: true, note: action.until
        ? `You were banned from ${room.name} until ${until(action.until)}${why}.`
        : `You were banned from ${room.name}${why}.` };
    case "remove":
      return { out: true, note: `You were removed from ${room.name}${why}.` };
    case "mute":
      room.you = { ...(room.you ?? { role: null }), muted: action.until };
      return { out: false, note: `You are muted in ${room.name} until ${until(action.until)}${why}.` };
    case "unmute":
      room.you = { ...(room.you ?? { role: null }) };
      delete room.you.muted;
      return { out: false, note: `You may write in ${room.name} again.` };
    case "role":
      room.you = { ...(room.you ?? {}), role: action.role };
      return { out: false, note: action.role
        ? `You are now a ${action.role} of ${room.name}.`
        : `You no longer have a role in ${room.name}.` };
    default:
      return { out: false, note: null };
  }
}

// One action as a line of the audit log.
export function describe(action) {
  const who = action.user ?? "";
  const said = {
    create: () => "created the room",
    configure: () => `changed ${Object.keys(action.settings ?? {}).join(", ")}`,
    role: () => (action.role ? `made ${who} a ${action.role}` : `took ${who}'s role away`),
    remove: () => `removed ${who}`,
    ban: () => (action.until ? `banned ${who} until ${until(action.until)}` : `banned ${who}`),
    unban: () => `unbanned ${who}`,
    mute: () => `muted ${who} until ${until(action.until)}`,
    unmute: () => `unmuted ${who}`,
  }[action.kind]?.() ?? action.kind;
  return `${action.from} ${said}${action.reason ? ` (${action.reason})` : ""}`;
}

// The room settings dialog's content: the settings form (owners also see who
// may join and what is kept), the people with a role, a ban or a mute, the
// form to give a role, the open reports and the latest actions. Its buttons
// carry data-action (and data-user / data-seq); the page handles them.
export function renderSettings(dialog, room, info, level, reports, actions) {
  const owner = level >= 3;
  const settings = info.settings ?? { private: false, topic: "", slow: 0, locked: false,
                                      retention: 0 };
  const field = (label, input) => el("label", { class: "field" }, el("span", { text: label }),
                                     input);
  const form = el("form", { class: "settings-form", "data-action": "configure" },
    field("Topic", el("input", { name: "topic", value: settings.topic, maxLength: 300 })),
    field("Slow mode (seconds between one person's messages; 0: off)",
          el("input", { name: "slow", type: "number", min: 0, max: 21600,
                        value: String(settings.slow) })),
    field("Read-only", el("input", { name: "locked", type: "checkbox",
                                     checked: settings.locked })),
    ...(owner ? [
      field("Private (members only)", el("input", { name: "private", type: "checkbox",
                                                    checked: settings.private })),
      field("Keep messages for (days; 0: the server's time)",
            el("input", { name: "retention", type: "number", min: 0,
                          value: String(Math.round(settings.retention / 86400)) })),
    ] : []),
    el("button", { type: "submit", text: "Save settings" }));
  const people = el("ul", { class: "people" }, ...info.people.map((p) => el("li", {},
    el("span", { class: "name", text: p.user }),
    el("span", { class: "role", text: [p.role, "banned" in p ? "banned" : "",
                                       "muted" in p ? "muted" : ""].filter(Boolean).join(", ")
                                      || "no role" }),
    "banned" in p ? el("button", { type: "button", class: "act", text: "Unban",
                                   "data-action": "unban", "data-user": p.user }) : "",
    "muted" in p ? el("button", { type: "button", class: "act", text: "Unmute",
                                  "data-action": "unmute", "data-user": p.user }) : "")));
  const roles = ["member", ...(owner ? ["moderator", "owner"] : [])];
  const give = el("form", { class: "role-form", "data-action": "role" },
    field("Name", el("input", { name: "user", required: true, maxLength: 32 })),
    field("Role", el("select", { name: "role" },
      ...roles.map((r) => el("option", { value: r, text: r })),
      el("option", { value: "", text: "none" }))),
    el("button", { type: "submit", text: "Give role" }));
  const queue = el("ul", { class: "reports" }, ...reports.map((r) => el("li", {},
    el("p", { class: "reported", text: `${r.from}: ${r.text}` }),
    el("p", { class: "why", text: `reported by ${r.by}${r.reason ? `: ${r.reason}` : ""}` }),
    el("button", { type: "button", class: "act danger", text: "Delete the message",
                   "data-action": "delete-reported", "data-seq": String(r.seq) }),
    el("button", { type: "button", class: "act", text: "Resolve",
                   "data-action": "resolve", "data-seq": String(r.seq) }))));
  if (!reports.length) queue.append(el("li", { class: "none", text: "No open reports." }));
  const log = el("ul", { class: "audit" }, ...actions.map((a) => el("li", {},
    el("time", { text: until(a.ts), dateTime: new Date(a.ts).toISOString() }), " ",
    el("span", { text: describe(a) }))));
  const inviting = settings.private ? [
    el("button", { type: "button", text: "Make an invite link (7 days)",
                   "data-action": "invite" }),
    el("input", { name: "invite-link", readOnly: true, hidden: true,
                  "aria-label": "The invite link: whoever opens it joins as a member" })] : [];
  dialog.replaceChildren(
    el("h2", { id: "settings-title", text: `Settings of ${room.name}` }),
    form,
    el("h3", { text: "People" }), people, give, ...inviting,
    el("h3", { text: "Reports" }), queue,
    el("h3", { text: "Latest actions" }), log,
    el("button", { type: "button", class: "close", text: "Close", "data-action": "close" }));
}

// What a settings form asks to change: only the fields that differ.
export function changedSettings(form, settings) {
  const now = settings ?? { private: false, topic: "", slow: 0, locked: false, retention: 0 };
  const asked = { topic: form.topic.value.trim(), slow: Number(form.slow.value),
                  locked: form.locked.checked };
  if (form.private) asked.private = form.private.checked;
  if (form.retention) asked.retention = Number(form.retention.value) * 86400;
  return Object.fromEntries(Object.entries(asked).filter(([key, value]) => now[key] !== value));
}

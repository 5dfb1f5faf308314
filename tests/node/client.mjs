// One socket.io-client 4 user of Roomcast, driven by tests/test_js_client.py.
// argv[2] is a JSON config: {url, nsp, transports, parser, name, room, send, expect,
// change, changes, mentions, read, catchUp, presence}. It connects, joins `room` (with `since: undefined`), sends `send`
// messages (with `client_id: undefined`), with `change` edits and reacts to its first
// one, with `read` marks the room read up to its last message, waits for `expect`
// messages, `changes` change events and `mentions` mention events, and prints
// one JSON line per step on stdout: the test reads them as they come.
// With `catchUp` it follows docs/protocol.md's rules for getting every entry once,
// in order (its last seq, gaps and `catch_up` filled from `history`), and says so
// at connect (`auth.catch_up`): it then reports the texts and changes it handled.
// With `presence` it reports the room's count and names as its presence events
// tell them (a large room's coalesced `joined`/`left` too) once they reach that count.
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

const config = JSON.parse(process.argv[2]);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const socket = io(config.url + (config.nsp || "/chat"), {
  transports: config.transports,
  parser: config.parser === "msgpack" ? msgpackParser : undefined,
  auth: config.catchUp ? { name: config.name, catch_up: true } : { name: config.name },
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
});
const received = [];
const changes = [];
let started = false;

socket.on("connect_error", (err) => say({ step: "connect_error", message: err.message }));

// -- catchUp: every entry of the room once, in order -------------------------------
let last = 0;
let disconnects = 0;
let joinedRoom;
let chain = new Promise((resolve) => { joinedRoom = resolve; });  // entries wait for the join
const handled = { texts: [], changes: 0 };
const inOrder = (work) => { chain = chain.then(work).catch((err) => say({ step: "error", message: String(err) })); };
function take(entry) {
  if (entry.seq !== last + 1) return;
  last = entry.seq;
  if (entry.kind) handled.changes += 1; else handled.texts.push(entry.text);
  if (handled.texts.length === config.expect && handled.changes === (config.changes || 0)) {
    // (the first 10 characters of each: a JSON line the test reads whole)
    say({ step: "received", texts: handled.texts.map((t) => t.slice(0, 10)),
          changes: handled.changes, disconnects });
  }
}
async function fetchUpTo(upto) {
  while (last < upto) {
    const page = await socket.timeout(10000).emitWithAck("history", { room: config.room, after: last, limit: 200 });
    if (!page.ok) throw new Error(page.error.code);
    const before = last;
    for (const entry of [...page.messages, ...page.changes].sort((a, b) => a.seq - b.seq)) take(entry);
    if (!page.more || last === before) break;
  }
}
const entry = (item) => inOrder(async () => {
  if (item.seq <= last) return;
  if (item.seq > last + 1) await fetchUpTo(item.seq - 1);
  take(item);
});
if (config.catchUp) {
  socket.on("disconnect", () => { disconnects += 1; });
  socket.on("change", entry);
  socket.on("catch_up", ({ room, seq }) => {
    if (room === config.room) inOrder(() => (seq > last ? fetchUpTo(seq) : undefined));
  });
}
socket.io.engine.on("upgrade", (transport) => say({ step: "upgraded", transport: transport.name }));
socket.on("message", (message) => {
  if (config.catchUp) return entry(message);
  if (message.user === config.name) return;
  received.push(message.text);
  if (received.length === config.expect) {
    say({ step: "received", texts: received, transport: socket.io.engine.transport.name });
  }
});
socket.on("change", (change) => {
  changes.push({ seq: change.seq, kind: change.kind, target: change.target,
                 text: change.text, emoji: change.emoji, count: change.count });
  if (changes.length === config.changes) say({ step: "changes", changes });
});
const mentions = [];
socket.on("mention", ({ room, message }) => {
  mentions.push({ room, text: message.text, from: message.from });
  if (mentions.length === config.mentions) say({ step: "mentioned", mentions });
});
socket.on("connect", async () => {
  say({ step: "connected", transport: socket.io.engine.transport.name, recovered: started });
  if (started) return;
  started = true;
  const joined = await socket.timeout(10000).emitWithAck("join", { room: config.room, since: undefined });
  say({ step: "joined", ok: joined.ok, error: joined.error, count: joined.count,
        members: joined.members, members_next: joined.members_next });
  if (config.presence) {
    let names = new Set(joined.members);
    socket.on("presence", (event) => {
      if (event.members) names = new Set(event.members);
      for (const name of event.joined || []) names.add(name);
      for (const name of event.left || []) names.delete(name);
      if (event.user && event.event === "join") names.add(event.user);
      if (event.count === config.presence) {
        say({ step: "presence", count: event.count, names: [...names].sort(),
              coalesced: "joined" in event });
      }
    });
  }
  last = joined.seq || 0;
  joinedRoom();
  const acks = [];
  for (let i = 0; i < config.send; i++) {
    acks.push(socket.timeout(10000).emitWithAck("send", {
      room: config.room, text: `${config.name} ${i}`, client_id: undefined,
    }));
  }
  const answered = await Promise.all(acks);
  say({ step: "sent", ok: answered.map((a) => a.ok), seqs: answered.map((a) => a.message && a.message.seq) });
  if (config.read) {
    const seq = Math.max(...answered.map((a) => a.message.seq));
    const read = await socket.timeout(10000).emitWithAck("read", { room: config.room, seq });
    say({ step: "read", ack: read });
  }
  if (config.change) {
    const seq = answered[0].message.seq;
    const made = [];
    for (const [event, extra] of [["edit", { text: "edited by js" }], ["react", { emoji: "🎉" }]]) {
      made.push(await socket.timeout(10000).emitWithAck(event, {
        room: config.room, seq, client_id: undefined, ...extra }));
    }
    say({ step: "changed", ok: made.map((a) => a.ok), errors: made.map((a) => a.error),
          messages: made.map((a) => a.message) });
  }
});
process.stdin.on("data", () => {});
process.stdin.on("end", () => { socket.close(); process.exit(0); });

// One socket.io-client 4 user of Roomcast, driven by tests/test_js_client.py.
// argv[2] is a JSON config: {url, nsp, transports, parser, name, room, send, expect,
// change, changes, mentions, read}. It connects, joins `room` (with `since: undefined`), sends `send`
// messages (with `client_id: undefined`), with `change` edits and reacts to its first
// one, with `read` marks the room read up to its last message, waits for `expect`
// messages, `changes` change events and `mentions` mention events, and prints
// one JSON line per step on stdout: the test reads them as they come.
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

const config = JSON.parse(process.argv[2]);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const socket = io(config.url + (config.nsp || "/chat"), {
  transports: config.transports,
  parser: config.parser === "msgpack" ? msgpackParser : undefined,
  auth: { name: config.name },
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
});
const received = [];
const changes = [];
let started = false;

socket.on("connect_error", (err) => say({ step: "connect_error", message: err.message }));
socket.io.engine.on("upgrade", (transport) => say({ step: "upgraded", transport: transport.name }));
socket.on("message", (message) => {
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
  say({ step: "joined", ok: joined.ok, error: joined.error });
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

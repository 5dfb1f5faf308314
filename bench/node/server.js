// The Node baseline for `make bench`: a minimal socket.io 4 server with
// Roomcast's events (join with since, send, message broadcast), rooms and seq
// numbers in memory, no persistence. Usage: node server.js PORT [msgpack|json]
// With REDIS_URL set, a node of a cluster: @socket.io/redis-adapter (pinned),
// as its README sets it up, carries each room's events to the other nodes (a
// room's seq is its sender's node's: the cluster scenarios send from one node).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const serializer = process.argv[3] || "msgpack";
const options = { pingInterval: 25000, pingTimeout: 20000, maxHttpBufferSize: 1e6 };
if (serializer === "msgpack") options.parser = require("socket.io-msgpack-parser");

const rooms = new Map(); // room -> {seq, messages: []}
const roomOf = (name) => {
  let room = rooms.get(name);
  if (!room) rooms.set(name, (room = { seq: 0, messages: [], ids: new Map() }));
  return room;
};
const error = (code, message) => ({ ok: false, error: { code, message } });

const httpServer = http.createServer();
const io = new Server(httpServer, options);
io.of("/chat").on("connection", (socket) => {
  const name = String((socket.handshake.auth || {}).name || "anon");
  socket.on("join", (req, ack) => {
    if (typeof ack !== "function") return;
    if (!req || typeof req.room !== "string") return ack(error("bad_request", "room"));
    const room = roomOf(req.room);
    socket.join(req.room);
    const since = typeof req.since === "number" ? req.since : room.seq - 50;
    ack({ ok: true, room: req.room, seq: room.seq, members: [],
          messages: room.messages.slice(Math.max(0, since)), more: false });
  });
  socket.on("send", (req, ack) => {
    if (typeof ack !== "function") return;
    if (!req || typeof req.room !== "string" || typeof req.text !== "string") {
      return ack(error("bad_request", "room and text"));
    }
    if (!socket.rooms.has(req.room)) return ack(error("not_member", "join first"));
    const room = roomOf(req.room);
    const key = req.client_id ? `${name}\u0000${req.client_id}` : null;
    if (key && room.ids.has(key)) return ack({ ok: true, message: room.ids.get(key) });
    const message = { room: req.room, seq: ++room.seq, from: name, text: req.text,
                      ts: Date.now() / 1000, client_id: req.client_id || null };
    room.messages.push(message);
    if (key) room.ids.set(key, message);
    socket.to(req.room).emit("message", message);
    ack({ ok: true, message });
  });
});
async function listen() {
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  // the accept backlog Roomcast and the stock server have (Node's default is 511:
  // a storm of simultaneous connects past it waits out the client's 1 s SYN retry)
  httpServer.listen(port, "127.0.0.1", 2048, () => {
    console.log(`listening on http://127.0.0.1:${httpServer.address().port}`);
  });
}
listen();
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

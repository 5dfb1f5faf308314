// A lean WebSocket client for the load generator (RFC 6455, client side):
// the opening handshake through Node's own HTTP client (its `upgrade` event),
// then frames read straight off the socket's data and written masked.
//
// Why not `ws`: at the top of S1's ramp the generator reads 150,000-250,000
// messages a second on one core, and `ws` hands each socket's chunks through
// a Writable stream and two event emitters before a message reaches us (a
// third of the generator's JavaScript time in a profile, issue 36). Here a
// chunk is cut into its frames in one loop and each message is a view of the
// chunk, not a copy. What a generator needs and no more: no extensions
// (permessage-deflate is never offered), pings answered, fragments joined,
// a close answered and the socket ended. Every message is handed over as a
// Buffer with whether it was binary, as `ws` does.
"use strict";
const crypto = require("crypto");
const http = require("http");

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_MESSAGE = 64 * 1024 * 1024; // a server sending more is broken: drop it
const TEXT = 0x1, BINARY = 0x2, CLOSE = 0x8, PING = 0x9, PONG = 0xa, CONTINUATION = 0x0;

// masking keys, drawn from the system's random source 4,096 at a time
const masks = Buffer.alloc(4 * 4096);
let maskAt = masks.length;
function nextMask() {
  if (maskAt === masks.length) {
    crypto.randomFillSync(masks);
    maskAt = 0;
  }
  maskAt += 4;
  return maskAt - 4;
}

class LeanSocket {
  // `url`: ws://host:port/path?query. Callbacks: onopen(), onmessage(data, isBinary),
  // onerror(err), onclose(); each may be replaced before the socket opens.
  constructor(url, { timeoutMs = 60000 } = {}) {
    this.onopen = () => {};
    this.onmessage = () => {};
    this.onerror = () => {};
    this.onclose = () => {};
    this.socket = null;
    this.rest = null; // the start of a frame whose end has not come yet
    this.fragments = null; // a fragmented message's parts so far
    this.fragmentOp = 0;
    this.closed = false;
    const key = crypto.randomBytes(16).toString("base64");
    const target = new URL(url.replace(/^ws/, "http"));
    const req = http.request(target, {
      agent: false,
      headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Key": key,
                 "Sec-WebSocket-Version": "13" },
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error("handshake timeout")));
    req.on("response", (res) => {
      res.resume();
      this.fail(new Error(`handshake answered ${res.statusCode}`));
    });
    req.on("error", (err) => this.fail(err));
    req.on("upgrade", (res, socket, head) => {
      const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
      if (res.headers["sec-websocket-accept"] !== accept) {
        socket.destroy();
        this.fail(new Error("handshake: wrong Sec-WebSocket-Accept"));
        return;
      }
      req.setTimeout(0);
      socket.setTimeout(0);
      socket.setNoDelay(true);
      this.socket = socket;
      socket.on("data", (chunk) => this.read(chunk));
      socket.on("error", (err) => this.fail(err));
      socket.on("close", () => this.ended());
      this.onopen();
      if (head.length) this.read(head);
    });
    req.end();
  }

  fail(err) {
    if (this.closed) return;
    this.onerror(err);
    this.ended();
  }

  ended(graceful = false) { // graceful: what was written goes out first
    if (this.closed) return;
    this.closed = true;
    if (this.socket !== null) {
      if (graceful) this.socket.end();
      else this.socket.destroy();
    }
    this.onclose();
  }

  // -- reading: a chunk is cut into frames; a message is a view of the chunk --

  read(chunk) {
    let buf = chunk;
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = null;
    }
    const n = buf.length;
    let i = 0;
    while (i + 2 <= n) {
      const b0 = buf[i];
      const b1 = buf[i + 1];
      if (b1 & 0x80) return this.fail(new Error("a server frame was masked"));
      let length = b1 & 0x7f;
      let header = 2;
      if (length === 126) {
        if (i + 4 > n) break;
        length = buf.readUInt16BE(i + 2);
        header = 4;
      } else if (length === 127) {
        if (i + 10 > n) break;
        length = buf.readUInt32BE(i + 2) * 2 ** 32 + buf.readUInt32BE(i + 6);
        header = 10;
      }
      if (length > MAX_MESSAGE) return this.fail(new Error("a frame over 64 MB"));
      if (i + header + length > n) break;
      const payload = buf.subarray(i + header, i + header + length);
      i += header + length;
      this.frame(b0, payload);
      if (this.closed) return undefined;
    }
    if (i < n) this.rest = buf.subarray(i);
    return undefined;
  }

  frame(b0, payload) {
    const fin = (b0 & 0x80) !== 0;
    const op = b0 & 0x0f;
    if (op === TEXT || op === BINARY) {
      if (this.fragments !== null) return this.fail(new Error("a new message inside a fragmented one"));
      if (fin) return this.onmessage(payload, op === BINARY);
      this.fragments = [Buffer.from(payload)];
      this.fragmentOp = op;
      return undefined;
    }
    if (op === CONTINUATION) {
      if (this.fragments === null) return this.fail(new Error("a continuation of nothing"));
      this.fragments.push(Buffer.from(payload));
      if (!fin) return undefined;
      const data = Buffer.concat(this.fragments);
      this.fragments = null;
      return this.onmessage(data, this.fragmentOp === BINARY);
    }
    if (op === PING) return this.write(PONG, payload);
    if (op === PONG) return undefined;
    if (op === CLOSE) {
      this.write(CLOSE, payload.subarray(0, 2));
      return this.ended(true);
    }
    return this.fail(new Error(`an unknown opcode ${op}`));
  }

  // -- writing: one masked frame per message ---------------------------------

  send(data) {
    if (typeof data === "string") this.write(TEXT, Buffer.from(data));
    else this.write(BINARY, data);
  }

  write(op, payload) {
    if (this.closed || this.socket === null) return;
    const length = payload.length;
    const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
    const out = Buffer.allocUnsafe(header + 4 + length);
    out[0] = 0x80 | op;
    if (header === 2) {
      out[1] = 0x80 | length;
    } else if (header === 4) {
      out[1] = 0x80 | 126;
      out.writeUInt16BE(length, 2);
    } else {
      out[1] = 0x80 | 127;
      out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
      out.writeUInt32BE(length >>> 0, 6);
    }
    const m = nextMask();
    masks.copy(out, header, m, m + 4);
    for (let j = 0; j < length; j++) out[header + 4 + j] = payload[j] ^ masks[m + (j & 3)];
    this.socket.write(out);
  }

  terminate() { // abrupt, like a dropped network: no close frame
    this.ended();
  }
}

module.exports = { LeanSocket };

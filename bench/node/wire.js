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
//
// And for long-polling, `LeanHttp`: one keep-alive HTTP/1.1 connection making
// one request at a time, its request a string and its response read straight
// off the socket (Content-Length or chunked). Node's HTTP client (a
// ClientRequest, the agent's socket pool, its parser's callbacks) was most of
// what the generator spent at the top of S3, where a fifth of the members poll.
"use strict";
const crypto = require("crypto");
const http = require("http");
const net = require("net");

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

// -- long-polling's requests ------------------------------------------------------

class LeanHttp {
  // `base`: http://host:port. request(method, path, body?) -> the body (a
  // string) of a 200, or a rejection; one at a time, on one connection that is
  // opened when needed and kept alive until the server closes it.
  constructor(base, { timeoutMs = 90000 } = {}) {
    const url = new URL(base);
    this.host = url.hostname;
    this.port = Number(url.port) || 80;
    this.hostHeader = url.host;
    this.timeoutMs = timeoutMs;
    this.socket = null;
    this.buf = null;
    this.pending = null;
  }

  request(method, path, body) {
    if (this.pending !== null) return Promise.reject(new Error("one request at a time"));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject, method };
      const socket = this.socket === null ? this.open() : this.socket;
      const head = `${method} ${path} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n`;
      if (body === undefined) {
        socket.write(`${head}\r\n`, "latin1");
      } else {
        const data = Buffer.from(body, "utf8");
        socket.write(Buffer.concat([Buffer.from(`${head}Content-Type: text/plain;charset=UTF-8\r\n`
          + `Content-Length: ${data.length}\r\n\r\n`, "latin1"), data]));
      }
      socket.setTimeout(this.timeoutMs);
    });
  }

  open() {
    const socket = net.connect(this.port, this.host);
    socket.setNoDelay(true);
    const mine = (fn) => (arg) => { if (this.socket === socket) fn(arg); };
    socket.on("data", mine((chunk) => this.read(chunk)));
    socket.on("timeout", mine(() => this.fail(new Error("http timeout"))));
    socket.on("error", mine((err) => this.fail(err)));
    socket.on("close", mine(() => this.fail(new Error("the server closed the connection"))));
    this.socket = socket;
    this.buf = null;
    return socket;
  }

  close() { // abrupt: the request in flight fails
    this.fail(new Error("closed"));
  }

  drop() { // this connection is done with
    const socket = this.socket;
    this.socket = null;
    this.buf = null;
    if (socket !== null) socket.destroy();
    return socket;
  }

  fail(err) {
    this.drop();
    const pending = this.pending;
    this.pending = null;
    if (pending !== null) pending.reject(err);
  }

  read(chunk) {
    const buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = buf;
    if (this.pending === null) return this.fail(new Error("a response nobody asked for"));
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const head = buf.latin1Slice(0, end).toLowerCase();
    const status = Number(head.slice(9, 12));
    const length = header(head, "content-length");
    let body;
    let used;
    if ((header(head, "transfer-encoding") || "").includes("chunked")) {
      const found = dechunk(buf, end + 4);
      if (found === null) return undefined;
      [body, used] = found;
    } else if (length !== null) {
      used = end + 4 + Number(length);
      if (buf.length < used) return undefined;
      body = buf.subarray(end + 4, used);
    } else {
      return this.fail(new Error("a response without a length"));
    }
    if (used !== buf.length) return this.fail(new Error("more than the response"));
    this.buf = null;
    const pending = this.pending;
    this.pending = null;
    if (header(head, "connection") === "close") this.drop();
    if (status === 200) pending.resolve(body.toString("utf8"));
    else pending.reject(new Error(`${pending.method} ${status}`));
    return undefined;
  }
}

// a header's value in a lower-cased response head, or null
function header(head, name) {
  const at = head.indexOf(`\r\n${name}:`);
  if (at < 0) return null;
  const from = at + name.length + 3;
  const to = head.indexOf("\r\n", from);
  return head.slice(from, to < 0 ? head.length : to).trim();
}

// a chunked body from `start`: [body, bytes used to its end], or null if not all here
function dechunk(buf, start) {
  const parts = [];
  let at = start;
  for (;;) {
    const eol = buf.indexOf("\r\n", at);
    if (eol < 0) return null;
    const size = parseInt(buf.latin1Slice(at, eol), 16);
    if (Number.isNaN(size)) throw new Error("a bad chunk size");
    if (size === 0) {
      if (buf.length < eol + 4) return null; // (no trailers are sent)
      return [Buffer.concat(parts), eol + 4];
    }
    if (buf.length < eol + 2 + size + 2) return null;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

module.exports = { LeanSocket, LeanHttp };

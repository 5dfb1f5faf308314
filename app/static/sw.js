// The service worker: the app shell (the page, its scripts, styles and icons)
// kept in a cache, so that a reload while the server is away still shows the
// app; the page says it is offline and keeps what was typed (chat.js, its
// outbox in localStorage). Only the shell is cached: never a message, never
// the Socket.IO, HTTP API, upload or file traffic (those requests are not
// touched at all).
// Network first: a reachable server always gives the current shell.

const CACHE = "roomcast-shell-4";
const SHELL = [
  "/", "/manifest.webmanifest", "/static/chat.css", "/static/chat.js", "/static/view.js",
  "/static/panels.js", "/static/format.js", "/static/governance.js", "/static/emoji.js",
  "/static/vendor/markdown-it.js",
  "/static/vendor/purify.js", "/static/vendor/socket.io.min.js",
  "/static/vendor/socket.io.msgpack.min.js", "/static/vendor/tus.min.js",
  "/static/icon-192.png", "/static/icon-512.png",
];
const SHELL_PATHS = new Set(SHELL);

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL))
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const page = event.request.mode === "navigate" && url.pathname === "/";
  if (event.request.method !== "GET" || url.origin !== location.origin
      || !(page || SHELL_PATHS.has(url.pathname))) {
    return;  // not the shell: the browser goes to the network as if we were not here
  }
  const key = page ? "/" : url.pathname;  // (the page with any ?room= is the page)
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      event.waitUntil(caches.open(CACHE).then((cache) => cache.put(key, copy)));
    }
    return response;
  }).catch(() => caches.match(key).then((cached) => cached ?? Response.error())));
});

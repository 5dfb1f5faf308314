// Upload a file with tus-js-client, unmodified (tests/wire/test_attachments.py):
//   node tus_upload.mjs ENDPOINT TOKEN FILE [CHUNK_SIZE]
// Prints {"url": ...} once the upload is done, or {"error": ...} and exits 1.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, token, file, chunkSize] = process.argv.slice(2);
const upload = new tus.Upload(fs.readFileSync(file), {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: file.split("/").pop() },
  chunkSize: chunkSize ? Number(chunkSize) : Infinity,
  retryDelays: [0, 50, 100, 200, 400, 800],
  onError: (error) => {
    console.log(JSON.stringify({ error: String(error) }));
    process.exit(1);
  },
  onSuccess: () => console.log(JSON.stringify({ url: upload.url })),
});
upload.start();

// tus-js-client (Node build, pinned in origin/console/package.json) uploading FILE to
// ENDPOINT with retries, as the console does: the test keeps the job queue out until
// the last PATCH has been refused, then brings it back. Prints one JSON line
// {urls, requests, done}: how many upload URLs the client used (a resume that fell
// back to a new upload makes two) and every request as "METHOD status".
// Usage: node tus_node_retry.cjs ENDPOINT FILE KEY METADATA_JSON
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require(path.join(__dirname, "../../origin/console/node_modules/tus-js-client"));

const [endpoint, file, key, metadataJson] = process.argv.slice(2);
const size = fs.statSync(file).size;
const urls = new Set();
const requests = [];

const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  headers: { Authorization: `Bearer ${key}` },
  metadata: JSON.parse(metadataJson),
  chunkSize: 256 * 1024,
  uploadSize: size,
  retryDelays: [200, 500, 500, 1000, 1000, 1000, 2000, 2000, 2000, 2000, 4000, 4000],
  onUploadUrlAvailable: () => urls.add(upload.url),
  onAfterResponse: (req, res) => { requests.push(`${req.getMethod()} ${res.getStatus()}`); },
  onError: (err) => { console.error(String(err)); process.exit(1); },
  onSuccess: () => {
    console.log(JSON.stringify({ urls: urls.size, requests, done: true }));
  },
});
upload.start();

// tus-js-client (Node build, pinned in origin/console/package.json) against the
// origin: upload FILE to ENDPOINT, abort after the first acknowledged chunk, then
// resume from the same upload URL in a second Upload object. Prints one JSON line
// {url, abortedAt, resumedFrom, offsets, done}. Usage: node tus_node.cjs ENDPOINT FILE KEY METADATA_JSON
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require(path.join(__dirname, "../../origin/console/node_modules/tus-js-client"));

const [endpoint, file, key, metadataJson] = process.argv.slice(2);
const size = fs.statSync(file).size;
const headers = { Authorization: `Bearer ${key}` };
const metadata = JSON.parse(metadataJson);
const chunkSize = 256 * 1024;

function run(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(fs.createReadStream(file), {
      endpoint, headers, metadata, chunkSize, uploadSize: size, retryDelays: [],
      ...options.extra,
      onError: reject,
      onChunkComplete: (_chunk, accepted) => options.onChunk && options.onChunk(upload, accepted, resolve),
      onSuccess: () => resolve({ upload, done: true }),
    });
    upload.start();
  });
}

(async () => {
  const offsets = [];
  const first = await run({
    onChunk: (upload, accepted, resolve) => {
      offsets.push(accepted);
      upload.abort().then(() => resolve({ upload, done: false, at: accepted }));
    },
  });
  const url = first.upload.url;
  let resumedFrom = -1;
  await run({
    extra: {
      uploadUrl: url,
      onProgress: (sent) => { if (resumedFrom < 0) resumedFrom = sent; },
    },
    onChunk: (_u, accepted) => offsets.push(accepted),
  });
  console.log(JSON.stringify({ url, abortedAt: first.at, resumedFrom, offsets, done: true }));
})().catch((err) => { console.error(String(err)); process.exit(1); });

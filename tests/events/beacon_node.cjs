// The beacon (origin/static/cdlc-beacon.js) in Node's vm, sending with Node's own
// fetch to a real origin: node beacon_node.cjs BEACON_JS ENDPOINT ASSET N MAX_QUEUED.
// It emits N heartbeats while the origin cannot take them (each flush fails),
// prints "queued <n> dropped <n>", waits for a line on stdin (the test brings the
// origin's event log back), flushes until the queue is empty, and prints the JSON
// {sent, dropped, queued, first, last} (the sequence numbers of what was kept).
'use strict';
const vm = require('vm');
const fs = require('fs');
const readline = require('readline');

const [file, endpoint, asset, n, maxQueued] = process.argv.slice(2);

class Video extends EventTarget {
  constructor() {
    super();
    Object.assign(this, {currentTime: 0, paused: true, readyState: 0, seeking: false,
                         ended: false, videoWidth: 640, videoHeight: 360});
  }
}
const video = new Video();
// What the beacon reads of a Shaka Player: its tracks and its media element.
const player = Object.assign(new EventTarget(), {
  getVariantTracks: () => [], getMediaElement: () => video,
});
const window = Object.assign(new EventTarget(), {
  fetch, AbortSignal, Blob, URL, crypto: globalThis.crypto, console, Date, Promise,
  setInterval, clearInterval, setTimeout, navigator: {}, document: {},
  location: {origin: ''},
});
vm.createContext(window);
window.window = window;
vm.runInContext(fs.readFileSync(file, 'utf8'), window, {filename: file});

async function main() {
  const beacon = window.CdlcBeacon.attach(player, {
    endpoint, token: '', assetId: asset, flushSeconds: 3600, batchSize: 1e9,
    maxQueued: Number(maxQueued),
  });
  for (let i = 0; i < Number(n); i++) {
    beacon.emit('heartbeat', {position: i});
    if (i % 250 === 0) await beacon.flush();  // the origin answers 503: kept
  }
  await beacon.flush();
  console.log(`queued ${beacon.queue.length} dropped ${beacon.dropped}`);
  await new Promise((done) => readline.createInterface({input: process.stdin}).once('line', done));
  for (let tries = 0; beacon.queue.length && tries < 100; tries++) {
    await beacon.flush();
    if (beacon.queue.length) await new Promise((r) => setTimeout(r, 200));
  }
  console.log(JSON.stringify({sent: beacon.sent, dropped: beacon.dropped,
                              queued: beacon.queue.length}));
  beacon._timers.forEach(clearInterval);
  process.exit(0);
}
main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });

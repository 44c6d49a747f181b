#!/usr/bin/env node
// Example: a platform service (Node.js) uploads a master over the cdlc-stream
// gRPC API, follows its job to READY, issues playback for a purchase and prints
// the signed URLs. It loads the .proto files at run time (@grpc/proto-loader),
// so it needs no generated code.
//
//   CDLC_GRPC=127.0.0.1:50051 CDLC_GRPC_TOKEN=... node client.js master.mp4 \
//       [--id ASSET] [--ladder 720:3000,480:1500] [--json]
//
// CDLC_GRPC_TOKEN is the API key or a JWT with the scopes assets:write,
// assets:read and playback:issue; leave it empty for an origin without auth
// (loopback only).
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = process.env.CDLC_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');
const CHUNK = 1024 * 1024; // well under the server's 4 MiB message limit

function parseArgs(argv) {
  const args = { file: null, id: '', ladder: '', json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--id') args.id = argv[++i];
    else if (a === '--ladder') args.ladder = argv[++i];
    else if (a === '--json') args.json = true;
    else args.file = a;
  }
  if (!args.file) {
    console.error('usage: node client.js MASTER [--id ASSET] [--ladder SPEC] [--json]');
    process.exit(2);
  }
  return args;
}

function loadApi() {
  const files = ['assets.proto', 'playback.proto'].map((f) => path.join('cdlc/stream/v1', f));
  const def = protoLoader.loadSync(files, {
    includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String,
    defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(def).cdlc.stream.v1;
}

function metadata() {
  const md = new grpc.Metadata();
  const token = process.env.CDLC_GRPC_TOKEN;
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}

function upload(assets, args) {
  return new Promise((resolve, reject) => {
    const call = assets.UploadAsset(metadata(), (err, res) => (err ? reject(err) : resolve(res)));
    call.write({
      header: {
        asset_id: args.id, file_name: path.basename(args.file),
        // The server refuses an upload that ends short of this (a cancelled stream).
        size_bytes: fs.statSync(args.file).size,
        options: { ladder: args.ladder },
      },
    });
    const stream = fs.createReadStream(args.file, { highWaterMark: CHUNK });
    stream.on('data', (chunk) => {
      if (!call.write({ chunk })) {
        stream.pause();
        call.once('drain', () => stream.resume());
      }
    });
    stream.on('end', () => call.end());
    stream.on('error', (err) => { call.cancel(); reject(err); });
  });
}

function watch(assets, assetId, onChange) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10 * 60 * 1000);
    const call = assets.WatchAsset({ asset_id: assetId }, metadata(), { deadline });
    let last = null;
    call.on('data', (msg) => { last = msg.asset; onChange(msg.asset); });
    call.on('error', reject);
    call.on('end', () => resolve(last));
  });
}

function issue(playback, assetId) {
  return new Promise((resolve, reject) => {
    playback.IssuePlayback({
      asset_id: assetId, viewer_id: 'viewer-node', ttl_seconds: 3600,
      entitlement: { kind: 'ENTITLEMENT_KIND_PURCHASE', reference: 'order-node-1' },
    }, metadata(), (err, res) => (err ? reject(err) : resolve(res)));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const api = loadApi();
  const target = process.env.CDLC_GRPC || '127.0.0.1:50051';
  const creds = grpc.credentials.createInsecure();
  const assets = new api.AssetService(target, creds);
  const playback = new api.PlaybackService(target, creds);

  const created = await upload(assets, args);
  const assetId = created.asset.asset_id;
  const states = [];
  const final = await watch(assets, assetId, (a) => {
    states.push(a.state);
    if (!args.json) console.error(`${assetId}: ${a.state} ${(a.progress * 100).toFixed(0)}%`);
  });
  if (!final || final.state !== 'ASSET_STATE_READY') {
    console.error(`${assetId} did not become ready: ${final ? final.error : 'no update'}`);
    process.exit(1);
  }
  const urls = await issue(playback, assetId);
  if (args.json) {
    console.log(JSON.stringify({
      asset_id: assetId, state: final.state, states,
      hls_url: urls.hls_url, dash_url: urls.dash_url, grant_id: urls.grant_id,
    }));
  } else {
    console.log(`HLS:  ${urls.hls_url}`);
    console.log(`DASH: ${urls.dash_url}`);
  }
  assets.close();
  playback.close();
}

// The API loader is shared with the gRPC load bench, which requires this file.
module.exports = { loadApi };

if (require.main === module) {
  main().catch((err) => {
    console.error(`error: ${err.code !== undefined ? grpc.status[err.code] + ': ' : ''}${err.details || err.message}`);
    process.exit(1);
  });
}

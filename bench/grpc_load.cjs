#!/usr/bin/env node
// Load for bench/grpc.py from a second gRPC implementation (@grpc/grpc-js, the
// .proto files loaded at run time): CONCURRENCY calls kept in flight on one
// channel for SECONDS (after a 0.5 s warm-up), then one JSON line on stdout:
// {"rpc", "target", "requests", "errors", "rps", "p99_ms"}.
//
//   node bench/grpc_load.cjs --target 127.0.0.1:50051 --rpc GetAsset \
//       [--asset bench1] [--seconds 3] [--concurrency 64] [--token TOKEN]
//
// An rpc that fails counts as an error and is not timed; any error makes the
// exit status 1, so a broken server cannot pass for a fast one.
'use strict';

const grpc = require('@grpc/grpc-js');
// The .proto files loaded as the Node example client loads them.
const { loadApi } = require('../examples/node/client.js');

function parseArgs(argv) {
  const args = { target: '', rpc: '', asset: 'bench1', seconds: 3, concurrency: 64, token: '' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      console.error(`unknown or incomplete argument ${argv[i]}`);
      process.exit(2);
    }
    args[key] = typeof args[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!args.target || !['GetAsset', 'IssuePlayback'].includes(args.rpc)) {
    console.error('usage: grpc_load.cjs --target HOST:PORT --rpc GetAsset|IssuePlayback ...');
    process.exit(2);
  }
  return args;
}

function caller(args, api) {
  const options = { 'grpc.max_receive_message_length': 4 * 1024 * 1024 };
  const md = new grpc.Metadata();
  if (args.token) md.set('authorization', `Bearer ${args.token}`);
  const creds = grpc.credentials.createInsecure();
  if (args.rpc === 'GetAsset') {
    const stub = new api.AssetService(args.target, creds, options);
    const request = { asset_id: args.asset };
    return [stub, (done) => stub.GetAsset(request, md, done)];
  }
  const stub = new api.PlaybackService(args.target, creds, options);
  // The same request as bench/grpc.py's issue_request().
  const request = {
    asset_id: args.asset, viewer_id: 'viewer-bench', ttl_seconds: 3600,
    entitlement: { kind: 'ENTITLEMENT_KIND_PURCHASE', reference: 'order-bench' },
  };
  return [stub, (done) => stub.IssuePlayback(request, md, done)];
}

// Keep `concurrency` calls in flight until `until` (ms, performance.now()).
function run(call, concurrency, until, latencies, counts) {
  return new Promise((resolve) => {
    let running = concurrency;
    const next = () => {
      if (performance.now() >= until) {
        running -= 1;
        if (running === 0) resolve();
        return;
      }
      const t0 = performance.now();
      call((err) => {
        if (err) {
          counts.errors += 1;
          if (!counts.first) counts.first = `${err.code} ${err.details}`;
        } else if (latencies) {
          latencies.push(performance.now() - t0);
        }
        next();
      });
    };
    for (let i = 0; i < concurrency; i++) next();
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [stub, call] = caller(args, loadApi());
  await new Promise((resolve, reject) => stub.waitForReady(Date.now() + 10000,
    (err) => (err ? reject(err) : resolve())));
  const counts = { errors: 0, first: '' };
  await run(call, args.concurrency, performance.now() + 500, null, counts); // warm-up
  const latencies = [];
  const t0 = performance.now();
  await run(call, args.concurrency, t0 + args.seconds * 1000, latencies, counts);
  const elapsed = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const p99 = latencies.length ? latencies[Math.floor(latencies.length * 0.99)] : NaN;
  stub.close();
  console.log(JSON.stringify({
    rpc: args.rpc, target: args.target, requests: latencies.length, errors: counts.errors,
    rps: latencies.length / elapsed, p99_ms: p99,
  }));
  if (counts.errors) {
    console.error(`${counts.errors} calls failed, the first: ${counts.first}`);
    process.exit(1);
  }
}

main().catch((err) => {
  console.error(`grpc_load: ${err.message}`);
  process.exit(1);
});

// The edge's njs code (njs >= 0.7, Debian libnginx-mod-http-js), loaded by the
// nginx.conf that cdn/nginx.py renders.
//
// verify: the playback-token check. The format is the contract written in
// cdn/tokens.py (version 1); this must accept exactly what tokens.check accepts.
// tests/cdn/test_edge_tokens.py signs with cdn/tokens.py and asks this code,
// through a real nginx, about valid, tampered, expired and foreign tokens.
// The key arrives as hex in $cdlc_signing_key_hex. js_set evaluates verify() once
// per request, when the `if` in the location reads $cdlc_token_ok: "1" lets the
// request reach the cache, anything else is a 403.
//
// purge: drops cached objects for takedown (cdn/purge.py is the client).

var crypto = require('crypto');
var fs = require('fs');

var ASSET = /^\/vod\/([^\/]+)\//;
var EXPIRES = /^(0|[1-9][0-9]{0,11})$/;
var SIG = /^[A-Za-z0-9_-]{43}$/;

// Constant-time comparison of two ASCII strings of equal length (RFC 2104 §5 advice:
// no early exit that would leak how much of a guessed MAC was right).
function same(a, b) {
    if (a.length !== b.length) {
        return false;
    }
    var diff = 0;
    for (var i = 0; i < a.length; i++) {
        diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
    }
    return diff === 0;
}

function verify(r) {
    var keyHex = r.variables.cdlc_signing_key_hex;
    var token = r.args.token;
    var m = ASSET.exec(r.uri);
    if (!keyHex || !m || typeof token !== 'string') {
        return '0';  // missing, or repeated (an array): malformed
    }
    var parts = token.split('.');
    if (parts.length !== 3) {
        return '0';
    }
    var exp = parts[0], bind = parts[1], sig = parts[2];
    if (!EXPIRES.test(exp) || (bind !== 'a' && bind !== 'ip') || !SIG.test(sig)) {
        return '0';
    }
    if (Math.floor(Date.now() / 1000) > Number(exp)) {
        return '0';  // expired: now <= EXPIRES is the valid side
    }
    var client = bind === 'ip' ? r.remoteAddress : '';
    if (bind === 'ip' && !client) {
        return '0';
    }
    var mac = crypto.createHmac('sha256', Buffer.from(keyHex, 'hex'))
        .update('cdlc1\n' + m[1] + '\n' + exp + '\n' + client)
        .digest('base64url');
    return same(mac, sig) ? '1' : '0';
}

// Where nginx keeps the object cached under `key`: the file is named by the MD5 of
// the key, under one folder per level of `levels=1:2` taken from the end of the
// hex name (ngx_http_file_cache_create_key / ngx_create_hashed_filename).
function cachePath(root, key) {
    var h = crypto.createHash('md5').update(key).digest('hex');
    return root + '/' + h.slice(-1) + '/' + h.slice(-3, -1) + '/' + h;
}

// Unlink the cache file of one key: true if it was there. nginx treats a missing
// file as a miss (ngx_http_file_cache_open: ENOENT -> update), so the next
// request goes to the origin, which answers 404 for a deleted asset.
function drop(root, key) {
    try {
        fs.unlinkSync(cachePath(root, key));
        return true;
    } catch (e) {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
            return false;
        }
        throw e;
    }
}

// PURGE|DELETE /_edge/purge/<path>: 200 purged, 404 not cached.
// POST /_edge/purge with one path per line: 200 {"purged": N, "not_cached": M}.
// Debian's ngx_cache_purge 2.3 crashes on nginx >= 1.11.6 (FRiCKLE/ngx_cache_purge
// issue 68), hence this instead.
function purge(r) {
    var root = r.variables.cdlc_cache_root;
    var prefix = '/_edge/purge';
    try {
        if (r.method === 'POST') {
            var body = r.requestText || '';
            var purged = 0, missing = 0;
            var lines = body.split('\n');
            for (var i = 0; i < lines.length; i++) {
                var key = lines[i].trim();
                if (key === '') {
                    continue;
                }
                if (key[0] !== '/') {
                    r.return(400, 'purge: paths start with "/": ' + key + '\n');
                    return;
                }
                if (drop(root, key)) {
                    purged++;
                } else {
                    missing++;
                }
            }
            r.headersOut['Content-Type'] = 'application/json';
            r.return(200, JSON.stringify({purged: purged, not_cached: missing}) + '\n');
            return;
        }
        if (r.method !== 'PURGE' && r.method !== 'DELETE') {
            r.return(405, 'purge: use PURGE, DELETE or POST\n');
            return;
        }
        var one = r.uri.slice(prefix.length);
        if (one[0] !== '/') {
            r.return(400, 'purge: no path\n');
            return;
        }
        r.return(drop(root, one) ? 200 : 404, one + '\n');
    } catch (e) {
        r.error('purge failed: ' + e);
        r.return(500, 'purge failed: ' + e.message + '\n');
    }
}

export default {verify, purge};

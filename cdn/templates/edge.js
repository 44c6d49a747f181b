// The edge's njs code (njs >= 0.7, Debian libnginx-mod-http-js), loaded by the
// nginx.conf that cdn/nginx.py renders.
//
// verify: the playback-token check. The formats are the contract written in
// cdn/tokens.py (versions 1 and 2); this must accept exactly what tokens.verify
// accepts, and refuse a rendition's files above a version-2 token's MAXH as
// Claims.allows does (the rendition's LABEL is read from its id, "v720" -> 720).
// tests/cdn/test_edge_tokens.py and test_edge_grants.py sign with cdn/tokens.py
// and ask this code, through a real nginx, about valid, tampered, expired,
// foreign and height-limited tokens.
// The key arrives as hex in $cdlc_signing_key_hex. js_set evaluates verify() once
// per request, when the `if` in the location reads $cdlc_token_ok: "1" lets the
// request reach the cache, anything else is a 403.
//
// heightClass: the cache-key suffix of the top-level manifests (master playlist,
// MPD) for the verified token's MAXH, so each height limit has its own cached
// copy (the origin lists only the renditions it allows) and the token itself
// stays out of the key.
//
// purge: drops cached objects for takedown (cdn/purge.py is the client),
// height-class copies of the top-level manifests included.

var crypto = require('crypto');
var fs = require('fs');

var ASSET = /^\/vod\/([^\/]+)\//;
var RENDITION = /^\/vod\/[^\/]+\/([^\/]+)\/[^\/]+$/;
var TOP_MANIFEST = /^\/vod\/([^\/]+)\/(?:master\.m3u8|manifest\.mpd)$/;
var EXPIRES = /^(0|[1-9][0-9]{0,11})$/;
var MAXH = /^(0|[1-9][0-9]{0,4})$/;
var VIEWER = /^[A-Za-z0-9_-]{0,1366}$/;
var SIG = /^[A-Za-z0-9_-]{43}$/;
var LABEL = /^v([0-9]+)/;
// Asset ids the engine accepts (metadata.models.ASSET_ID_RE): safe as file names.
var ASSET_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

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

// The fields of a token by version (cdn/tokens.py), or null when malformed.
function fields(token) {
    var parts = token.split('.');
    var t;
    if (parts.length === 3) {
        t = {version: 1, exp: parts[0], bind: parts[1], maxh: '0', viewer: '', sig: parts[2]};
    } else if (parts.length === 6 && parts[0] === '2') {
        t = {version: 2, exp: parts[1], bind: parts[2], maxh: parts[3], viewer: parts[4],
             sig: parts[5]};
        if (!MAXH.test(t.maxh) || !VIEWER.test(t.viewer) || t.viewer.length % 4 === 1) {
            return null;
        }
    } else {
        return null;
    }
    if (!EXPIRES.test(t.exp) || (t.bind !== 'a' && t.bind !== 'ip') || !SIG.test(t.sig)) {
        return null;
    }
    return t;
}

// Claims.allows: a rendition without a LABEL (audio, subtitles) is never limited.
function allows(maxh, rendition) {
    if (maxh === '0') {
        return true;
    }
    var label = LABEL.exec(rendition);
    return !label || Number(label[1]) <= Number(maxh);
}

function verify(r) {
    var keyHex = r.variables.cdlc_signing_key_hex;
    var token = r.args.token;
    var m = ASSET.exec(r.uri);
    if (!keyHex || !m || typeof token !== 'string') {
        return '0';  // missing, or repeated (an array): malformed
    }
    var t = fields(token);
    if (t === null) {
        return '0';
    }
    if (Math.floor(Date.now() / 1000) > Number(t.exp)) {
        return '0';  // expired: now <= EXPIRES is the valid side
    }
    var client = t.bind === 'ip' ? r.remoteAddress : '';
    if (t.bind === 'ip' && !client) {
        return '0';
    }
    var message = t.version === 1
        ? 'cdlc1\n' + m[1] + '\n' + t.exp + '\n' + client
        : 'cdlc2\n' + m[1] + '\n' + t.exp + '\n' + client + '\n' + t.maxh + '\n' + t.viewer;
    var mac = crypto.createHmac('sha256', Buffer.from(keyHex, 'hex'))
        .update(message)
        .digest('base64url');
    if (!same(mac, t.sig)) {
        return '0';
    }
    // A rendition's files above the limit: refused here, cached or not.
    var rm = RENDITION.exec(r.uri);
    return rm && !allows(t.maxh, rm[1]) ? '0' : '1';
}

// "" for an unlimited token (the manifest's key is its path, as with tokens off
// and version 1) and for anything but a top-level manifest; "|h<MAXH>" for a
// limited one. Read only after verify() said "1", so the token is well formed.
// The first time a limit is seen for an asset, a marker file
// <cdlc_classes_root>/<asset>/<MAXH> records it, for purge() to find the copy.
function heightClass(r) {
    var token = r.args.token;
    var m = TOP_MANIFEST.exec(r.uri);
    var t = m && typeof token === 'string' ? fields(token) : null;
    if (t === null || t.maxh === '0') {
        return '';
    }
    var root = r.variables.cdlc_classes_root;
    if (root && ASSET_ID.test(m[1])) {
        remember(r, root + '/' + m[1], t.maxh);
    }
    return '|h' + t.maxh;
}

function remember(r, dir, maxh) {
    try {
        fs.accessSync(dir + '/' + maxh);
        return;
    } catch (e) {
        // not recorded yet
    }
    try {
        try {
            fs.mkdirSync(dir);
        } catch (e) {
            if (e.code !== 'EEXIST') {
                throw e;
            }
        }
        fs.writeFileSync(dir + '/' + maxh, '');
    } catch (e) {
        // The copy is still served; only a takedown would miss it until it expires.
        r.error('height class marker not written: ' + e);
    }
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
function unlink(root, key) {
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

// The object cached under a path, and for a top-level manifest every height
// class copy heightClass() recorded (key "<path>|h<MAXH>"): true if any was there.
function drop(root, classes, key) {
    var dropped = unlink(root, key);
    var m = TOP_MANIFEST.exec(key);
    if (!m || !classes || !ASSET_ID.test(m[1])) {
        return dropped;
    }
    var names;
    try {
        names = fs.readdirSync(classes + '/' + m[1]);
    } catch (e) {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
            return dropped;
        }
        throw e;
    }
    for (var i = 0; i < names.length; i++) {
        if (MAXH.test(names[i]) && unlink(root, key + '|h' + names[i])) {
            dropped = true;
        }
    }
    return dropped;
}

// PURGE|DELETE /_edge/purge/<path>: 200 purged, 404 not cached.
// POST /_edge/purge with one path per line: 200 {"purged": N, "not_cached": M}.
// Debian's ngx_cache_purge 2.3 crashes on nginx >= 1.11.6 (FRiCKLE/ngx_cache_purge
// issue 68), hence this instead.
function purge(r) {
    var root = r.variables.cdlc_cache_root;
    var classes = r.variables.cdlc_classes_root;
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
                if (drop(root, classes, key)) {
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
        r.return(drop(root, classes, one) ? 200 : 404, one + '\n');
    } catch (e) {
        r.error('purge failed: ' + e);
        r.return(500, 'purge failed: ' + e.message + '\n');
    }
}

export default {verify, heightClass, purge};

"""The OpenAPI 3.1 description of the origin's HTTP API, served at /v1/openapi.json.

Hand-written next to the handlers it describes (origin/admin.py, origin/playback.py,
origin/app.py): every route create_app() registers, every method it answers (aiohttp
answers HEAD on every GET route; the playback routes also answer the CORS preflight,
OPTIONS) and every status a handler sends, each operation with an ``operationId``.
tests/origin/test_schemathesis.py holds the server to it: generated requests against a
running `cdlc serve`, every answer's status and media type checked against this text,
and the routes of the app compared with its paths.

A status appears here when the server sends it on purpose; a 500 is never listed (it
is always a bug). Statuses aiohttp itself sends before a handler runs (405 for a method
a route does not have, 400 for a malformed request line) are not per operation.
"""

from __future__ import annotations

import copy
from typing import Any

_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"}
_ASSET_PARAM = {"name": "id", "in": "path", "required": True, "schema": _ID}
_TOKEN = {
    "name": "token", "in": "query", "required": False, "schema": {"type": "string"},
    "description": "playback token (cdn/tokens.py), required when a signing key is set",
}
_STATE = {"enum": ["queued", "probing", "transcoding", "packaging", "publishing", "ready",
                   "failed"]}
_PLAY_ASSET = {"name": "asset", "in": "path", "required": True, "schema": _ID}
_PLAY_REND = {
    "name": "rendition", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
               "examples": ["v720", "audio"]},
}
# A key id: 16 bytes in hex, dashes allowed (UUID form); the route matches nothing else.
_KID = {"name": "kid", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-fA-F-]{32,36}$"}}
_NUMBER = {"name": "number", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999}}
_WRITE: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def _problem(what: str) -> dict[str, Any]:
    """An error answered as RFC 9457 problem details."""
    return {"description": what, "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _json(what: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": what, "content": {"application/json": {"schema": schema}}}


_NO_ENGINE = _problem("no engine behind this origin (an origin started without one), or "
                      "the authorization server's keys (JWKS) cannot be had")
_BAD_ID = _problem("invalid asset id")
# With auth configured (CDLC_API_KEY or CDLC_JWKS) reads need credentials too
# (origin/auth.py): 401 without valid ones, 403 for a JWT without the scope.
_UNAUTHORISED = _problem("missing or wrong credentials (API key or JWT), auth configured")
_FORBIDDEN = _problem("the JWT lacks the scope (assets:read, assets:write)")

# Request fields of the conditional and range evaluator (origin/http_conditional.py),
# so that generated requests exercise it: RFC 9110 §13.1 preconditions, §14.2 Range.
_CONDITIONAL = [
    {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
     "description": what}
    for name, what in (
        ("Range", "one byte range (`bytes=0-99`, `bytes=-100`); an invalid one is ignored "
                  "and a set of several ranges is answered whole (RFC 9110 §14.2)"),
        ("If-Range", "an ETag or date the Range depends on (RFC 9110 §13.1.5)"),
        ("If-None-Match", "304 when an ETag matches (weak comparison, RFC 9110 §13.1.2)"),
        ("If-Match", "412 unless an ETag matches (strong comparison, RFC 9110 §13.1.1)"),
        ("If-Modified-Since", "304 when not modified since (segments only)"),
        ("If-Unmodified-Since", "412 when modified since (segments only)"),
    )
]
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _playback(ctype: list[str], what: str) -> dict[str, Any]:
    """Statuses of a playback GET: manifests and media answer through the same
    evaluator of conditional and range requests (origin/http_conditional.py)."""
    return {
        "200": {"description": what, "content": {c: {} for c in ctype}},
        "206": {"description": "partial content: the one satisfiable range asked for",
                "content": {c: {} for c in ctype}},
        "304": {"description": "not modified (If-None-Match, If-Modified-Since)"},
        "400": {"description": "invalid asset or rendition id", "content": _TEXT},
        "403": {"description": "invalid, expired or missing playback token", "content": _TEXT},
        "404": {"description": "unknown asset, rendition or segment, asset not ready, "
                               "or the MPD of an aes-128 asset (DASH cannot signal it)",
                "content": _TEXT},
        "412": {"description": "precondition failed (If-Match, If-Unmodified-Since)"},
        "416": {"description": "range not satisfiable (Content-Range: bytes */LENGTH)"},
        "503": {"description": "a backend is out and nothing good is held: retry after "
                               "Retry-After seconds (docs/durability.md)", "content": _TEXT},
    }


def _head(get: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """The HEAD twin of a GET: the same statuses and headers, no body (RFC 9110
    §9.3.2); a Range is ignored, so never 206 or 416."""
    head = copy.deepcopy(get)
    head["operationId"] = operation_id
    head["summary"] = "Headers of: " + get["summary"]
    head["responses"] = {
        code: {"description": r["description"]}
        for code, r in get["responses"].items() if code not in ("206", "416")
    }
    return head


def _playback_path(operation: str, summary: str, params: list[dict[str, Any]],
                   ctype: list[str], what: str) -> dict[str, Any]:
    """GET, HEAD and the CORS preflight (OPTIONS) of one playback route."""
    get = {"operationId": f"get{operation}", "summary": summary,
           "parameters": [*params, _TOKEN, *_CONDITIONAL],
           "responses": _playback(ctype, what)}
    return {
        "get": get,
        "head": _head(get, f"head{operation}"),
        "options": {"operationId": f"preflight{operation}",
                    "summary": "CORS preflight (Fetch standard): methods and headers allowed",
                    "parameters": params,
                    "responses": {"204": {"description": "allowed"}}},
    }


def _admin_get(get: dict[str, Any], head_id: str) -> dict[str, Any]:
    return {"get": get, "head": _head(get, head_id)}


# The key routes (origin/keys.py): only to a valid playback token, never cached.
_KEY_RESPONSES: dict[str, Any] = {
    "200": {"description": "the license", "content": {"application/json": {}}},
    "400": {"description": "invalid asset id, or a malformed license request",
            "content": _TEXT},
    "403": {"description": "no valid playback token (or no signing key set: keys are "
                           "served to tokens only)", "content": _TEXT},
    "404": {"description": "no such asset or key", "content": _TEXT},
    "413": {"description": "license request too large", "content": _TEXT},
    "503": {"description": "the key store is out: retry later", "content": _TEXT},
}
_PLAYLIST = ["application/vnd.apple.mpegurl"]
_MEDIA = ["video/mp4", "audio/mp4"]

# Watch events and stats (origin/events.py): docs/analytics.md.
_NO_EVENTS = _problem("no event log behind this origin, or the authorization server's "
                      "keys (JWKS) cannot be had")
_EVENT_TYPES = ["start", "first_frame", "heartbeat", "stall_start", "stall_end", "seek",
                "rendition_change", "error", "end"]
_WATCH_EVENT = {
    "type": "object",
    "required": ["event_id", "session_id", "type", "time"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "session_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "asset_id": {"type": "string", "maxLength": 128},
        "viewer_id": {"type": "string"},
        "type": {"enum": _EVENT_TYPES},
        "time": {"type": "string", "format": "date-time"},
        "position_seconds": {"type": "number", "minimum": 0},
        "rendition_id": {"type": "string", "maxLength": 128},
        "bitrate": {"type": "integer", "minimum": 0},
        "error": {"type": "string", "maxLength": 1000},
    },
}
_STATS_FIGURES: dict[str, Any] = {
    "asset_id": {"type": "string"},
    "sessions": {"type": "integer", "minimum": 0},
    "viewers": {"type": "integer", "minimum": 0},
    "watch_seconds": {"type": "number", "minimum": 0},
    "completion_rate": {"type": "number", "minimum": 0, "maximum": 1},
    "startup_p50_seconds": {"type": "number", "minimum": 0},
    "startup_p95_seconds": {"type": "number", "minimum": 0},
    "rebuffer_ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "renditions": {"type": "object", "additionalProperties": {"type": "number"}},
    "errors": {"type": "integer", "minimum": 0},
    "stalls": {"type": "integer", "minimum": 0},
    "delivered_bytes_origin": {"type": "integer", "minimum": 0,
                               "description": "body bytes of the origin's 200/206 "
                                              "playback answers"},
    "delivered_bytes_edge": {"type": "integer", "minimum": 0,
                             "description": "body bytes the edge delivered (its access "
                                            "log, `cdlc cdn ingest-log`)"},
}
_STATS = {
    "type": "object",
    "required": ["asset_id", "sessions", "watch_seconds", "delivered_bytes_origin",
                 "delivered_bytes_edge", "hours"],
    "properties": {**_STATS_FIGURES, "hours": {"type": "array", "items": {
        "type": "object", "required": ["hour"],
        "properties": {"hour": {"type": "string", "format": "date-time"},
                       **_STATS_FIGURES}}}},
}
_JS = {"text/javascript": {"schema": {"type": "string"}}}
_ASSET_REF = {"$ref": "#/components/schemas/Asset"}
_JOB_REF = {"$ref": "#/components/schemas/Job"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cdlc-stream origin",
        "version": "1",
        "description": "Playback (HLS, DASH, CMAF segments), the admin API, watch "
                       "events and stats.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "required": ["status", "title"],
                "properties": {"status": {"type": "integer"}, "title": {"type": "string"}},
            },
            "Rendition": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "kind": {"enum": ["video", "audio", "text", "image"],
                             "description": "image: the storyboard's sprite sheets"},
                    "codec": {"type": "string"}, "codec_string": {"type": "string"},
                    "bitrate": {"type": "integer"}, "avg_bitrate": {"type": "integer"},
                    "peak_bitrate": {"type": "integer"}, "width": {"type": "integer"},
                    "height": {"type": "integer"}, "frame_rate": {"type": "string"},
                    "sample_rate": {"type": "integer"}, "channels": {"type": "integer"},
                    "language": {"type": "string"},
                    "tiles": {"type": "string", "pattern": "^[1-9][0-9]*x[1-9][0-9]*$",
                              "description": "image: the sheet's grid, columns x rows"},
                    "vmaf": {"type": "number", "minimum": 0, "maximum": 100,
                             "description": "mean VMAF against the master (video; 0: "
                                            "not measured)"},
                    "analysis": {"type": ["object", "null"],
                                 "description": "per-title ladders: the rung's target VMAF "
                                                "and the candidates measured"},
                    "segments": {"type": "integer", "minimum": 0},
                },
            },
            "Job": {
                "type": "object",
                "required": ["id", "asset_id", "state", "attempt", "max_attempts"],
                "properties": {
                    "id": {"type": "string"}, "asset_id": _ID, "state": _STATE,
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "error": {"type": ["string", "null"]},
                    "attempt": {"type": "integer"}, "max_attempts": {"type": "integer"},
                    "lease_holder": {"type": ["string", "null"]},
                    "lease_expires": {"type": ["number", "null"]},
                    "queue": {"type": "string"},
                    "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                    "request": {"type": "object"},
                },
            },
            "Asset": {
                "type": "object",
                "required": ["id", "state", "progress", "version"],
                "properties": {
                    "id": _ID,
                    "state": _STATE,
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "error": {"type": ["string", "null"]},
                    "duration": {"type": "number"},
                    "current_job": {"type": "string"},
                    "job": {"oneOf": [_JOB_REF, {"type": "null"}]},
                    "playback": {"type": "object", "properties": {
                        "hls": {"type": "string"}, "dash": {"type": "string"},
                        "poster": {"type": "string"}, "storyboard": {"type": "string"}}},
                    "source_name": {"type": "string"},
                    "created_at": {"type": "number"},
                    "updated_at": {"type": "number"},
                    "version": {"type": "integer"},
                    "renditions": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Rendition"}
                    },
                },
            },
        },
    },
    "paths": {
        "/v1/assets": {
            "post": {
                "operationId": "createAsset",
                "summary": "Upload a master and start its ingest job",
                "security": _WRITE,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "id": _ID,
                            "options": {"type": "string",
                                        "description": "JSON object of job options"},
                            "ladder": {"type": "string",
                                       "description": "HEIGHT:KBPS,..., auto (per-title) "
                                       "or fixed; absent: the engine's default (auto "
                                       "where it applies)",
                                       "examples": ["720:3000,360:800", "auto", "fixed"]},
                            "preset": {"type": "string"},
                            "segment_seconds": {"type": "number", "exclusiveMinimum": 0},
                            "gop_seconds": {"type": "number", "exclusiveMinimum": 0},
                            "copy": {"type": "boolean"},
                            "encoder": {"type": "string", "enum": ["auto", "cpu", "gpu"]},
                            "vmaf": {"type": "boolean",
                                     "description": "measure each video rendition's VMAF"},
                        },
                    }}, "application/json": {"schema": {
                        "description": "a pull: the master fetched from s3:// or http(s):// "
                                       "(private and loopback addresses refused)",
                        "type": "object",
                        "required": ["source_uri"],
                        "properties": {
                            "source_uri": {"type": "string",
                                           "examples": ["s3://bucket/master.mp4"]},
                            "id": _ID,
                            "options": {"type": "object"},
                        },
                    }}},
                },
                "responses": {
                    "202": _json("accepted: the asset, QUEUED, with its job", _ASSET_REF),
                    "400": _problem("bad options, or a malformed multipart body"),
                    "401": _UNAUTHORISED,
                    "403": _problem("the JWT lacks assets:write, or the pull's source is "
                                    "refused (a private or loopback address)"),
                    "409": _problem("an asset with this id exists, or its job runs"),
                    "413": _problem("upload or pulled source larger than the maximum"),
                    "415": _problem("neither multipart/form-data nor application/json"),
                    "502": _problem("the pull's source could not be fetched"),
                    "503": _NO_ENGINE,
                    "507": _problem("the data dir cannot take the master"),
                },
            },
            **_admin_get({
                "operationId": "listAssets",
                "security": _WRITE,
                "summary": "List assets ordered by id",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                "default": 50}},
                    {"name": "state", "in": "query", "schema": _STATE},
                ],
                "responses": {
                    "200": _json("a page; pass `next` as `after` for the next one", {
                        "type": "object",
                        "required": ["items", "next"],
                        "properties": {
                            "items": {"type": "array", "items": _ASSET_REF},
                            "next": {"type": ["string", "null"]},
                        },
                    }),
                    "400": _problem("bad limit or state"),
                    "401": _UNAUTHORISED, "403": _FORBIDDEN,
                    "503": _NO_ENGINE,
                },
            }, "headListAssets"),
        },
        "/v1/assets/{id}": {
            **_admin_get({
                "operationId": "getAsset",
                "security": _WRITE,
                "summary": "An asset: state, progress, error, renditions",
                "parameters": [_ASSET_PARAM],
                "responses": {
                    "200": _json("the asset", _ASSET_REF),
                    "400": _BAD_ID, "401": _UNAUTHORISED, "403": _FORBIDDEN,
                    "404": _problem("no such asset"),
                    "503": _NO_ENGINE,
                },
            }, "headAsset"),
            "delete": {
                "operationId": "deleteAsset",
                "summary": "Delete an asset: metadata, media, master, cached and edge copies",
                "security": _WRITE,
                "parameters": [_ASSET_PARAM],
                "responses": {"204": {"description": "deleted"}, "400": _BAD_ID,
                              "401": _UNAUTHORISED, "403": _FORBIDDEN,
                              "404": _problem("no such asset"),
                              "503": _NO_ENGINE},
            },
        },
        "/v1/assets/{id}/retry": {
            "post": {
                "operationId": "retryAsset",
                "summary": "Run a failed asset's job again from its kept master",
                "security": _WRITE,
                "parameters": [_ASSET_PARAM],
                "responses": {
                    "202": _json("the new job, QUEUED", _JOB_REF),
                    "400": _BAD_ID, "401": _UNAUTHORISED, "403": _FORBIDDEN,
                    "404": _problem("no such asset"),
                    "409": _problem("the asset's job has not failed"),
                    "503": _NO_ENGINE,
                },
            },
        },
        "/v1/jobs": _admin_get({
            "operationId": "listJobs",
            "security": _WRITE,
            "summary": "Job records, oldest first",
            "parameters": [
                {"name": "state", "in": "query", "schema": _STATE},
                {"name": "asset", "in": "query", "schema": _ID},
            ],
            "responses": {
                "200": _json("the jobs", {"type": "object", "required": ["items"],
                                          "properties": {"items": {
                                              "type": "array", "items": _JOB_REF}}}),
                "400": _problem("bad state or asset id"),
                "401": _UNAUTHORISED, "403": _FORBIDDEN,
                "503": _NO_ENGINE,
            },
        }, "headJobs"),
        "/v1/openapi.json": _admin_get({
            "operationId": "getOpenAPI", "summary": "This document",
            "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
        }, "headOpenAPI"),
        "/v1/events": {
            "post": {
                "operationId": "recordWatchEvents",
                "summary": "Watch events from a player (a JSON array, as application/json "
                           "or text/plain for sendBeacon); resent event ids count once",
                "parameters": [
                    {**_TOKEN, "description": "playback token: it names the asset and "
                                              "viewer (required when a signing key is set)"},
                    {"name": "asset", "in": "query", "required": False, "schema": _ID,
                     "description": "the asset the token is for (else the first "
                                    "event's asset_id)"},
                ],
                "requestBody": {"required": True, "content": {
                    m: {"schema": {"type": "array", "maxItems": 500, "items": _WATCH_EVENT}}
                    for m in ("application/json", "text/plain")}},
                "responses": {
                    "200": _json("what was recorded; events refused one by one are listed",
                                 {"type": "object",
                                  "required": ["accepted", "duplicates", "rejected"],
                                  "properties": {
                                      "accepted": {"type": "integer", "minimum": 0},
                                      "duplicates": {"type": "integer", "minimum": 0},
                                      "rejected": {"type": "array", "items": {
                                          "type": "object", "properties": {
                                              "index": {"type": "integer"},
                                              "reason": {"type": "string"}}}}}}),
                    "400": _problem("the body is not a JSON array"),
                    "403": _problem("no valid playback token for the asset"),
                    "413": _problem("the body is over 256 KiB, or more than 500 events"),
                    "429": _problem("too many requests for this token (Retry-After)"),
                    "503": _NO_EVENTS,
                },
            },
            "options": {"operationId": "preflightWatchEvents", "summary": "CORS preflight",
                        "responses": {"204": {"description": "allowed"}}},
        },
        "/v1/assets/{id}/stats": _admin_get({
            "operationId": "getAssetStats",
            "security": _WRITE,
            "summary": "What viewers did with an asset (sessions, watch time, startup, "
                       "rebuffering, renditions) and the bytes the origin and the edge "
                       "delivered, in all and per hour",
            "parameters": [_ASSET_PARAM],
            "responses": {
                "200": _json("the stats (zeros for an asset nobody watched yet)", _STATS),
                "400": _BAD_ID, "401": _UNAUTHORISED,
                "403": _problem("the JWT lacks the scope (assets:read)"),
                "404": _problem("no such asset"),
                "503": _NO_EVENTS,
            },
        }, "headAssetStats"),
        "/v1/events/metrics": _admin_get({
            "operationId": "watchEventMetrics",
            "summary": "Prometheus aggregates of the watch events (no per-viewer labels)",
            "responses": {"200": {"description": "text exposition format", "content": _TEXT},
                          "503": _NO_EVENTS},
        }, "headWatchEventMetrics"),
        "/player/cdlc-beacon.js": _admin_get({
            "operationId": "getBeacon",
            "summary": "The player beacon: attaches to hls.js, dash.js or Shaka Player and "
                       "sends the watch events",
            "responses": {"200": {"description": "the script", "content": _JS},
                          "304": {"description": "not modified"}},
        }, "headBeacon"),
        "/vod/{asset}/master.m3u8": _playback_path(
            "MasterPlaylist", "HLS multivariant playlist (RFC 8216 §4.3.4)", [_PLAY_ASSET],
            _PLAYLIST, "playlist"),
        "/vod/{asset}/manifest.mpd": _playback_path(
            "MPD", "DASH MPD (ISO/IEC 23009-1)", [_PLAY_ASSET], ["application/dash+xml"],
            "MPD"),
        "/vod/{asset}/{rendition}/media.m3u8": _playback_path(
            "MediaPlaylist", "HLS media playlist (RFC 8216 §4.3.3)", [_PLAY_ASSET, _PLAY_REND],
            _PLAYLIST, "playlist"),
        "/vod/{asset}/{rendition}/iframes.m3u8": _playback_path(
            "IFramePlaylist", "HLS I-frame playlist (RFC 8216 §4.3.3.6); 404 for audio",
            [_PLAY_ASSET, _PLAY_REND], _PLAYLIST, "playlist"),
        "/vod/{asset}/{rendition}/init.mp4": _playback_path(
            "InitSegment", "CMAF header (init segment)", [_PLAY_ASSET, _PLAY_REND], _MEDIA,
            "init segment"),
        "/vod/{asset}/{rendition}/{number}.m4s": _playback_path(
            "MediaSegment", "CMAF media segment (1-based number); immutable",
            [_PLAY_ASSET, _PLAY_REND, _NUMBER], _MEDIA, "media segment"),
        "/vod/{asset}/poster.jpg": _playback_path(
            "Poster", "The title's poster (a representative frame); 404 without a storyboard",
            [_PLAY_ASSET], ["image/jpeg"], "poster"),
        "/vod/{asset}/storyboard.vtt": _playback_path(
            "Storyboard", "WebVTT thumbnails track: one cue per picture, "
            "storyboard/N.jpg#xywh=x,y,w,h; 404 without a storyboard", [_PLAY_ASSET],
            ["text/vtt"], "thumbnails track"),
        "/vod/{asset}/storyboard/{number}.jpg": _playback_path(
            "StoryboardSheet", "A storyboard sprite sheet (1-based number); immutable",
            [_PLAY_ASSET, _NUMBER], ["image/jpeg"], "sprite sheet"),
        "/keys/{asset}/clearkey": {
            **{method: {
                "operationId": f"{method}ClearKeyLicense",
                "summary": "ClearKey license (W3C EME ClearKey): the asset's keys as a JWK "
                           "set; POST names the key ids asked for",
                "parameters": [_PLAY_ASSET, _TOKEN],
                **({"requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "properties": {
                        "kids": {"type": "array", "items": {"type": "string"}}}}}}}}
                   if method == "post" else {}),
                "responses": _KEY_RESPONSES,
            } for method in ("get", "post")},
            "options": {"operationId": "preflightClearKeyLicense",
                        "summary": "CORS preflight", "parameters": [_PLAY_ASSET],
                        "responses": {"204": {"description": "allowed"}}},
        },
        "/keys/{asset}/{kid}": {
            "get": {
                "operationId": "getKey",
                "summary": "An encrypted asset's content key (HLS EXT-X-KEY URI), 16 raw bytes; "
                           "`format=clearkey` answers it as a ClearKey license",
                "parameters": [_PLAY_ASSET, _TOKEN,
                               _KID,
                               {"name": "format", "in": "query", "required": False,
                                "schema": {"enum": ["clearkey"]}}],
                "responses": {**_KEY_RESPONSES, "200": {
                    "description": "the key", "content": {"application/octet-stream": {},
                                                          "application/json": {}}}},
            },
            "options": {"operationId": "preflightKey", "summary": "CORS preflight",
                        "parameters": [_PLAY_ASSET, _KID],
                        "responses": {"204": {"description": "allowed"},
                                      "404": {"description": "not a key id (the route "
                                                             "matches 16 bytes in hex only)",
                                              "content": _TEXT}}},
        },
        "/healthz": _admin_get({
            "operationId": "healthz", "summary": "liveness",
            "responses": {"200": {"description": "ok", "content": _TEXT}},
        }, "headHealthz"),
        "/readyz": _admin_get({
            "operationId": "readyz", "summary": "readiness: store, objects and cache answer",
            "responses": {"200": _json("ready", {"type": "object"}),
                          "503": _json("a backend is down", {"type": "object"})},
        }, "headReadyz"),
        "/metrics": _admin_get({
            "operationId": "metrics", "summary": "Prometheus metrics",
            "responses": {"200": {"description": "text exposition format", "content": _TEXT}},
        }, "headMetrics"),
    },
}

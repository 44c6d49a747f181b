"""The OpenAPI 3.1 description of the origin's HTTP API, served at /v1/openapi.json.
Hand-written next to the handlers it describes (origin/admin.py, origin/playback.py)."""

from __future__ import annotations

from typing import Any

_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"}
_PROBLEM = {
    "description": "error (RFC 9457 problem details)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
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
    "schema": {"type": "string", "examples": ["v720", "audio"]},
}


def _media(ctype: str, what: str, ranged: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": what, "content": {ctype: {}}},
        "304": {"description": "not modified (If-None-Match)"},
        "403": {"description": "invalid, expired or missing playback token"},
        "404": {"description": "unknown asset, rendition or segment, or asset not ready"},
    }
    if ranged:
        responses["206"] = {"description": "partial content (Range)"}
        responses["416"] = {"description": "range not satisfiable"}
    return responses


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cdlc-stream origin",
        "version": "1",
        "description": "Playback (HLS, DASH, CMAF segments) and the admin API.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "properties": {"status": {"type": "integer"}, "title": {"type": "string"}},
            },
            "Rendition": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "kind": {"enum": ["video", "audio"]},
                    "codec": {"type": "string"}, "codec_string": {"type": "string"},
                    "bitrate": {"type": "integer"}, "avg_bitrate": {"type": "integer"},
                    "peak_bitrate": {"type": "integer"}, "width": {"type": "integer"},
                    "height": {"type": "integer"}, "frame_rate": {"type": "string"},
                    "sample_rate": {"type": "integer"}, "channels": {"type": "integer"},
                    "language": {"type": "string"},
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
                    "job": {"oneOf": [{"$ref": "#/components/schemas/Job"}, {"type": "null"}]},
                    "playback": {"type": "object", "properties": {
                        "hls": {"type": "string"}, "dash": {"type": "string"}}},
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
                "summary": "Upload a master and start its ingest job",
                "security": [{"bearer": []}, {"apiKey": []}],
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
                            "ladder": {"type": "string", "examples": ["720:3000,360:800"]},
                            "preset": {"type": "string"},
                            "segment_seconds": {"type": "number", "exclusiveMinimum": 0},
                            "gop_seconds": {"type": "number", "exclusiveMinimum": 0},
                            "copy": {"type": "boolean"},
                            "encoder": {"type": "string", "enum": ["auto", "cpu", "gpu"]},
                        },
                    }}},
                },
                "responses": {
                    "202": {"description": "accepted: the asset, QUEUED, with its job",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Asset"}}}},
                    "400": _PROBLEM, "401": _PROBLEM, "409": _PROBLEM, "413": _PROBLEM,
                    "415": _PROBLEM, "507": _PROBLEM,
                },
            },
            "get": {
                "summary": "List assets ordered by id",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                "default": 50}},
                    {"name": "state", "in": "query", "schema": _STATE},
                ],
                "responses": {
                    "200": {"description": "a page; pass `next` as `after` for the next one",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": {
                                        "$ref": "#/components/schemas/Asset"}},
                                    "next": {"type": ["string", "null"]},
                                },
                            }}}},
                    "400": _PROBLEM,
                },
            },
        },
        "/v1/assets/{id}": {
            "get": {
                "summary": "An asset: state, progress, error, renditions",
                "parameters": [_ASSET_PARAM],
                "responses": {
                    "200": {"description": "the asset", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Asset"}}}},
                    "404": _PROBLEM,
                },
            },
            "delete": {
                "summary": "Delete an asset: metadata, media, master, cached entries",
                "security": [{"bearer": []}, {"apiKey": []}],
                "parameters": [_ASSET_PARAM],
                "responses": {"204": {"description": "deleted"}, "401": _PROBLEM,
                              "404": _PROBLEM},
            },
        },
        "/v1/assets/{id}/retry": {
            "post": {
                "summary": "Run a failed asset's job again from its kept master",
                "security": [{"bearer": []}, {"apiKey": []}],
                "parameters": [_ASSET_PARAM],
                "responses": {
                    "202": {"description": "the new job, QUEUED",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Job"}}}},
                    "400": _PROBLEM, "401": _PROBLEM, "404": _PROBLEM, "409": _PROBLEM,
                },
            },
        },
        "/v1/jobs": {
            "get": {
                "summary": "Job records, oldest first",
                "parameters": [
                    {"name": "state", "in": "query", "schema": _STATE},
                    {"name": "asset", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "the jobs", "content": {"application/json": {
                        "schema": {"type": "object", "properties": {"items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Job"}}}}}}},
                    "400": _PROBLEM,
                },
            },
        },
        "/v1/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "ok"}}}
        },
        "/vod/{asset}/master.m3u8": {
            "get": {"summary": "HLS multivariant playlist (RFC 8216 §4.3.4)",
                    "parameters": [_PLAY_ASSET, _TOKEN],
                    "responses": _media("application/vnd.apple.mpegurl", "playlist", False)}
        },
        "/vod/{asset}/manifest.mpd": {
            "get": {"summary": "DASH MPD (ISO/IEC 23009-1)",
                    "parameters": [_PLAY_ASSET, _TOKEN],
                    "responses": _media("application/dash+xml", "MPD", False)}
        },
        "/vod/{asset}/{rendition}/media.m3u8": {
            "get": {"summary": "HLS media playlist",
                    "parameters": [_PLAY_ASSET, _PLAY_REND, _TOKEN],
                    "responses": _media("application/vnd.apple.mpegurl", "playlist", False)}
        },
        "/vod/{asset}/{rendition}/iframes.m3u8": {
            "get": {"summary": "HLS I-frame playlist (RFC 8216 §4.3.3.6)",
                    "parameters": [_PLAY_ASSET, _PLAY_REND, _TOKEN],
                    "responses": _media("application/vnd.apple.mpegurl", "playlist", False)}
        },
        "/vod/{asset}/{rendition}/init.mp4": {
            "get": {"summary": "CMAF header (init segment)",
                    "parameters": [_PLAY_ASSET, _PLAY_REND, _TOKEN],
                    "responses": _media("video/mp4", "init segment", True)}
        },
        "/vod/{asset}/{rendition}/{number}.m4s": {
            "get": {"summary": "CMAF media segment (1-based number); immutable",
                    "parameters": [_PLAY_ASSET, _PLAY_REND, _TOKEN,
                                   {"name": "number", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 1}}],
                    "responses": _media("video/mp4", "media segment", True)}
        },
        "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "readiness: store, objects and cache answer",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "a backend is down"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition"}}}},
    },
}

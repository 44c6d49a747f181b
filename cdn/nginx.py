"""The nginx edge configuration: a complete nginx.conf for a caching edge in front
of the origin (`cdlc cdn nginx-config`).

What the rendered edge does:

- caches segments and init segments under the key ``$uri`` (the token query never
  splits the cache), manifests under ``$uri`` too when tokens are off;
- takes TTLs from the origin's Cache-Control (segments immutable for a year,
  manifests short) and falls back to ``proxy_cache_valid`` only when none is sent;
- fetches each object once however many viewers ask at the same time
  (``proxy_cache_lock``), serves stale objects while the origin fails or while an
  expired object is refreshed in the background;
- with a signing key, checks the playback token of every request in njs
  (``cdn/templates/edge.js``, the format of ``cdn/tokens.py``) before the cache:
  a tampered or expired token is a 403 from the edge, no round trip to the origin.
  Manifests are then cached under ``$uri`` too, the token outside the key: the
  edge asks the origin for the manifest *template* (header
  ``cdn.tokens.TEMPLATE_HEADER``), in which child URLs carry
  ``cdn.tokens.TOKEN_PLACEHOLDER`` where the token goes, keeps one copy for every
  viewer and puts each viewer's verified token in on the way out (``sub_filter``,
  then gzip by the edge). So a new viewer can start from the edge while the
  origin is down, and no viewer is ever handed another's token;
- height limits (version-2 tokens with MAXH, ``cdn/tokens.py``): a rendition's
  files (media playlist, init, segments) above the limit are a 403 from the edge
  itself, cached or not, decided from the rendition id (``v<label>``); the
  master playlist and the MPD, which the origin builds with only the allowed
  renditions, are cached once per limit under ``$uri|h<MAXH>`` (unlimited
  tokens: ``$uri``), so a 480-limited viewer never gets the copy an unlimited one
  warmed, nor the other way round. The first request of a limit for an asset
  leaves an empty marker file ``<cache_dir>/classes/<asset>/<MAXH>``, by which the
  purge finds and drops those copies too;
- purges objects through ``PURGE /_edge/purge/<path>`` or a ``POST`` of many paths
  (njs, ``cdn/templates/edge.js``), allowed only from ``purge_allow``;
  ``cdn/purge.py`` drives it on takedown;
- marks every response with ``X-Cache: HIT|MISS|EXPIRED|STALE|UPDATING|REVALIDATED``
  and logs the cache status (never the token) in ``<cache_dir>/access.log``, in
  the ``cdlc_edge`` format whose ``asset=`` and ``t=`` fields let
  ``cdlc cdn ingest-log`` (cdn/access_log.py) add the bytes delivered per asset
  and hour to the stats.

This module imports nothing of ours.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cdn.tokens import TEMPLATE_HEADER, TOKEN_PLACEHOLDER

TEMPLATES = Path(__file__).resolve().parent / "templates"
EDGE_TEMPLATE = TEMPLATES / "edge.conf"
EDGE_JS = TEMPLATES / "edge.js"
ZONE = "cdlc_edge"
CLASSES_DIR = "classes"  # under cache_dir: height-class markers (edge.js heightClass)
PURGE_PREFIX = "/_edge/purge"

# Where distributions put dynamic nginx modules (Debian first).
MODULE_DIRS = (
    Path("/usr/lib/nginx/modules"),
    Path("/usr/lib64/nginx/modules"),
    Path("/usr/share/nginx/modules"),
    Path("/etc/nginx/modules"),
    Path("/usr/local/nginx/modules"),
)
JS_MODULE = "ngx_http_js_module.so"            # Debian: libnginx-mod-http-js (njs)

_LISTEN = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_SIZE = re.compile(r"^\d+[kKmMgG]?$")
_TIME = re.compile(r"^\d+(?:ms|s|m|h|d|w|M|y)?$")


class EdgeConfigError(ValueError):
    """A bad argument to the renderer, or a module nginx would not find."""


def find_module(name: str, dirs: Sequence[Path] = MODULE_DIRS) -> Path:
    """Absolute path of a dynamic nginx module; EdgeConfigError naming the Debian
    package when it is not installed."""
    for d in dirs:
        candidate = d / name
        if candidate.is_file():
            return candidate
    package = {JS_MODULE: "libnginx-mod-http-js"}.get(name, name)
    searched = ", ".join(str(d) for d in dirs)
    raise EdgeConfigError(f"nginx module {name} not found in {searched} (install {package})")


def _origin_parts(origin: str) -> tuple[str, str]:
    """('http'|'https', 'host:port') of the origin base URL."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EdgeConfigError(f"origin must be an http(s)://host[:port] URL, got {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EdgeConfigError(f"origin must be a base URL without a path, got {origin!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise EdgeConfigError(f"bad port in origin {origin!r}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}"


def _check_listen(listen: str) -> str:
    m = _LISTEN.match(listen)
    if not m or not 0 < int(m.group(1)) < 65536:
        raise EdgeConfigError(f"listen must be HOST:PORT, got {listen!r}")
    return listen


def _quote(value: str) -> str:
    """An nginx string literal; refuses what nginx would read as syntax."""
    if any(c in value for c in '"\\;{}$\n\r'):
        raise EdgeConfigError(f"unsafe character in config value {value!r}")
    return f'"{value}"'


def default_worker_user(cache_dir: Path) -> str | None:
    """Workers run as the owner of the cache dir when the master runs as root, so
    they can write the cache even in a 0700 directory (pytest's tmp dirs, for
    one); nginx's own default (nobody) could not."""
    if os.geteuid() != 0:
        return None  # nginx ignores `user` unless the master is root
    try:
        return pwd.getpwuid(cache_dir.stat().st_uid).pw_name
    except KeyError:
        return None


def render_nginx_config(
    origin: str,
    listen: str,
    cache_dir: Path,
    signing_key: bytes | None = None,
    *,
    daemon: bool = True,
    user: str | None = None,
    worker_processes: int | str = "auto",
    cache_max_size: str = "10g",
    cache_inactive: str = "7d",
    keys_zone_size: str = "64m",
    max_open_files: int = 16384,
    purge: bool = True,
    purge_allow: Sequence[str] = ("127.0.0.1", "::1"),
    cors_origin: str | None = "*",
    access_log: bool = True,
    error_log_level: str = "warn",
    module_dirs: Sequence[Path] = MODULE_DIRS,
) -> str:
    """A complete nginx.conf for an edge in front of `origin` listening on `listen`.

    origin: base URL of the origin, ``http://127.0.0.1:8080``.
    listen: ``HOST:PORT`` (``[::1]:8081`` for IPv6).
    cache_dir: pid, logs, temp files and the cache all live here; created (with
        its ``tmp`` folder) when missing, since nginx does not create parents.
    signing_key: the origin's playback-token key (``cdn/tokens.py``); None = tokens
        off. The key ends up in the config (the njs check reads it from a
        variable), so keep the file private (mode 0600).
    daemon: False for ``daemon off;`` (tests, supervisors).
    user: the worker user; None = the cache dir's owner when rendered as root.
    purge / purge_allow: the PURGE endpoint and the addresses allowed to use it.
    cors_origin: Access-Control-Allow-Origin for players on other origins; None = off.

    Raises EdgeConfigError on bad arguments or a missing nginx module.
    """
    scheme, hostport = _origin_parts(origin)
    _check_listen(listen)
    for name, value, pattern in (
        ("cache_max_size", cache_max_size, _SIZE),
        ("keys_zone_size", keys_zone_size, _SIZE),
        ("cache_inactive", cache_inactive, _TIME),
    ):
        if not pattern.match(value):
            raise EdgeConfigError(f"bad {name}: {value!r}")
    if not (worker_processes == "auto" or (isinstance(worker_processes, int)
                                           and worker_processes > 0)):
        raise EdgeConfigError(f"worker_processes must be 'auto' or > 0, got {worker_processes!r}")
    if max_open_files < 1024:
        raise EdgeConfigError(f"max_open_files must be >= 1024, got {max_open_files}")
    if error_log_level not in ("debug", "info", "notice", "warn", "error", "crit"):
        raise EdgeConfigError(f"bad error_log_level {error_log_level!r}")
    for addr in purge_allow:
        if not re.fullmatch(r"[0-9A-Fa-f:./]+|all|unix:", addr):
            raise EdgeConfigError(f"bad purge_allow address {addr!r}")
    if signing_key is not None and not signing_key:
        raise EdgeConfigError("signing_key is empty; pass None to turn tokens off")

    cache_dir = cache_dir.resolve()
    if any(c in str(cache_dir) for c in ' ";{}$\n\r'):
        raise EdgeConfigError(f"cache_dir must not contain spaces or nginx syntax: {cache_dir}")
    (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
    if user is None:
        user = default_worker_user(cache_dir)
    if user is not None and not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", user):
        raise EdgeConfigError(f"bad worker user {user!r}")
    if signing_key is not None:
        _classes_dir(cache_dir / CLASSES_DIR, user)

    use_js = signing_key is not None or purge
    js_module = find_module(JS_MODULE, module_dirs) if use_js else None

    values = {
        "generated_by": "cdlc cdn nginx-config",
        "user": f"user {user};" if user else "# user: nginx default",
        "worker_processes": str(worker_processes),
        "max_open_files": str(max_open_files),
        "daemon": "on" if daemon else "off",
        "cache_dir": str(cache_dir),
        "error_log_level": error_log_level,
        "load_modules": f"load_module {js_module};" if js_module else "# no dynamic modules",
        "js_import": (f"js_import cdlc from {EDGE_JS};" if js_module
                      else "# njs: not needed (no tokens, no purge)"),
        "access_log": (f"{cache_dir}/access.log cdlc_edge buffer=64k flush=1s" if access_log
                       else "off"),
        "zone": ZONE,
        "keys_zone_size": keys_zone_size,
        "cache_max_size": cache_max_size,
        "cache_inactive": cache_inactive,
        "origin_hostport": hostport,
        "origin_scheme": scheme,
        "listen": listen,
        "proxy_ssl": ("proxy_ssl_server_name on;" if scheme == "https"
                      else "# origin over plain http"),
        "token_server": _token_server(signing_key, cache_dir / CLASSES_DIR),
        "token_check": _token_check(signing_key, cors_origin),
        "manifest_cache": _manifest_cache(signing_key),
        "manifest_note": ("Shared templates (tokens on): cached under $uri, the "
                          "viewer's token put in on the way out." if signing_key
                          else "Shared (tokens off): cached under $uri."),
        "cors_headers": _cors_headers(cors_origin),
        "purge_location": _purge_location(purge, purge_allow, cache_dir / "cache"),
    }
    template = EDGE_TEMPLATE.read_text()
    missing = set(re.findall(r"\{\{(\w+)\}\}", template)) - values.keys()
    if missing:
        raise EdgeConfigError(f"template placeholders without values: {sorted(missing)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


def _classes_dir(path: Path, user: str | None) -> None:
    """The height-class markers' folder, writable by the workers (they run as
    ``user`` when the master is root)."""
    path.mkdir(exist_ok=True)
    if user is not None and os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(user)
        except KeyError as exc:
            raise EdgeConfigError(f"no such worker user {user!r}") from exc
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _token_server(signing_key: bytes | None, classes: Path) -> str:
    if signing_key is None:
        return "        # playback tokens: off (no signing key)"
    return "\n".join([
        "        # Playback tokens (cdn/tokens.py format), checked in njs before the cache;",
        "        # the top-level manifests' key suffix per height limit (edge.js heightClass).",
        "        js_set $cdlc_token_ok cdlc.verify;",
        "        js_set $cdlc_height_class cdlc.heightClass;",
        f"        set $cdlc_signing_key_hex {signing_key.hex()};",
        f"        set $cdlc_classes_root {classes};",
    ])


def _token_check(signing_key: bytes | None, cors_origin: str | None) -> str:
    lines: list[str] = []
    if cors_origin is not None:
        # A CORS preflight (Fetch, "CORS-preflight request") carries no token and
        # asks nothing of the origin: answered here, never cached. Its headers only
        # here, to keep every hit's header block small.
        lines += [
            "            if ($request_method = OPTIONS) {",
            *_indent(_cors_headers(cors_origin, preflight=True)),
            "                return 204;",
            "            }",
        ]
    if signing_key is None:
        return "\n".join([*lines, "            # no token check (tokens off)"])
    # add_header inside `if` replaces the location's set: repeat the CORS headers so
    # a player can read the 403 instead of seeing a network error.
    return "\n".join([
        *lines,
        "            if ($cdlc_token_ok != 1) {",
        "                add_header X-Cache DENIED always;",
        *_indent(_cors_headers(cors_origin)),
        "                return 403;",
        "            }",
    ])


def _indent(block: str) -> list[str]:
    return ["    " + ln for ln in block.splitlines() if "add_header" in ln]


_PROXY_HEADERS = (
    'Connection ""',
    "Host $http_host",
    "X-Forwarded-For $proxy_add_x_forwarded_for",
    "X-Real-IP $remote_addr",
    "X-Forwarded-Proto $scheme",
    "X-Forwarded-Host $http_host",
)
_MANIFEST_MIME = "application/vnd.apple.mpegurl application/dash+xml text/vtt"  # + storyboard.vtt


def _manifest_cache(signing_key: bytes | None) -> str:
    if signing_key is None:
        return "            proxy_cache_key $uri;"
    # proxy_set_header at this level replaces the server's set: all repeated.
    headers = [f"            proxy_set_header {h};" for h in _PROXY_HEADERS]
    return "\n".join([
        "            # One cached template for every viewer (the token is not in the",
        "            # key): the origin marks the token's place, the edge fills it in",
        "            # with the token verified above. Asked for uncompressed, so the",
        "            # substitution sees text; compressed here after it. Master and MPD",
        "            # of a height-limited token: one template per limit ($uri|h<MAXH>).",
        "            proxy_cache_key $uri$cdlc_height_class;",
        *headers,
        f"            proxy_set_header {TEMPLATE_HEADER} 1;",
        '            proxy_set_header Accept-Encoding "";',
        "            proxy_ignore_headers Vary;",
        f"            sub_filter {TOKEN_PLACEHOLDER} $arg_token;",
        "            sub_filter_once off;",
        f"            sub_filter_types {_MANIFEST_MIME};",
        "            gzip on;",
        f"            gzip_types {_MANIFEST_MIME};",
        "            gzip_min_length 256;",
    ])


def _cors_headers(cors_origin: str | None, *, preflight: bool = False) -> str:
    if cors_origin is None:
        return "            # CORS: off"
    allow = _quote(cors_origin)
    lines = [f"            add_header Access-Control-Allow-Origin {allow} always;"]
    if preflight:
        lines += [
            '            add_header Access-Control-Allow-Methods "GET, HEAD, OPTIONS" always;',
            '            add_header Access-Control-Allow-Headers "Range, If-None-Match, '
            'If-Modified-Since, If-Range" always;',
            "            add_header Access-Control-Max-Age 86400 always;",
        ]
    else:
        lines += [
            '            add_header Access-Control-Expose-Headers "X-Cache, Content-Range, '
            'Age" always;',
        ]
    return "\n".join(lines)


def _purge_location(purge: bool, purge_allow: Sequence[str], cache_root: Path) -> str:
    if not purge:
        return "        # purge: off"
    lines = [
        "        # PURGE /_edge/purge/vod/... drops the object cached under /vod/...",
        "        # (200 purged, 404 not cached); POST /_edge/purge takes one path a",
        "        # line. cdn/purge.py drives it on takedown; edge.js explains how.",
        f"        location ^~ {PURGE_PREFIX} {{",
        "            access_log off;",
    ]
    lines += [f"            allow {addr};" for addr in purge_allow]
    lines += [
        "            deny all;",
        "            # r.requestText needs the whole body in memory.",
        "            client_max_body_size 16m;",
        "            client_body_buffer_size 16m;",
        f"            set $cdlc_cache_root {cache_root};",
        "            js_content cdlc.purge;",
        "        }",
    ]
    return "\n".join(lines)

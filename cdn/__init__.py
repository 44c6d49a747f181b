"""cdlc-stream cdn: the nginx edge in front of the origin.

- ``cdn.nginx``: renders a complete nginx.conf (``render_nginx_config``) from
  ``cdn/templates/edge.conf``; ``cdn/templates/edge.js`` is the edge's njs code
  (playback-token check, purge).
- ``cdn.tokens``: the playback-token format, signed by the origin, checked by both.
- ``cdn.purge``: the purge client for takedowns (``purge_asset``).
- ``cdn.edge``: runs a rendered edge as a child process (tests, benchmarks, demo).

Imports nothing of ours outside this package.
"""

"""The generated code of the gRPC API (proto/cdlc/stream/v1), importable.

proto/generate.py writes it into proto/gen/ (``make setup`` runs it; it is never
committed). Its modules import each other by their .proto paths (``from
cdlc.stream.v1 import assets_pb2``), so proto/gen goes on sys.path here, once.
In a checkout with grpcio-tools (a dev install) missing or stale code is
generated on first import; elsewhere a missing tree is an ImportError that says
how to make it.

The ``*_pb2_grpc`` modules have no type stubs (protoc writes stubs for messages
only), so they are handed out as plain modules; the servicers in origin/grpc_*.py
are typed classes of their own, registered with the generated ``add_*_to_server``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
GEN_DIR = PROTO_DIR / "gen"


def _ensure_generated() -> None:
    script = PROTO_DIR / "generate.py"
    if not script.exists():
        return
    if importlib.util.find_spec("grpc_tools") is None:
        if not (GEN_DIR / "cdlc").exists():
            raise ImportError(
                "the gRPC code is not generated: run `python proto/generate.py` "
                "(needs grpcio-tools)")
        return
    spec = importlib.util.spec_from_file_location("cdlc_proto_generate", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.stale():
        module.generate()


_ensure_generated()
if str(GEN_DIR) not in sys.path:
    sys.path.insert(0, str(GEN_DIR))

import cdlc.stream.v1.assets_pb2 as assets_pb2  # noqa: E402
import cdlc.stream.v1.events_pb2 as events_pb2  # noqa: E402
import cdlc.stream.v1.playback_pb2 as playback_pb2  # noqa: E402

assets_pb2_grpc: ModuleType = importlib.import_module("cdlc.stream.v1.assets_pb2_grpc")
playback_pb2_grpc: ModuleType = importlib.import_module("cdlc.stream.v1.playback_pb2_grpc")
events_pb2_grpc: ModuleType = importlib.import_module("cdlc.stream.v1.events_pb2_grpc")

# Full names of the services, as reflection and the health service name them.
ASSET_SERVICE = assets_pb2.DESCRIPTOR.services_by_name["AssetService"].full_name
PLAYBACK_SERVICE = playback_pb2.DESCRIPTOR.services_by_name["PlaybackService"].full_name
EVENT_SERVICE = events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
SERVICES = (ASSET_SERVICE, PLAYBACK_SERVICE, EVENT_SERVICE)

__all__ = [
    "ASSET_SERVICE", "EVENT_SERVICE", "PLAYBACK_SERVICE", "SERVICES", "assets_pb2",
    "assets_pb2_grpc", "events_pb2", "events_pb2_grpc", "playback_pb2", "playback_pb2_grpc",
]

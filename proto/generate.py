"""Generate the Python code of the gRPC API (proto/cdlc/stream/v1/*.proto) into
proto/gen/ (git-ignored; never edited or committed).

    .venv/bin/python proto/generate.py          # regenerate when a .proto is newer
    .venv/bin/python proto/generate.py --force  # regenerate anyway

grpcio-tools' bundled protoc writes ``*_pb2.py`` (messages), ``*_pb2.pyi``
(their type stubs, for mypy) and ``*_pb2_grpc.py`` (stubs and servicer glue).
The imports inside follow the .proto paths (``from cdlc.stream.v1 import
assets_pb2``), so proto/gen is the import root: origin.grpc_proto puts it on
sys.path. google/protobuf/*.proto come from grpc_tools' own include dir.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEN = HERE / "gen"
PACKAGE = Path("cdlc/stream/v1")


def sources() -> list[Path]:
    return sorted((HERE / PACKAGE).glob("*.proto"))


def stale() -> bool:
    """True when any output is missing or older than its .proto (or this script)."""
    newest = max([p.stat().st_mtime for p in sources()] + [Path(__file__).stat().st_mtime])
    for proto in sources():
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            out = GEN / PACKAGE / f"{proto.stem}{suffix}"
            if not out.exists() or out.stat().st_mtime < newest:
                return True
    return False


def generate() -> None:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    tmp = GEN.with_name("gen.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"-I{include}",
        f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
        *(str(p.relative_to(HERE)) for p in sources()),
    ]
    subprocess.run(cmd, check=True, cwd=HERE)
    # Marks the tree as typed for mypy (PEP 561) where it is on mypy_path.
    (tmp / "py.typed").touch()
    # Swap the whole tree at once: a concurrent import sees the old or the new one.
    old = GEN.with_name("gen.old")
    shutil.rmtree(old, ignore_errors=True)
    if GEN.exists():
        GEN.rename(old)
    tmp.rename(GEN)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="regenerate even when fresh")
    args = parser.parse_args(argv)
    if args.force or stale():
        generate()
        print(f"generated {len(sources())} protos into {GEN.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

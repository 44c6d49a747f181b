"""The Node load client of bench/grpc.py (bench/grpc_load.cjs, @grpc/grpc-js)
against a real server: it counts answered calls, and a server that refuses them
fails the run (exit 1, the status named) instead of passing for a fast one."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.grpc.conftest import ROOT, MakeStack, upload

LOAD = ROOT / "bench" / "grpc_load.cjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="node or its npm packages are not installed (make setup)")


async def _load(target: str, rpc: str, asset: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(LOAD), "--target", target, "--rpc", rpc, "--asset", asset,
        "--seconds", "0.5", "--concurrency", "8",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_node_load_counts_calls_and_fails_on_errors(make_stack: MakeStack,
                                                         master: Path) -> None:
    stack = await make_stack(hold_jobs=True)  # the asset stays QUEUED: GetAsset answers
    await upload(stack.assets(), master, asset_id="loaded")
    rc, out, err = await _load(stack.target, "GetAsset", "loaded")
    assert rc == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["rpc"] == "GetAsset" and report["errors"] == 0
    assert report["requests"] > 0 and report["rps"] > 0 and report["p99_ms"] > 0

    # Refused calls fail the run, naming the first status (numeric gRPC codes).
    rc, _, err = await _load(stack.target, "IssuePlayback", "loaded")  # not READY
    assert rc == 1 and "the first: 9 " in err, err  # 9: FAILED_PRECONDITION
    rc, _, err = await _load(stack.target, "GetAsset", "nope")
    assert rc == 1 and "the first: 5 " in err, err  # 5: NOT_FOUND
    rc, _, err = await _load(stack.target, "Nothing", "loaded")
    assert rc == 2 and "usage" in err

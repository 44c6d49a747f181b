"""Several processes opening a fresh SQLite metadata file at the same moment (a
`cdlc ingest` and a `cdlc status` started together): none may fail to open it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

OPEN = ("import asyncio, sys; from pathlib import Path; from metadata import open_store\n"
        "from metadata.models import Asset\n"
        "async def main():\n"
        "    store = open_store('', Path(sys.argv[1]))\n"
        "    await store.put_asset(Asset(id=sys.argv[2]))\n"
        "    assert await store.get_asset(sys.argv[2]) is not None\n"
        "    await store.close()\n"
        "asyncio.run(main())\n")


def test_concurrent_first_opens_all_succeed(tmp_path: Path) -> None:
    for round_ in range(6):
        data = tmp_path / f"round{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(data), f"a{i}"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(8)]
        for p in procs:
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
        assert (data / "metadata.db").exists()

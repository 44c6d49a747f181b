"""Run package_copy over byte-mutated masters; print one line per case before it
runs so a crash names its input. Used by test_fuzz.py in a subprocess (a segfault
must fail the test, not kill pytest).

    python -m tests.fuzz.mutate_masters OUT_DIR MASTER [MASTER ...]
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import native

CASES_PER_MASTER = int(os.environ.get("CDLC_MUTATIONS", "12"))


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.choice(["flip", "zero", "cut", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 64)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        start = rng.randrange(len(buf))
        buf[start : start + rng.randint(1, 4096)] = bytes(min(4096, len(buf) - start))
    elif kind == "cut":
        del buf[rng.randrange(len(buf)) :]
    else:
        a, b = sorted(rng.randrange(len(buf)) for _ in range(2))
        buf[a:a] = buf[b : b + rng.randint(1, 2048)]
    return bytes(buf)


def main() -> int:
    out = Path(sys.argv[1])
    rng = random.Random(20261129)
    outcomes: dict[str, int] = {}
    for master in map(Path, sys.argv[2:]):
        data = master.read_bytes()
        for i in range(CASES_PER_MASTER):
            case = out / f"{master.stem}-{i}{master.suffix}"
            case.write_bytes(mutate(data, rng))
            print(f"case {case.name}", flush=True)
            try:
                native.package_copy(case, out / "pkg", 1.0)
                outcome = "ok"
            except native.NativeError as e:
                outcome = type(e).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            shutil.rmtree(out / "pkg", ignore_errors=True)
            case.unlink()
    print("outcomes", outcomes, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

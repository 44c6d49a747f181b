"""`python -m bench [NAME ...]`: run the benchmark scripts (all by default).

Each one prints its own table (medians and ratios against its baseline from the
same run) and is also runnable alone as `python -m bench.NAME`."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ["transcode", "av1", "pertitle", "package", "previews", "origin", "edge", "scale",
              "chunk_read", "tus", "grpc"]


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {BENCHMARKS}",
              file=sys.stderr)
        return 2
    failed: list[str] = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        sys.argv = [f"bench.{name}"]  # each script parses its own (default) options
        try:
            runpy.run_module(f"bench.{name}", run_name="__main__")
        except SystemExit as exc:  # each script ends with SystemExit(main())
            if exc.code not in (None, 0):
                failed.append(name)
    if failed:
        print(f"benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

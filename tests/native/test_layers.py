"""The C++ core's layers (native/src): each folder is a layer, and a file includes
headers of its own folder or of lower layers only, so a reader can take the core in
from the bottom up and a change to a high layer never ripples down.

    0  common                      errors, the media model, cues, languages, UTF-8
    1  av, codec, io               FFmpeg glue; bitstream parsing; files and the write pool
    2  cmaf, probe, text           CMAF boxes and segmenter; probing; subtitles and WebVTT
    3  transcode, remux            the two pipelines

Folders of one rank do not include each other: none needs to today, and a new
need is a sign that the code belongs a layer down (add it to SAME_RANK_ALLOWED
with the reason only when it does not). No .cpp or header grows past MAX_LINES:
a file that long does several jobs. CDLC_NATIVE_SRC points the checks at another
tree (e.g. an older checkout's native/src, which fails them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(os.environ.get("CDLC_NATIVE_SRC", ROOT / "native" / "src"))

RANK: dict[str, int] = {
    "common": 0,
    "av": 1,
    "codec": 1,
    "io": 1,
    "cmaf": 2,
    "probe": 2,
    "text": 2,
    "transcode": 3,
    "remux": 3,
}
# (includer's folder, included folder) pairs of one rank that may include each
# other, each with its reason. None today.
SAME_RANK_ALLOWED: dict[tuple[str, str], str] = {}
MAX_LINES = 600
# Fuzz targets (excluded from the library by CMakeLists.txt) sit above every layer.
TOP_FOLDERS = {"fuzz"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class Finding:
    path: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def sources(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.suffix in {".cpp", ".h"} and p.is_file())


def layer_findings(src: Path) -> list[Finding]:
    """Files outside a known layer folder, includes that reach up or sideways, and
    includes of headers that do not exist."""
    found: list[Finding] = []
    for path in sources(src):
        rel = path.relative_to(src)
        name = rel.as_posix()
        if len(rel.parts) < 2:
            found.append(Finding(name, "not in a layer folder"))
            continue
        folder = rel.parts[0]
        if folder in TOP_FOLDERS:
            continue
        if folder not in RANK:
            found.append(Finding(name, f"folder {folder}/ is no layer (known: {sorted(RANK)})"))
            continue
        for target in INCLUDE.findall(path.read_text(encoding="utf-8", errors="replace")):
            parts = Path(target).parts
            if not (src / target).is_file():
                found.append(Finding(name, f'includes "{target}", which is not under native/src'))
                continue
            other = parts[0] if len(parts) > 1 else ""
            if other == folder:
                continue
            if other not in RANK:
                found.append(Finding(name, f'includes "{target}" from outside the layers'))
            elif RANK[other] > RANK[folder]:
                found.append(
                    Finding(
                        name,
                        f'includes "{target}": {other} (rank {RANK[other]}) is above '
                        f"{folder} (rank {RANK[folder]})",
                    )
                )
            elif RANK[other] == RANK[folder] and (folder, other) not in SAME_RANK_ALLOWED:
                found.append(
                    Finding(
                        name, f'includes "{target}": {other} and {folder} share rank {RANK[folder]}'
                    )
                )
    return found


def size_findings(src: Path) -> list[Finding]:
    found = []
    for path in sources(src):
        n = len(path.read_text(encoding="utf-8", errors="replace").splitlines())
        if n > MAX_LINES:
            found.append(
                Finding(path.relative_to(src).as_posix(), f"{n} lines (at most {MAX_LINES})")
            )
    return found


def test_native_src_is_there() -> None:
    assert sources(SRC), f"no C++ sources under {SRC}"


def test_includes_follow_the_layers() -> None:
    found = layer_findings(SRC)
    assert not found, "\n".join(map(str, found))


def test_files_do_one_job() -> None:
    found = size_findings(SRC)
    assert not found, "\n".join(map(str, found))


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"codec/a.cpp": '#include "cmaf/b.h"\n', "cmaf/b.h": ""}, "above codec"),
        ({"av/a.cpp": '#include "codec/b.h"\n', "codec/b.h": ""}, "share rank 1"),
        ({"text/a.h": '#include "text/missing.h"\n'}, "not under native/src"),
        ({"avglue/a.cpp": ""}, "is no layer"),
        ({"a.cpp": ""}, "not in a layer folder"),
    ],
)
def test_the_layer_check_sees_violations(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    found = layer_findings(_tree(tmp_path, files))
    assert len(found) == 1 and expected in found[0].why, found


def test_the_layer_check_allows_downward_includes(tmp_path: Path) -> None:
    files = {
        "remux/a.cpp": '#include "remux/a.h"\n#include "cmaf/b.h"\n#include "common/c.h"\n',
        "remux/a.h": "",
        "cmaf/b.h": '#include "io/d.h"\n',
        "io/d.h": '#include "common/c.h"\n',
        "common/c.h": "#include <vector>\n",
    }
    assert layer_findings(_tree(tmp_path, files)) == []


def test_the_size_check_sees_a_long_file(tmp_path: Path) -> None:
    _tree(tmp_path, {"remux/a.cpp": "int x;\n" * (MAX_LINES + 1), "remux/b.cpp": "int y;\n"})
    assert [f.path for f in size_findings(tmp_path)] == ["remux/a.cpp"]

"""native/_core.pyi, the types mypy checks callers of native._core against, names
exactly what the built module exports: a binding added, renamed or dropped in
native/bindings.cpp without the stub fails here instead of going silently stale."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from native import _core

STUB = Path(__file__).resolve().parents[2] / "native" / "_core.pyi"


def _public(names: Iterable[object]) -> set[str]:
    return {n for n in names if isinstance(n, str) and not n.startswith("_")}


def _stub() -> tuple[set[str], dict[str, set[str]]]:
    """Module-level public names of the stub, and each class's public members."""
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            found = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    found.add(item.target.id)
            members[node.name] = _public(found)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return _public(names), members


def test_stub_names_what_the_module_exports() -> None:
    stub, _ = _stub()
    module = _public(dir(_core))
    assert module - stub == set(), "exported by native._core but missing from _core.pyi"
    assert stub - module == set(), "in _core.pyi but not exported by native._core"


@pytest.mark.parametrize("name", sorted(_stub()[1]))
def test_stub_class_members_match(name: str) -> None:
    cls = getattr(_core, name)
    stub = _stub()[1][name]
    if issubclass(cls, BaseException):
        # The binding makes the error classes with type(): no members of their own;
        # `code` is set on each raised instance (test_errors_carry_a_code).
        assert _public(vars(cls)) == set() and stub <= {"code"}
        return
    own = _public(vars(cls))
    assert own - stub == set(), f"{name}: bound but missing from _core.pyi"
    assert stub - _public(dir(cls)) == set(), f"{name}: in _core.pyi but not bound"


def test_errors_carry_a_code() -> None:
    with pytest.raises(_core.InvalidDataError) as info:
        _core.parse_subtitles(b"", "no-such-format")
    assert isinstance(info.value.code, int)
    assert isinstance(info.value, ValueError) and isinstance(info.value, _core.NativeError)


def test_the_check_sees_a_missing_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = STUB.read_text(encoding="utf-8").replace("def probe(path: str) -> MediaInfo: ...\n", "")
    (tmp_path / "_core.pyi").write_text(text, encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.STUB", tmp_path / "_core.pyi")
    with pytest.raises(AssertionError, match=r"missing from _core\.pyi"):
        test_stub_names_what_the_module_exports()

"""`cdlc ingest --copy` starts its copy before the settings load, on a guess of
where they will put it (engine/config_defaults.py). The guess must agree with
Settings wherever it is made, and a wrong one must cost time only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Settings
from engine.config_defaults import ENV_PREFIX, guess_copy_inputs
from tests.conftest import ROOT
from tests.media import make_master

# Runs the CLI with CopyRun replaced by a spy that notes, per copy started, whether
# pydantic-settings had been imported by then.
SPY = """
import sys
import engine.copy_run as copy_run

class Spy(copy_run.CopyRun):
    def __init__(self, *args, **kwargs):
        print("copy started; settings loaded:", "pydantic_settings" in sys.modules,
              file=sys.stderr)
        super().__init__(*args, **kwargs)

copy_run.CopyRun = Spy
sys.argv[0] = "cdlc"
from engine.cli import main
main()
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def run_spied(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: the spy runs from a foreign working directory.
    env = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", SPY, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def copies_started(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.rsplit(" ", 1)[1] for line in proc.stderr.splitlines()
            if line.startswith("copy started")]


@pytest.mark.parametrize(("env", "segment_seconds"), [
    ({}, None),
    ({"CDLC_DATA_DIR": "/srv/cdlc/"}, None),
    ({"CDLC_DATA_DIR": "./rel/data", "CDLC_SEGMENT_SECONDS": "6"}, None),
    ({"CDLC_SEGMENT_SECONDS": "6"}, 2.0),
])
def test_the_guess_is_what_settings_resolve(monkeypatch: pytest.MonkeyPatch,
                                           env: dict[str, str],
                                           segment_seconds: float | None) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    expected = segment_seconds if segment_seconds is not None else settings.segment_seconds
    assert guess_copy_inputs(segment_seconds) == (settings.work_dir, expected)


@pytest.mark.parametrize(("env", "segment_seconds"), [
    ({"CDLC_BROKER": "redis://127.0.0.1:6379/0"}, None),  # a worker elsewhere copies
    ({"CDLC_SEGMENT_SECONDS": "four"}, None),              # Settings will refuse it
    ({}, 0.0),
    ({}, -2.0),
    ({}, float("inf")),
])
def test_no_guess_where_no_copy_should_start(monkeypatch: pytest.MonkeyPatch,
                                             env: dict[str, str],
                                             segment_seconds: float | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert guess_copy_inputs(segment_seconds) is None


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_master(tmp_path_factory.mktemp("early") / "m.mp4", seconds=2,
                       width=320, height=240)


def test_copy_starts_before_the_settings_load(master: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = run_spied(tmp_path, clean_env(CDLC_DATA_DIR=str(data)),
                     "ingest", str(master), "--id", "early", "--copy", "--json")
    assert proc.returncode == 0, proc.stderr
    assert copies_started(proc) == ["False"]  # one copy, started first, and kept
    assert json.loads(proc.stdout)["state"] == "ready"
    assert (data / "objects" / "media" / "early" / "v240" / "init.mp4").is_file()
    assert list((data / "work").iterdir()) == []


def test_a_wrong_guess_costs_a_second_copy_and_leaves_no_trace(master: Path,
                                                               tmp_path: Path) -> None:
    """pydantic-settings matches names in any case; the guess reads exact-case ones
    only. With a lower-case variable the guess points at ./cdlc-data: that copy is
    abandoned, the job copies again into the real data directory, and nothing is
    left where the guess pointed."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data = tmp_path / "data"
    env = clean_env(**{ENV_PREFIX.lower() + "data_dir": str(data)})
    proc = run_spied(cwd, env, "ingest", str(master), "--id", "guessed", "--copy", "--json")
    assert proc.returncode == 0, proc.stderr
    assert copies_started(proc) == ["False", "True"]
    assert json.loads(proc.stdout)["state"] == "ready"
    assert (data / "objects" / "media" / "guessed" / "v240" / "init.mp4").is_file()
    assert list(cwd.iterdir()) == []


def test_a_guessed_copy_is_abandoned_when_the_job_is_refused(master: Path,
                                                             tmp_path: Path) -> None:
    """A setting the guess does not read is bad: the copy the guess started is
    abandoned, the command fails in one line and nothing is left behind."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_spied(cwd, clean_env(CDLC_ENCODER="quantum"),
                     "ingest", str(master), "--id", "refused", "--copy")
    assert proc.returncode == 2, proc.stderr
    assert copies_started(proc) == ["False"]
    assert proc.stderr.strip().splitlines()[-1] == \
        "cdlc: error: CDLC_ENCODER: Value error, encoder must be auto, cpu or gpu"
    assert list(cwd.iterdir()) == []

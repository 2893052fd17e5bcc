"""`lth run` and the trainer on a shared machine: a planted lock file is never followed, and a
spec file that nests too deeply is one line, not a traceback (issue 23)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lth.local.executor import RunError
from lth.local.runner import run_lock
from lth.storage.lifetime import LOCK_FILE, exclusive

VICTIM = "the victim's own file\n"


def _planted(link: Path, tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text(VICTIM)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return victim


def test_a_run_lock_planted_as_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r"
    victim = _planted(run_dir / ".lock", tmp_path)
    with (
        pytest.raises(RunError, match=r"\.lock: a symbolic link where a lock file belongs"),
        run_lock(run_dir),
    ):
        pass
    assert victim.read_text() == VICTIM


def test_a_level_lock_planted_as_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    from lth.storage.lifetime import UnsafeLockFile

    level = tmp_path / "levels" / "01"
    victim = _planted(level / LOCK_FILE, tmp_path)
    with pytest.raises(UnsafeLockFile, match="a symbolic link"), exclusive(level, "level 1 main"):
        pass
    assert victim.read_text() == VICTIM


@pytest.mark.parametrize("command", ["validate", "run", "render"])
def test_a_spec_nested_twenty_thousand_deep_is_one_line(tmp_path: Path, command: str) -> None:
    spec = tmp_path / "[b]not markup" / "run.yaml"  # a path is printed as it is, never styled
    spec.parent.mkdir()
    spec.write_text("spec: " + "[" * 20_000 + "]" * 20_000 + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "lth", command, str(spec)], capture_output=True, text=True, timeout=120
    )
    said = (done.stdout + done.stderr).strip()  # `lth run` says it on its console, the others on stderr
    assert done.returncode == 1 and "Traceback" not in said
    # one line, whatever the path's length: `lth run`'s console does not wrap an error
    assert said.splitlines()[-1].endswith(f"{spec}: nested too deeply to be a LotteryTicketRun")
    assert said.count("nested too deeply") == 1

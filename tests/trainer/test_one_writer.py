"""One writer per level: a trainer waits while another holds its level, and dies with its launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO

from lth.storage.lifetime import LOCK_FILE, exclusive
from tests.trainer.conftest import PYTHON, make_spec, subprocess_env, trainer_args


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has died; only its parent has not collected it yet.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def read_until(stream: IO[str], text: str) -> str:
    """Lines of `stream` up to the first that holds `text`, or all of them if the writer ends first."""
    lines: list[str] = []
    for line in stream:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_a_second_trainer_on_the_same_level_waits_for_the_first(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    level_dir = run_dir / "levels" / "00"
    argv = [PYTHON, "-m", "lth_trainer", *trainer_args(run_dir, data_dir, make_spec(epochs=2), 0)]
    with exclusive(level_dir, "level 0 main"):  # the first writer, as far as the trainer can tell
        second = subprocess.Popen(argv, env=subprocess_env(), stderr=subprocess.PIPE, text=True)
        assert second.stderr is not None
        # Read until the trainer says it waits (however long its imports take on a loaded machine),
        # or until it exits without waiting: then the read ends at EOF and the asserts below fail.
        said = read_until(second.stderr, "waiting for it to finish")
        time.sleep(1)  # it goes on waiting
        assert second.poll() is None, said
        assert f"is held by pid {os.getpid()}" in said
        assert not (level_dir / "result.json").exists()
        assert not (level_dir / "mask.safetensors").exists()  # nothing written beside the holder
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, said + stderr
    assert (level_dir / "result.json").exists() and (level_dir / LOCK_FILE).exists()


LAUNCHER = textwrap.dedent(
    """
    import subprocess, sys, time
    # As torchrun starts its workers: in a session of their own.
    body = "from lth.storage.lifetime import die_with_parent; die_with_parent(); import time; time.sleep(120)"
    worker = subprocess.Popen([sys.executable, "-c", body], start_new_session=True)
    print(worker.pid, flush=True)
    time.sleep(120)
    """
)


def test_a_worker_dies_with_the_launcher_that_started_it(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER], env=subprocess_env(), stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    worker = int(launcher.stdout.readline())
    time.sleep(1)
    assert alive(worker)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


HOLDER_WITH_A_FORKED_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from lth.storage.lifetime import exclusive
    with exclusive(Path(sys.argv[1]), "level 0 main"):
        child = os.fork()  # as a DataLoader worker is forked, open files and all
        if child == 0:
            time.sleep(120)
            os._exit(0)
        print(child, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


TAKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lth.storage.lifetime import exclusive
    with exclusive(Path(sys.argv[1]), "level 0 main"):
        pass
    """
)


def test_a_level_is_free_once_its_holder_is_killed_though_a_forked_child_lives_on(tmp_path: Path) -> None:
    level_dir = tmp_path / "levels" / "00"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_WITH_A_FORKED_CHILD, str(level_dir)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    orphan = int(holder.stdout.readline())  # the orphan keeps the pipe open: no communicate()
    holder.wait(timeout=60)
    try:
        assert holder.returncode == -signal.SIGKILL and alive(orphan)
        taker = subprocess.run(
            [sys.executable, "-c", TAKER, str(level_dir)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert taker.returncode == 0 and "waiting for it to finish" not in taker.stderr, taker.stderr
    finally:
        os.kill(orphan, signal.SIGKILL)

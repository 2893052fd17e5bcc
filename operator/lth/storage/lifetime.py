"""One writer per level: workloads die with whoever started them, and hold their level while they run.

A local `lth run` killed with SIGKILL cannot stop its children itself; the kernel can, if
each child asked for it (`PR_SET_PDEATHSIG`). torchrun starts its workers in sessions of
their own, so the trainer asks too, for the death of torchrun. On a cluster the pod's end
does the same. A level directory is also locked while a trainer works in it, so a second
process on the same level (a rerun beside an orphan, a duplicated pod) waits for the first
instead of writing the same files at the same time. The lock is a POSIX record lock, which
belongs to the process alone: a forked DataLoader worker does not inherit it, so a trainer
killed with SIGKILL frees its level at once even while an orphaned worker lingers (a
`flock` would stay held by that worker). Record locks also work on NFS volumes. Standard
library only: the control plane and the trainer image both use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
LOCK_FILE = ".writer.lock"

log = logging.getLogger(__name__)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux; elsewhere nothing).

    Safe as a `preexec_fn`. If the parent is already gone (a race with the fork), exit now.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def start_with_parent_death() -> None:
    """`preexec_fn` of a child of `lth run`: its own process group, and killed with the runner."""
    os.setsid()
    die_with_parent(signal.SIGKILL)


class UnsafeLockFile(Exception):
    """A lock file that is a symbolic link or not a regular file: someone planted it (a link
    would make the holder truncate and write whatever it points to), so it is never followed."""


def open_lock_file(path: Path) -> IO[str]:
    """A lock file, created if need be, opened without following a symbolic link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise UnsafeLockFile(f"{path}: a symbolic link where a lock file belongs (not followed)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeLockFile(f"{path}: not a regular file where a lock file belongs; remove it")
    return os.fdopen(fd, "r+")


@contextlib.contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    """Hold `directory` for one writer; a second one waits, saying who holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open_lock_file(directory / LOCK_FILE)
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as held:
            if held.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.warning("%s: %s is held by %s; waiting for it to finish", directory, what, holder)
            fcntl.lockf(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.lockf(handle, fcntl.LOCK_UN)
        handle.close()

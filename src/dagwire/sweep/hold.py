"""One sweep per DIR at a time: DIR/.dagwire-lock, locked by the sweep command while it runs.

The lock is an flock(2), which the kernel drops when the process that holds it ends, however it
ends: the hold of a killed sweep (its file still names a pid that is gone) is taken over by the
next sweep. Linux's NFS client takes an flock as a lock on the whole file at the server (flock(2),
since Linux 2.6.12; unless mounted with local_lock=flock or all, nfs(5)), so sweeps on two hosts
that share DIR exclude each other too. The file names its holder (pid, host, since) for the
sweep that is refused, and is removed when the hold ends.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import DagwireError

HOLD_FILE = ".dagwire-lock"


def _holder_text(fd: int) -> str:
    """Who the lock file open as `fd` says holds it, for the refused sweep's one line."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {int(holder['pid'])} on host {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"a process that has not written its pid into {HOLD_FILE} yet"


def _lock(sweep_dir: Path) -> int:
    """An open descriptor of DIR/.dagwire-lock, locked by this process; DagwireError when a live sweep holds it."""
    import fcntl

    path = sweep_dir / HOLD_FILE
    for attempt in itertools.count():
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)  # each time: a sweep that just ended may have removed it
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and attempt < 10:  # DIR removed between mkdir and open
                continue
            raise DagwireError(f"--out {sweep_dir}: cannot create {path} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise DagwireError(f"{sweep_dir} is in use by another dagwire sweep: {holder}; wait for it to "
                               "finish (or stop it), then run this again") from None
        except OSError as exc:
            os.close(fd)
            raise DagwireError(f"cannot lock {path}: {exc.strerror or exc}; DIR must be on a filesystem "
                               "with file locks") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)  # the holder ended and removed this file between our open and our lock: lock the new one


@contextmanager
def hold_sweep_dir(sweep_dir: str | os.PathLike) -> Iterator[None]:
    """Hold DIR for this sweep (created when missing, and removed again if the sweep leaves it empty)."""
    sweep_dir = Path(sweep_dir)
    created = [d for d in (sweep_dir, *sweep_dir.parents) if not d.exists()]  # deepest first
    try:
        fd = _lock(sweep_dir)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield
    finally:
        # Removed while still locked: a sweep that opened this file meanwhile sees it is no longer DIR's.
        (sweep_dir / HOLD_FILE).unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(created)


def _remove_empty(dirs: list[Path]) -> None:
    """Remove the directories this hold created, deepest first, as far as nothing was written into them."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return

"""One trainer per run directory: an OS-level lock on ``WORKDIR/.lock``.

:class:`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``WORKDIR/.lock`` and writes the
holder's PID, host name, start time and command line into that file (JSON). The kernel releases
the lock when the process exits or is killed (SIGKILL included), so a stale ``.lock`` file never
blocks a later run: only a *live* holder refuses. A second writer gets
:class:`~score_sde.training.errors.RunLockedError` naming the holder.

Who takes it: :func:`score_sde.training.train` (rank 0 of a torchrun launch, which then tells
every rank the outcome) and anything else that writes checkpoints into a run directory.
Readers (sampling, likelihood, evaluation) never take it; they never see a half-written file
because every checkpoint, config and log file is replaced atomically.

On platforms without ``fcntl`` (Windows) the lock is skipped with a warning.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Optional

from .errors import RunLockedError, reraise_write_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLock", "RunLockedError", "read_lock_holder", "LOCK_NAME"]

LOCK_NAME = ".lock"


def read_lock_holder(workdir) -> Optional[Dict]:
    """The holder record written in ``workdir/.lock`` (pid, host, started, argv), or None.

    The record of a process that died stays in the file; only the OS lock says whether it is held."""
    try:
        text = (Path(workdir) / LOCK_NAME).read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _describe(holder: Optional[Dict]) -> str:
    if not holder:
        return "a process that has not written its details yet"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


class RunLock:
    """Exclusive lock of a run directory (a context manager; :meth:`acquire` / :meth:`release`).

    Args:
        workdir: the run directory (created if missing).
        purpose: what the holder does, written into the lock file (e.g. ``"train"``).
    Raises RunLockedError from :meth:`acquire` when another process holds it; the message names
    that process (PID, host, start time) and the directory.
    """

    def __init__(self, workdir, purpose: str = "train"):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self.purpose = purpose
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover
            warnings.warn("no fcntl on this platform: the run directory is not locked; never start two trainers "
                          f"on {self.workdir}")
            return self
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            reraise_write_error(e, self.path)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = read_lock_holder(self.workdir)
            raise RunLockedError(
                f"run directory {self.workdir} is in use by {_describe(holder)} (lock file {self.path}); wait for "
                "that run to finish or stop it, or choose another workdir") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "purpose": self.purpose, "argv": sys.argv[:8]}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            reraise_write_error(e, self.path)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the file stays; its record is stale once nobody holds the lock)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

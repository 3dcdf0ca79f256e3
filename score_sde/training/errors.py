"""Dedicated errors of training, each with a one-line message that says what to do.

The command line prints these as one line (no traceback unless asked for one):

* :class:`TrainingDivergedError` (a ``FloatingPointError``): the loss or the weights became
  NaN/inf; the message names the step and the last good checkpoint directory.
* :class:`WorkdirWriteError` (an ``OSError``): a checkpoint, log or config file could not be
  written because the disk is full (ENOSPC, EDQUOT) or the file system is read-only or not
  writable (EROFS, EACCES, EPERM).
* :class:`RunLockedError` (a ``RuntimeError``, see :mod:`score_sde.training.lock`): another
  process trains in the same run directory.
"""
from __future__ import annotations

import errno
import os

__all__ = ["TrainingDivergedError", "WorkdirWriteError", "RunLockedError", "reraise_write_error"]


class TrainingDivergedError(FloatingPointError):
    """Training produced a non-finite loss or non-finite weights (nothing non-finite is ever saved)."""


class WorkdirWriteError(OSError):
    """A file of a run directory could not be written (full disk, read-only or unwritable file system).

    ``errno`` is the original error number; ``str(e)`` is the one-line message (no ``[Errno N]``)."""

    def __str__(self):
        return self.strerror or super().__str__()


class RunLockedError(RuntimeError):
    """Another live process holds the lock of this run directory."""


_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def reraise_write_error(e: OSError, path) -> None:
    """Raise :class:`WorkdirWriteError` with a one-line message for a full or read-only disk; else return.

    Call inside ``except OSError as e:`` and re-raise ``e`` when this returns.
    """
    if isinstance(e, WorkdirWriteError):
        raise e
    path = os.fspath(path)
    if e.errno in _FULL:
        why = ("the disk is full" if e.errno == errno.ENOSPC else "the disk quota is exhausted")
        msg = (f"cannot write {path}: {why} ({errno.errorcode.get(e.errno, e.errno)}); free some space or choose "
               "a workdir on another disk, then run again (the last complete checkpoint is intact; training "
               "resumes from it)")
    elif e.errno in _READ_ONLY:
        why = "the file system is read-only" if e.errno == errno.EROFS else "permission denied"
        msg = (f"cannot write {path}: {why} ({errno.errorcode.get(e.errno, e.errno)}); choose a writable workdir "
               "(--workdir) or fix its permissions, then run again")
    else:
        return
    raise WorkdirWriteError(e.errno, msg) from None

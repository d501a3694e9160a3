"""One training per work directory: a lock file held for the life of the training process.

Two runs writing checkpoints, logs and ``last_checkpoint`` into the same directory corrupt
each other's state silently. Training (:func:`mfuser.apis.train_runner`) takes an exclusive
POSIX lock on ``<work_dir>/train.lock`` and writes who holds it (pid, host, start time,
command) into the file. The kernel releases the lock when the process ends in any way
(SIGKILL included), so a lock left by a killed run never blocks ``--resume``; the stale text
is simply overwritten.
"""
from __future__ import annotations

import fcntl
import json
import os
import os.path as osp
import socket
import sys
import time

from .errors import WorkDirBusy

LOCK_NAME = 'train.lock'
_held: dict[str, int] = {}  # work dir -> fd of the lock this process holds


def _describe(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        return (f"pid {info['pid']} on host {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return 'a process that did not record itself'


def _busy(work_dir: str, holder: str) -> WorkDirBusy:
    return WorkDirBusy(
        f'work dir {work_dir!r} is in use by a running training ({holder}). Wait for it to '
        'finish or stop it, or choose another --work-dir.')


def lock_holder(work_dir: str) -> str | None:
    """Who holds the lock of ``work_dir`` (a description), or None when nobody does.

    Call it only in a process that does not hold the lock itself (POSIX locks belong to the
    process, and closing any descriptor of the file would release them).
    """
    path = osp.join(work_dir, LOCK_NAME)
    if work_dir in _held or not osp.isfile(path):
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _describe(path)
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire_work_dir(work_dir: str) -> str:
    """Create ``work_dir`` if needed and lock it for this process (until it exits).

    Returns:
        The lock file's path.

    Raises:
        WorkDirBusy: another process holds the lock (the message names it).
    """
    path = osp.join(work_dir, LOCK_NAME)
    if work_dir in _held:
        return path
    os.makedirs(work_dir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise _busy(work_dir, _describe(path)) from None
    info = dict(pid=os.getpid(), host=socket.gethostname(),
                started=time.strftime('%Y-%m-%d %H:%M:%S'),
                command=' '.join([osp.basename(sys.executable), *sys.argv]))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode() + b'\n', 0)
    _held[work_dir] = fd
    return path


def check_work_dir_free(work_dir: str) -> None:
    """Raise :class:`WorkDirBusy` when a running training holds ``work_dir``."""
    holder = lock_holder(work_dir)
    if holder is not None:
        raise _busy(work_dir, holder)

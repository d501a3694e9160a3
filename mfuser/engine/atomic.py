"""Files that are complete or absent: written under a temporary name beside the target, then
renamed over it (``os.replace`` is atomic on POSIX file systems).

A SIGKILL, a full disk or a crash during the write leaves the target as it was (absent, or the
previous complete file) and at most a ``<target>.part-<pid>`` file, which the failing process
removes when it can and the next training in that work dir removes
(:func:`mfuser.apis.train_runner`, behind ``tools/train.py``). Checkpoints go through
:class:`AtomicLocalBackend`, an mmengine file backend (``backend_args=dict(backend=
'local_atomic')`` of ``CheckpointHook``, set by :func:`mfuser.apis.train_runner`). Files are
created with mode 0666 minus the umask, like any other file.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import re

from mmengine.fileio import LocalBackend, register_backend

PART_MARK = '.part-'
_PART = re.compile(re.escape(PART_MARK) + r'(\d+)$')


@contextlib.contextmanager
def atomic_open(path, mode: str = 'wb'):
    """``open(path, mode)`` (a write mode) whose result appears at ``path`` only when the
    ``with`` block ends without an error, complete and flushed to disk.

    An ``OSError`` of the write (``ENOSPC``, ``EDQUOT``, ...) is re-raised with ``path`` as its
    ``filename``.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}{PART_MARK}{os.getpid()}'
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_open`."""
    with atomic_open(path, 'wb') as f:
        f.write(data)


def remove_stale_parts(folder: str) -> list[str]:
    """Remove the ``*.part-<pid>`` files in ``folder`` left by processes that no longer run
    (a write cut off by SIGKILL). Returns their names."""
    removed = []
    if not osp.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        match = _PART.search(name)
        if not match or _running(int(match[1])):
            continue
        with contextlib.suppress(OSError):
            os.remove(osp.join(folder, name))
            removed.append(name)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put`` / ``put_text`` write atomically (see the
    module docstring); reading, listing and removing are the parent's."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(filepath, obj.encode(encoding))


register_backend('local_atomic', AtomicLocalBackend, force=True)

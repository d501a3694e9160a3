"""A user's mistake ends in one line naming the file or key and the fix, not in a traceback.

The tools run the part that builds and runs things inside :func:`reported`: an error a user can
fix (a config value, a missing, refused or damaged file, bad data, a full disk, a diverging
run) ends the tool with ``error: <message>`` (exit code 1); its traceback goes into the run's
log file when there is one, and ``--debug`` lets it through instead. Any other exception (a
bug) keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import sys
import traceback

from .preflight import one_line

_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _user_error_types() -> tuple[type, ...]:
    from mfuser.datasets import DataFileError
    from mfuser.engine import CheckpointError, NonFiniteLossError
    from mfuser.models.pretrained import CheckpointMismatchError

    from .preflight import ConfigCheckError
    from .workdir import WorkDirBusy
    # FileNotFoundError: the data sets' own errors for a missing image folder / label files
    return (CheckpointError, CheckpointMismatchError, ConfigCheckError, DataFileError,
            FileNotFoundError, NonFiniteLossError, WorkDirBusy)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for any other."""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
        where = exc.filename or 'a file'
        return (f'cannot write {where}: {exc.strerror}. Nothing was left half-written (files '
                'are complete or absent); free some space or choose another output folder, '
                'then run again (--resume continues a training from its last checkpoint)')
    if isinstance(exc, _user_error_types()):
        return one_line(exc)
    return None


def _log_traceback(exc: BaseException) -> str | None:
    """Write the traceback into the current mmengine log file (not the console); its path."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()  # the runner's, once a Runner exists
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    if not files:
        return None
    text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                               f'stopped by an error:\n{text}', None, None)
    for handler in files:
        handler.handle(record)
    return files[0].baseFilename


@contextlib.contextmanager
def reported(debug: bool = False):
    """Turn an error the user can fix into ``sys.exit('error: ...')`` (see the module
    docstring); with ``debug`` every exception keeps its traceback."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user's mistake
        message = None if debug else user_message(exc)
        if message is None:
            raise
        _log_traceback(exc)
        sys.exit(f'error: {message}')

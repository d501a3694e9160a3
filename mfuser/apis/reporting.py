"""A user's mistake ends in one line naming the file or key and the fix, not in a traceback.

Each tool runs its ``main()`` inside :func:`reported`: an error a user can fix (the kinds of
:mod:`mfuser.apis.errors`: a config value, a missing, refused or damaged file, bad data, a
full disk, a diverging run) ends the tool with ``error: <message>`` (exit code 1); its
traceback goes into the run's log file when there is one, and ``--debug`` lets it through
instead. Any other exception (a bug) keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import re
import sys
import traceback

from .errors import user_error_types

_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# mmengine's registry re-raises a build error as type(e)(f'class `X` in a/b.py: {e}')
_REGISTRY_PREFIX = re.compile(r'^(?:class `\w+` in [^:]+\.py: )+')


def one_line(exc: BaseException) -> str:
    """The message of ``exc``; for an error re-raised from a data loader worker (whose text
    is the worker's traceback) the last line, without the exception's type; without the
    ``class `X` in x.py:`` prefixes that mmengine's registry adds to build errors."""
    text = str(exc).strip()
    if 'Original Traceback' in text:
        text = text.splitlines()[-1]
        text = text.split(': ', 1)[1] if ': ' in text else text
    return _REGISTRY_PREFIX.sub('', text)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for any other."""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
        where = exc.filename or 'a file'
        return (f'cannot write {where}: {exc.strerror}. Nothing was left half-written (files '
                'are complete or absent); free some space or choose another output folder, '
                'then run again (--resume continues a training from its last checkpoint)')
    if isinstance(exc, user_error_types()):
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

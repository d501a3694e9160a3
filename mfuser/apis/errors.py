"""The kinds of error a user can fix, each one exception type; the tools catch them once, at
the top (:func:`mfuser.apis.reporting.reported`), and end in one line naming the file or key.

=========================  ===============================================================
``ConfigCheckError``       a config or command-line value: an unknown ``--cfg-options`` key,
                           a value of the wrong type, data or weight files the config names
                           that are not there, an option this machine cannot run
``CheckpointError``        a checkpoint that is damaged, refused by the allow-list, or does
                           not fit the model (:mod:`mfuser.engine.checkpoint`, ``.weights``)
``CheckpointMismatchError``  a pretrained tower / text file that does not fit its module
                           (:mod:`mfuser.models.pretrained`)
``DataFileError``          an image or label file that cannot be read or is wrong
                           (:mod:`mfuser.datasets`); ``FileNotFoundError`` for a missing
                           image folder or label files
``WorkDirBusy``            another training holds the work dir (:mod:`.workdir`)
``NonFiniteLossError``     the loss or the gradients stopped being finite (:mod:`mfuser.engine`)
=========================  ===============================================================

A full disk (``OSError`` ENOSPC / EDQUOT / EFBIG) is reported the same way.
"""
from __future__ import annotations


class ConfigCheckError(ValueError):
    """A config or command-line value that cannot run (see the module docstring)."""


class WorkDirBusy(RuntimeError):
    """Another running training holds the work directory."""


def user_error_types() -> tuple[type, ...]:
    """The exception types of the table above."""
    from mfuser.datasets import DataFileError
    from mfuser.engine import CheckpointError, NonFiniteLossError
    from mfuser.models.pretrained import CheckpointMismatchError
    return (CheckpointError, CheckpointMismatchError, ConfigCheckError, DataFileError,
            FileNotFoundError, NonFiniteLossError, WorkDirBusy)

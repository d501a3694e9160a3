"""Load mmengine runner checkpoints under torch >= 2.6 without disabling safety.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7 calls
``torch.load`` without that argument, and its runner checkpoints hold numpy arrays and
scalars and ``HistoryBuffer`` objects (the message hub), so ``--resume`` and
``tools/test.py`` fail with an UnpicklingError. This module replaces mmengine's loader for
local files with one that keeps ``weights_only=True`` and allows exactly the extra types
that mmengine itself writes, scoped to the call (``torch.serialization.safe_globals``).

A checkpoint that needs anything else is refused with a message naming the type; set
``MFUSER_TRUST_CHECKPOINTS=1`` to load such a file you trust with ``weights_only=False``.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def runner_checkpoint_globals() -> list:
    """Types besides tensors that mmengine's runner writes into checkpoints."""
    import numpy.core.multiarray as multiarray  # noqa: PLC0415 - numpy 2 keeps the alias

    dtype_types = [type(np.dtype(t)) for t in (
        'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64', 'uint8',
        'bool', 'uint16', 'uint32', 'uint64')]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            HistoryBuffer, *dtype_types,
            (_history_buffer_getattr, 'builtins.getattr'),
            (_history_buffer_getattr, '__builtin__.getattr')]


def _history_buffer_getattr(obj, name: str):
    """The one ``getattr`` mmengine's checkpoints need: the message hub pickles the
    ``HistoryBuffer`` statistics methods (``min``, ``max``, ``current``, ``mean``, ...) as
    ``getattr(HistoryBuffer, name)``. Anything else is refused (a general ``getattr`` would
    let a crafted file reach arbitrary code)."""
    if obj is HistoryBuffer and not name.startswith('_') and \
            callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def load_trusted_local(filename: str, map_location=None):
    """``torch.load`` a local runner/weights file with the allow-list above."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    if os.environ.get('MFUSER_TRUST_CHECKPOINTS') == '1':
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(runner_checkpoint_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(
            f'{filename} holds Python objects outside the allow-list for runner '
            f'checkpoints ({exc}). If you trust this file, set MFUSER_TRUST_CHECKPOINTS=1 '
            'to load it with weights_only=False.') from exc


@CheckpointLoader.register_scheme(prefixes='', force=True)
def _load_from_local(filename, map_location):
    return load_trusted_local(filename, map_location)

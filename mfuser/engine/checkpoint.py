"""Reading checkpoint files: safely under torch >= 2.6, official release files converted.

(What the weights are and where they go: :mod:`mfuser.engine.weights`.)

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7 calls
``torch.load`` without that argument, and its runner checkpoints hold numpy arrays and
scalars and ``HistoryBuffer`` objects (the message hub), so ``--resume`` and
``tools/test.py`` fail with an UnpicklingError. :func:`install_safe_loader` (called by the
tools, opted into by the configs; never by ``import mfuser``) replaces mmengine's loader for
local files with one that keeps ``weights_only=True`` and allows exactly the extra types
that mmengine itself writes, scoped to the call (``torch.serialization.safe_globals``).

A checkpoint that needs anything else is refused with a message naming the type; set
``MFUSER_TRUST_CHECKPOINTS=1`` to load such a file you trust with ``weights_only=False``.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
import struct
import sys
import zipfile

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


class CheckpointError(ValueError):
    """A checkpoint file that is not one, or that does not fit the model."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A well-formed pickle that needs Python objects outside the allow-list."""


def _global_exists(dotted: str) -> bool:
    """Whether ``module.attr`` names something in an already imported module (nothing is
    imported: a name from a damaged file must not trigger imports)."""
    parts = dotted.split('.')
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get('.'.join(parts[:i]))
        if obj is not None:
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
                if obj is None:
                    return False
            return True
    return False


def _refusal_or_damage(filename: str, exc: Exception) -> CheckpointError:
    """The error to raise for a weights-only load failure: the allow-list refused a real
    object (:class:`UnsafeCheckpointError`, says how to opt out), or the file is damaged or
    no checkpoint (:class:`CheckpointError`, no opt-out suggested: it would not help)."""
    text = str(exc)
    named = re.search(r'GLOBAL ([\w.]+)', text)
    refused = re.search(r'getattr\(.*?\) is not allowed in a checkpoint', text)
    if refused or (named and _global_exists(named[1])):
        return UnsafeCheckpointError(
            f'{filename} holds Python objects outside the allow-list for runner checkpoints '
            f'({refused[0] if refused else named[1]}). If you trust this file, set '
            'MFUSER_TRUST_CHECKPOINTS=1 to load it with weights_only=False.')
    detail = re.search(r'WeightsUnpickler error:\s*(\S.*)', text)
    if named:
        reason = f'it names {named[1]}, which does not exist'
    elif detail:
        reason = detail[1].strip()[:200]
    elif text.strip() and 'Weights only load failed' not in text:
        reason = f'{type(exc).__name__}: {text.strip().splitlines()[0][:200]}'
    else:
        reason = f'{type(exc).__name__} while unpickling'
    return CheckpointError(f'{filename}: the file is corrupt (e.g. truncated) or not a '
                           f'PyTorch checkpoint ({reason})')


def _allow_runner_globals():
    """The allow-list as a context (torch >= 2.5). Older torch has no scoped allow-list:
    its weights-only loading then reads plain weights only, and a runner checkpoint's Python
    objects are refused (``MFUSER_TRUST_CHECKPOINTS=1`` loads a trusted one)."""
    import contextlib
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is None:
        return contextlib.nullcontext()
    return safe_globals(runner_checkpoint_globals())


def load_trusted_local(filename: str, map_location=None, mmap: bool = False):
    """``torch.load`` a local runner/weights file with the allow-list above (``mmap``: map
    the tensors instead of reading them, for looking at the keys of a large file; files in
    the legacy non-zip format are read normally)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    is_zip = zipfile.is_zipfile(filename)
    with open(filename, 'rb') as f:
        is_pickle = f.read(1) == b'\x80'
    if not (is_zip or is_pickle):
        raise CheckpointError(f'{filename}: not a PyTorch checkpoint, or a truncated one '
                              '(neither a complete torch.save archive nor a pickle)')
    mmap = mmap and is_zip
    if os.environ.get('MFUSER_TRUST_CHECKPOINTS') == '1':
        return torch.load(filename, map_location=map_location, weights_only=False,
                          mmap=mmap)
    try:
        with _allow_runner_globals():
            return torch.load(filename, map_location=map_location, weights_only=True,
                              mmap=mmap)
    except (pickle.UnpicklingError, EOFError, IndexError, ValueError, KeyError,
            struct.error) as exc:
        raise _refusal_or_damage(filename, exc) from None
    except RuntimeError as exc:  # torch's zip reader on a damaged archive
        if 'PytorchStreamReader' not in str(exc) and 'zip' not in str(exc):
            raise
        raise CheckpointError(f'{filename}: the file is corrupt (e.g. truncated) or not a '
                              f'PyTorch checkpoint ({str(exc).splitlines()[0][:200]})') from None


def convert_official_checkpoint(ckpt, filename: str):
    """An official MFuser checkpoint (github devinxzhang/MFuser, mmcv 1.x) in this project's
    names, converted in memory and logged; any other checkpoint is returned unchanged.

    Only the weights are kept (the official run's optimizer state does not fit this project's
    parameter groups); see :mod:`mfuser.models.official_release` for what is dropped and why.
    """
    from mmengine.logging import print_log

    from mfuser.models.official_release import (
        convert_official_state_dict,
        is_official_state_dict,
    )
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not is_official_state_dict(state):
        return ckpt
    converted, dropped, variant = convert_official_state_dict(state)
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    print_log(f'{filename}: an official MFuser checkpoint ({variant}), converted in memory to '
              f'{len(converted)} tensors; {len(dropped)} official keys dropped '
              f'({", ".join(sorted(dropped)[:3])}{", ..." if len(dropped) > 3 else ""}); '
              'tools/model_converters/mfuser2mmseg.py writes the converted file once',
              logger='current')
    return dict(meta=dict(official_variant=variant, dataset_meta=official_dataset_meta(meta)),
                state_dict=converted)


def official_dataset_meta(meta: dict) -> dict:
    """mmseg 1.x ``dataset_meta`` from an mmcv 1.x checkpoint's ``CLASSES`` / ``PALETTE``."""
    out = {}
    if meta.get('CLASSES'):
        out['classes'] = tuple(meta['CLASSES'])
    if meta.get('PALETTE'):
        out['palette'] = [list(c) for c in meta['PALETTE']]
    return out


def _load_from_local(filename, map_location):
    return convert_official_checkpoint(load_trusted_local(filename, map_location), filename)


def install_safe_loader() -> None:
    """Let mmengine load local checkpoint files through :func:`load_trusted_local`
    (weights-only with the allow-list above; official MFuser files converted in memory).

    Importing ``mfuser`` does NOT do this: the project's tools (``tools/train.py``,
    ``test.py``, ``infer.py``) call it, and the configs opt in by importing
    :mod:`mfuser.engine.safe_loading` (``custom_imports``), so that mmseg's ``init_model``
    and ``MMSegInferencer`` read MFuser runner checkpoints under torch >= 2.6 too.
    Idempotent.
    """
    if CheckpointLoader._schemes.get('') is not _load_from_local:
        CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)

"""The weights of a TorchScript archive, read without running any of its code.

OpenAI's CLIP files (``ViT-L-14-336px.pt``) are TorchScript archives: ``torch.jit.load`` would
rebuild their classes and run whatever ``__setstate__`` the archive defines, so a file given
as a pretrained checkpoint could run code. The weights do not need any of that. An archive is
a zip holding:

* ``<name>/data.pkl``: a pickle of the module tree; every module is ``GLOBAL
  __torch__.<qualified class>`` + ``NEWOBJ`` + ``BUILD`` with a dict of its attributes, every
  tensor is ``torch._utils._rebuild_tensor_v2`` over a persistent storage id
  ``('storage', torch.<Type>Storage, key, location, numel)``;
* ``<name>/data/<key>``: the raw bytes of each storage (``<name>/byteorder``: their order);
* ``<name>/code/__torch__/<module path>.py``: the classes, whose ``__parameters__`` and
  ``__buffers__`` lines say which tensor attributes ``state_dict()`` holds (a module may keep
  other tensors as plain attributes, e.g. CLIP's ``attn_mask``).

:func:`read_torchscript_weights` unpickles ``data.pkl`` with an allow-list (tensors, storages,
``OrderedDict``, TorchScript's list builders; every ``__torch__`` class becomes an inert record
of its attributes, none of its methods exist), reads the code files as text only, and returns
what ``torch.jit.load(path).state_dict()`` would.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict

import torch

__all__ = ['TorchScriptReadError', 'is_torchscript', 'read_torchscript_weights']

_STORAGE_DTYPES = {
    'HalfStorage': torch.float16, 'FloatStorage': torch.float32,
    'DoubleStorage': torch.float64, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32, 'ShortStorage': torch.int16,
    'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
    'ComplexFloatStorage': torch.complex64, 'ComplexDoubleStorage': torch.complex128,
}
_LIST_BUILDERS = ('build_intlist', 'build_floatlist', 'build_boollist', 'build_tensorlist',
                  'build_doublelist')


class TorchScriptReadError(ValueError):
    """The archive is damaged, or its ``data.pkl`` needs something besides tensors and
    module records."""


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __setstate__(self, state):  # a BUILD opcode aimed at it
        raise TorchScriptReadError('its data.pkl tries to modify a storage type')


class _ScriptObject:
    """Inert stand-in for an instance of a TorchScript class: ``BUILD`` stores the pickled
    state here; no method of the archive's class exists."""

    qualname = ''

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, *_):
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _identity(value, *_):
    return value


class _WeightsUnpickler(pickle.Unpickler):

    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._archive, self._root = archive, root
        self._classes: dict[str, type] = {}
        self._storages: dict[str, torch.Tensor] = {}
        # this reader's own objects: a crafted data.pkl can modify nothing outside it
        self._storage_types = {n: _StorageType(d) for n, d in _STORAGE_DTYPES.items()}

    def find_class(self, module, name):
        # bound methods, created anew each time, have no attributes a BUILD could set
        if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
            return self._rebuild_tensor
        if (module, name) == ('collections', 'OrderedDict'):
            return OrderedDict
        if module == 'torch' and name in self._storage_types:
            return self._storage_types[name]
        if module == 'torch.jit._pickle' and (name in _LIST_BUILDERS or
                                              name == 'restore_type_tag'):
            return self._identity
        if module == '__torch__' or module.startswith('__torch__.'):
            qualname = f'{module}.{name}'
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (_ScriptObject, ), dict(qualname=qualname))
            return self._classes[qualname]
        raise TorchScriptReadError(f'its data.pkl needs {module}.{name}, which is neither a '
                                   'tensor nor a TorchScript module')

    def _rebuild_tensor(self, *args):
        return _rebuild_tensor(*args)

    def _identity(self, *args):
        return _identity(*args)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise TorchScriptReadError(f'unknown persistent id {str(pid)[:80]} in data.pkl')
        _, kind, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            data = bytearray(self._archive.read(f'{self._root}/data/{key}'))
            flat = torch.frombuffer(data, dtype=kind.dtype) if data else \
                torch.empty(0, dtype=kind.dtype)
            if flat.numel() < int(numel):
                raise TorchScriptReadError(f'storage {key} holds {flat.numel()} values, '
                                           f'{numel} expected (truncated file?)')
            self._storages[key] = flat
        return self._storages[key]


_CLASS = re.compile(r'^class (\w+)\(Module\):\n((?:  .*\n?)*)', re.MULTILINE)
_LIST = r'^  {}\s*=\s*\[(.*?)\]'


def _state_names(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """``qualified class name -> names of its parameters and buffers``, read (as text) from
    the archive's code files."""
    names = {}
    code = f'{root}/code/'
    for entry in archive.namelist():
        if not (entry.startswith(code) and entry.endswith('.py')):
            continue
        module = entry[len(code):-len('.py')].replace('/', '.')
        text = archive.read(entry).decode('utf-8', errors='replace')
        for match in _CLASS.finditer(text):
            body, found = match[2], set()
            for key in ('__parameters__', '__buffers__'):
                listed = re.search(_LIST.format(key), body, re.MULTILINE)
                if listed:
                    found |= set(re.findall(r'"([^"]*)"', listed[1]))
            names[f'{module}.{match[1]}'] = found
    return names


def _collect(obj, prefix: str, names: dict, out: dict) -> None:
    state = getattr(obj, 'state', None)
    own = names.get(obj.qualname)
    if not isinstance(state, dict):
        if own is None and names:
            return  # an object of a class that is not a module: state_dict() skips it
        raise TorchScriptReadError(
            f'module {prefix[:-1] or "(top)"} ({obj.qualname}) restores its state with '
            "the archive's own __setstate__ code, which is not run")
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            if own is None and names:
                continue  # not a module of the code files: state_dict() has none of it
            if own is None or key in own:
                out[prefix + key] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f'{prefix}{key}.', names, out)


def is_torchscript(path: str) -> bool:
    """A TorchScript archive: a zip with a ``<name>/constants.pkl`` or ``code/`` entry."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith('/constants.pkl') or '/code/' in n for n in archive.namelist())


def read_torchscript_weights(path: str) -> dict[str, torch.Tensor]:
    """``name -> tensor`` as ``torch.jit.load(path).state_dict()`` gives it, without loading
    the archive as TorchScript (nothing of the archive runs).

    Raises:
        TorchScriptReadError: the archive is damaged or holds more than modules and tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')
                       and n.count('/') == 1]
            if len(pickles) != 1:
                raise TorchScriptReadError('no <name>/data.pkl in the archive')
            root = pickles[0].split('/')[0]
            order = f'{root}/byteorder'
            if order in archive.namelist() and archive.read(order).strip() != b'little':
                raise TorchScriptReadError('big-endian storages are not supported')
            with archive.open(pickles[0]) as f:
                top = _WeightsUnpickler(f, archive, root).load()
            names = _state_names(archive, root)
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError, ValueError,
            TypeError, AttributeError, RuntimeError) as exc:
        if isinstance(exc, TorchScriptReadError):
            raise
        raise TorchScriptReadError(f'damaged archive ({type(exc).__name__}: '
                                   f'{str(exc).splitlines()[0] if str(exc) else ""})') from None
    if not isinstance(top, _ScriptObject):
        raise TorchScriptReadError(f'data.pkl holds a {type(top).__name__}, not a module')
    out: dict[str, torch.Tensor] = {}
    _collect(top, '', names, out)
    return out

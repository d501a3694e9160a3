"""Reading a config the way the tools do, with ``--cfg-options`` checked before they merge.

mmengine creates any key it is given and keeps a value it cannot parse as a string, so a typo
(``train_cfg.max_iter=10``) would be ignored and ``lr=abc`` would fail deep inside the run.
:func:`check_cfg_options` accepts a key that the config has, or a new last key that the dict
takes. A dict takes the constructor arguments of its ``type``, of what the Runner builds from
an untyped dict (``*_dataloader``, ``randomness``, ...), or the settings listed in
:data:`UNTYPED`. The value must have the type of the value it replaces (or of the
constructor's default).
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import os.path as osp
from collections.abc import Mapping

from .errors import ConfigCheckError

ANY = None  # a dict that takes any key (timm / open_clip overrides, free-form *_cfg)


def _untyped() -> list[tuple[str, object]]:
    """(dotted-path pattern, what it takes) for dicts without a ``type``, first match wins:
    a callable (its arguments), a set of setting names, or ANY."""
    from mmengine.runner import LogProcessor, Runner
    from torch.utils.data import DataLoader
    return [('', Runner), ('*_dataloader', DataLoader), ('randomness', Runner.set_randomness),
            ('log_processor', LogProcessor),
            ('model.test_cfg', {'mode', 'crop_size', 'stride'}),
            ('*decode_head.train_cfg', {'num_points', 'oversample_ratio',
                                        'importance_sample_ratio'}),
            ('env_cfg', {'cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'}),
            ('env_cfg.mp_cfg', {'mp_start_method', 'opencv_num_threads'}),
            ('*.vfm', ANY), ('*.vlm', ANY), ('*text_cfg', ANY), ('*_cfg', ANY)]


def registered(type_):
    """The class or function a config ``type`` names, from mmseg's registries, else None."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    from mmengine.registry import Registry
    from mmseg import registry
    for reg in vars(registry).values():
        if isinstance(reg, Registry):
            try:
                found = reg.get(type_)
            except Exception:  # noqa: BLE001 - an unknown scope prefix, a failing lazy import
                found = None
            if found is not None:
                return found
    return None


def _arguments(target) -> dict | None:
    """Argument name -> default (``inspect.Parameter.empty`` if none) that ``target`` takes,
    following ``**kwargs`` up a class's MRO; None when any name may be right."""
    import torch.nn as nn
    args = {}
    for func in ([k.__init__ for k in target.__mro__ if '__init__' in vars(k)]
                 if inspect.isclass(target) else [target]):
        if func in (object.__init__, nn.Module.__init__):
            return args
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            return None
        for p in params:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != 'self':
                args.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return args
    return None


def _takes(node: Mapping, path: str) -> dict | None:
    """Name -> default of the keys the config dict ``node`` at ``path`` may gain; None: any."""
    if 'type' in node:
        target = registered(node['type'])
        return None if target is None else _arguments(target)
    for pattern, takes in _untyped():
        if fnmatch.fnmatchcase(path, pattern):
            if takes is ANY or isinstance(takes, set):
                return takes and dict.fromkeys(takes)
            return _arguments(takes)
    return {}


def _expected(value, like) -> str | None:
    """What ``value`` should be to stand where the config has ``like``; None if it can."""
    if value is None or like is None or like is inspect.Parameter.empty:
        return None
    if isinstance(like, bool):
        return None if isinstance(value, bool) else 'true or false (True / False)'
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(like, int):
        return None if number and isinstance(value, int) else 'an integer'
    if isinstance(like, float):
        return None if number else 'a number'
    return None


def _wrong_type(dotted: str, value, expected: str) -> str:
    return (f'--cfg-options {dotted}={value!r}: expected {expected}, got '
            f'{type(value).__name__} {value!r} (a value of the wrong type)')


def _option_problem(cfg: Mapping, dotted: str, value) -> str | None:
    """Why ``--cfg-options dotted=value`` cannot apply to ``cfg``; None if it can."""
    node, parts = cfg, dotted.split('.')
    for i, part in enumerate(parts):
        path, last = '.'.join(parts[:i]), i == len(parts) - 1
        if isinstance(node, (list, tuple)):
            if not (part.isdigit() and int(part) < len(node) and isinstance(
                    node[int(part)], Mapping)):  # mmengine merges into list items that are dicts
                return (f'--cfg-options {dotted}: {path} is a list of {len(node)} values; give '
                        f'the whole list instead: --cfg-options "{path}=[...]"')
            child = node[int(part)]
        elif isinstance(node, Mapping) and part in node:
            child = node[part]
        else:
            takes = _takes(node, path) if isinstance(node, Mapping) else {}
            if last and (takes is None or part in takes):  # a new key the dict takes
                expected = _expected(value, (takes or {}).get(part))
                return expected and _wrong_type(dotted, value, expected)
            keys = sorted(map(str, set(node) | set(takes or ()))) if isinstance(
                node, Mapping) else []
            close = difflib.get_close_matches(part, keys, n=3)
            hint = f' Did you mean {", ".join(close)}?' if close else (
                f' Existing keys: {", ".join(keys[:30])}.' if keys else '')
            return f'--cfg-options {dotted}: {path or "the config"} has no key {part!r}.{hint}'
        if last:
            like = child
            if isinstance(child, int) and isinstance(node, Mapping) and 'type' in node:
                default = (_takes(node, path) or {}).get(part)
                like = default if isinstance(default, float) else child  # float arguments
            expected = _expected(value, like)
            return expected and _wrong_type(dotted, value, f'{expected} (like {like!r})')
        node = child
    return None


def check_cfg_options(cfg, options: Mapping | None) -> None:
    """Raise :class:`ConfigCheckError` listing every ``--cfg-options`` key that the config
    does not have and nothing takes (with the closest keys) and every value of the wrong
    type (see the module docstring)."""
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    problems = [p for key, value in (options or {}).items()
                if (p := _option_problem(tree, key, value))]
    if problems:
        raise ConfigCheckError('--cfg-options the config cannot take:\n  - ' +
                               '\n  - '.join(problems))


def load_config(path: str, cfg_options: Mapping | None = None,
                work_dir: str | None = None, launcher: str = 'none'):
    """Read a config the way the tools do: ``--cfg-options`` checked then merged, ``launcher``
    set, ``work_dir`` from the argument, else the config, else ``./work_dirs/<config name>``.

    Raises:
        ConfigCheckError: the file does not exist, an option names an unknown key or has a
            value of the wrong type.
    """
    from mmengine.config import Config
    if not osp.isfile(path):
        raise ConfigCheckError(f'config file {path!r} not found')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg

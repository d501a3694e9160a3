"""Fail-fast checks of a config before anything is built or written.

``check_config(cfg, stage)`` walks the dataloaders and the model config and collects every
problem at once: a data root or image folder that does not exist or is empty, a checkpoint
file named in the config that is missing. The error names the config key, the path and
what to do (convert the data set, point the key at a local file).
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import re
from collections.abc import Mapping, Sequence


class ConfigCheckError(RuntimeError):
    """A config names data or weights that are not on disk."""


_WEIGHT_KEYS = ('checkpoint', 'pretrained', 'tokenizer_file', 'tokenizer')


def _walk(node, path: str):
    """Yield ``(key_path, dict)`` for every mapping inside ``node``."""
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}')  # mmengine's --cfg-options syntax


def _dataset_problems(cfg, loader_key: str) -> list[str]:
    problems = []
    loader = cfg.get(loader_key)
    if not loader:
        return problems
    for path, node in _walk(loader.get('dataset', {}), f'{loader_key}.dataset'):
        root = node.get('data_root')
        if not isinstance(root, str) or 'type' not in node:
            continue
        if not osp.isdir(root):
            problems.append(f'{path}.data_root = {root!r} does not exist. Put the data set '
                            'there (see data/README.md for the layout and the converter to '
                            f'run) or override it: --cfg-options {path}.data_root=/your/path')
            continue
        if not os.listdir(root):
            problems.append(f'{path}.data_root = {root!r} is empty (see data/README.md).')
            continue
        prefix = node.get('data_prefix') or {}
        for kind in ('img_path', 'seg_map_path'):
            sub = prefix.get(kind)
            if isinstance(sub, str) and sub:
                full = osp.join(root, sub)
                if not osp.isdir(full):
                    problems.append(f'{path}.data_prefix.{kind}: {full!r} does not exist '
                                    f'({_layout_hint(node, root, kind)}).')
    return problems


def _sample_problems(cfg, loader_key: str) -> list[str]:
    """Every evaluation data set of ``loader_key`` lists images, and each has its label file
    (unless the evaluator only writes predictions, ``format_only``): the data sets are built
    here (file lists only, no pipeline), before any model."""
    import copy

    from mmseg.registry import DATASETS
    loader = cfg.get(loader_key)
    if not loader:
        return []
    evaluators = cfg.get(loader_key.replace('_dataloader', '_evaluator')) or []
    if any(e.get('format_only') for e in (evaluators if isinstance(evaluators, list)
                                          else [evaluators])):
        return []
    problems = []
    for path, node in _walk(loader.get('dataset', {}), f'{loader_key}.dataset'):
        root = node.get('data_root')
        if not isinstance(root, str) or 'type' not in node or not osp.isdir(root):
            continue  # a missing root is reported by _dataset_problems
        spec = copy.deepcopy(dict(node))
        spec.update(pipeline=[], lazy_init=False)
        try:
            data = DATASETS.build(spec)
            infos = [data.get_data_info(i) for i in range(len(data))]
        except FileNotFoundError as exc:
            problems.append(f'{path}: {one_line(exc)}')
            continue
        except Exception:  # noqa: BLE001 - not a file list this check understands
            continue
        if not infos:
            prefix = (node.get('data_prefix') or {}).get('img_path', '')
            problems.append(f'{path}: no images in {osp.join(root, prefix)!r} (data set '
                            f'{node["type"]}; {_layout_hint(node, root, "img_path")}).')
            continue
        missing = [d for d in infos if isinstance(d.get('seg_map_path'), str)
                   and not osp.isfile(d['seg_map_path'])]
        if missing:
            problems.append(
                f'{path}: {len(missing)} of {len(infos)} images have no label file, e.g. '
                f'{missing[0]["seg_map_path"]!r} for {missing[0].get("img_path")!r} '
                f'({_layout_hint(node, root, "seg_map_path")}).')
    return problems


def _schedule_problems(cfg) -> list[str]:
    """Training settings that cannot train: no iterations, a negative learning rate or
    weight decay."""
    problems = []
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        value = train_cfg.get(key)
        if isinstance(value, (int, float)) and value <= 0:
            problems.append(f'train_cfg.{key} = {value}: nothing would be trained; set a '
                            f'positive number (--cfg-options train_cfg.{key}=N)')
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    for key, what in (('lr', 'learning rate'), ('weight_decay', 'weight decay')):
        value = optimizer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append(f'optim_wrapper.optimizer.{key} = {value}: a {what} cannot be '
                            f'negative; set --cfg-options optim_wrapper.optimizer.{key}=<value '
                            '>= 0>')
    return problems


def _layout_hint(node: Mapping, root: str, kind: str) -> str:
    """What to do about a missing image / label folder of the data set ``node`` configures."""
    converter = getattr(_registered(node.get('type')), 'CONVERTER', None)
    if kind == 'seg_map_path' and converter:
        extra = ' --half-res' if node.get('half_res') else ''
        return (f'labels not converted yet? run `{converter} {root}{extra}`; '
                'else see data/README.md for the layout')
    return 'wrong split or layout? see data/README.md'


def _runtime_problems(cfg, stage: str) -> list[str]:
    """A forced selective-scan backend or AMP that cannot run on this machine's device."""
    import torch

    from mfuser.ops.selective_scan import ENV_VAR, active_backend
    problems = []
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if os.environ.get(ENV_VAR, 'auto').strip().lower() not in ('', 'auto'):
        try:
            active_backend(device)
        except (RuntimeError, ValueError) as exc:
            problems.append(f'${ENV_VAR}={os.environ[ENV_VAR]}: {exc}')
    if stage == 'train' and device == 'cuda':
        _report_cuda_scan()
    wrapper = cfg.get('optim_wrapper') or {}
    if stage == 'train' and wrapper.get('type') == 'AmpOptimWrapper' and device == 'cpu':
        problems.append('--amp / AmpOptimWrapper needs a GPU (mmengine runs mixed precision on '
                        'CUDA, NPU, MLU or MUSA devices only); train in fp32 on the CPU.')
    return problems


def _report_cuda_scan() -> None:
    """Say which selective-scan backend this CUDA run will use (a warning for the slow,
    memory-hungry ``chunked`` fallback)."""
    from mmengine.logging import print_log

    from mfuser.ops.selective_scan import ENV_VAR, describe_cuda_choice
    forced = os.environ.get(ENV_VAR, 'auto').strip().lower()
    if forced not in ('', 'auto'):
        print_log(f'selective scan on CUDA: {forced} (forced by ${ENV_VAR})', logger='current')
        return
    choice = describe_cuda_choice()
    slow = choice.startswith('chunked')
    print_log(f'selective scan on CUDA: {choice}', logger='current',
              level=logging.WARNING if slow else logging.INFO)


def _weight_problems(cfg) -> list[str]:
    problems = []
    for path, node in _walk(cfg.get('model', {}), 'model'):
        for key in _WEIGHT_KEYS:
            value = node.get(key)
            if isinstance(value, str) and value and '://' not in value:
                full = osp.expanduser(value)
                exists = osp.exists(full) if key == 'tokenizer' else osp.isfile(full)
                if not exists:
                    problems.append(
                        f'{path}.{key} = {value!r}: file not found. Nothing is downloaded; '
                        'put the official file there (README, "Pretrained weights") or set '
                        f'--cfg-options {path}.{key}=/path/to/file')
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and load_from and not osp.isfile(load_from):
        problems.append(f'load_from = {load_from!r}: checkpoint file not found.')
    return problems


def _registered(type_):
    """The class or function a config ``type`` names, from mmseg's registries, else None."""
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    from mmseg import registry
    for name in ('MODELS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'EVALUATOR', 'HOOKS',
                 'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS',
                 'PARAM_SCHEDULERS', 'DATA_SAMPLERS', 'VISUALIZERS', 'VISBACKENDS',
                 'LOOPS', 'LOG_PROCESSORS', 'TASK_UTILS', 'WEIGHT_INITIALIZERS'):
        reg = getattr(registry, name, None)
        try:
            found = reg.get(type_) if reg is not None else None
        except Exception:  # an unknown scope prefix, a failing lazy import
            found = None
        if found is not None:
            return found
    return None


def _init_arguments(obj) -> tuple[set[str], bool]:
    """Names the constructor of ``obj`` accepts, following ``**kwargs`` up the MRO.

    Returns ``(names, open_ended)``; ``open_ended`` when some ``**kwargs`` is not passed to a
    known parent (anything could be accepted, so nothing can be rejected).
    """
    import inspect

    import torch.nn as nn
    if not inspect.isclass(obj):
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):
            return set(), True
        return ({p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)},
                any(p.kind == p.VAR_KEYWORD for p in params))
    names = set()
    for klass in obj.__mro__:
        if klass in (object, nn.Module):
            return names, False
        if '__init__' not in vars(klass):
            continue
        try:
            params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        except (TypeError, ValueError):
            return names, True
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names, False
    return names, True


def _typed(node: Mapping, walked: list[str]):
    """The ``type`` of a config dict, or what the Runner builds from an untyped top-level one."""
    if 'type' in node:
        return node['type']
    if not walked:  # the top level: what mmengine's Runner takes (work_dir, load_from, ...)
        from mmengine.runner import Runner
        return Runner
    if len(walked) == 1:
        if walked[0].endswith('_dataloader'):
            from torch.utils.data import DataLoader
            return DataLoader
        if walked[0] == 'randomness':
            from mmengine.runner import Runner
            return Runner.set_randomness
        if walked[0] == 'log_processor':
            from mmengine.runner import LogProcessor
            return LogProcessor
    return None


# settings the code reads from dicts without a ``type`` (walked path suffix -> keys)
_SETTINGS = {
    ('model', 'test_cfg'): {'mode', 'crop_size', 'stride'},
    ('decode_head', 'train_cfg'): {'num_points', 'oversample_ratio', 'importance_sample_ratio'},
    ('env_cfg', ): {'cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'},
    ('env_cfg', 'mp_cfg'): {'mp_start_method', 'opencv_num_threads'},
}
# dicts without a ``type`` that take free-form settings (timm / open_clip overrides, *_cfg)
_FREE_FORM = ('vfm', 'vlm', 'text_cfg', 'train_cfg', 'test_cfg', 'cfg', 'env_cfg')


def _settings(walked: list[str]) -> set[str] | None:
    """The known keys of the settings dict at ``walked``, or None when it is not listed."""
    for suffix, keys in _SETTINGS.items():
        if tuple(walked[-len(suffix):]) == suffix and (
                suffix[0] != 'env_cfg' or walked[0] == 'env_cfg') and (
                suffix[0] != 'model' or len(walked) == 2):
            return keys
    return None


def _new_keys(node: Mapping, walked: list[str]) -> set[str] | None:
    """Keys the config dict ``node`` at ``walked`` may gain beyond those it has.

    The constructor arguments of its ``type`` (or of what the Runner builds from it); the
    known keys of a settings dict; nothing for any other dict. None when any key may be right:
    a free-form dict that is not listed, an unresolvable type, a constructor with ``**kwargs``
    that reach no known parent.
    """
    type_ = _typed(node, walked)
    if type_ is not None:
        target = _registered(type_)
        if target is None:
            return None
        names, open_ended = _init_arguments(target)
        return None if open_ended else names
    if walked and (walked[-1] in _FREE_FORM or walked[-1].endswith('_cfg')):
        return _settings(walked)
    return set()


def check_cfg_options(cfg, options: Mapping | None) -> None:
    """Reject ``--cfg-options`` keys that the config does not have and nothing accepts.

    mmengine silently creates any key it is given, so a typo (``model.backbone.with_pc``,
    ``train_cfg.max_iter``) would be ignored. A new leaf under an existing dict is allowed when
    the dict names a registered ``type`` whose constructor takes that argument (e.g.
    ``...dataset.indices``), or when the dict takes free-form settings (timm overrides of the
    towers, ``text_cfg``, ``*_cfg``; for ``model.test_cfg``, the head's ``train_cfg`` and
    ``env_cfg`` only the keys the code reads); otherwise the error suggests the closest
    existing or accepted keys.
    """
    import difflib
    problems = []
    for dotted in (options or {}):
        parts = dotted.split('.')
        node, walked = getattr(cfg, '_cfg_dict', cfg), []
        for i, part in enumerate(parts):
            if isinstance(node, Sequence) and not isinstance(node, (str, bytes)) \
                    and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                new = _new_keys(node, walked) if isinstance(node, Mapping) else set()
                if i == len(parts) - 1 and (new is None or part in new):
                    break  # a new setting that the dict takes
                keys = set(node) | (new or set()) if isinstance(node, Mapping) else set()
                where = '.'.join(walked) or 'the config'
                close = difflib.get_close_matches(part, sorted(map(str, keys)), n=3)
                hint = f' Did you mean {", ".join(close)}?' if close else (
                    f' Existing keys: {", ".join(sorted(map(str, keys))[:30])}.' if keys else '')
                problems.append(f'--cfg-options {dotted}: {where} has no key {part!r}.{hint}')
                break
            walked.append(part)
    if problems:
        raise ConfigCheckError('unknown config keys:\n  - ' + '\n  - '.join(problems))


def _constructor_default(node: Mapping, walked: list[str], name: str):
    """The default of argument ``name`` of what the config dict ``node`` builds, or None."""
    import inspect
    try:
        target = _registered(_typed(node, walked))
    except Exception:  # noqa: BLE001 - no type information: nothing to compare with
        return None
    if target is None:
        return None
    for klass in (target.__mro__ if inspect.isclass(target) else (target, )):
        init = getattr(klass, '__init__', None) if inspect.isclass(target) else klass
        try:
            param = inspect.signature(init).parameters.get(name)
        except (TypeError, ValueError):
            return None
        if param is not None:
            return None if param.default is inspect.Parameter.empty else param.default
    return None


def _type_problem(value, like) -> str | None:
    """Why ``value`` cannot stand where the config has (or the constructor defaults to)
    ``like``; None when it can or when nothing is known."""
    if value is None or like is None:
        return None
    if isinstance(like, bool):
        return None if isinstance(value, bool) else 'true or false (True / False)'
    if isinstance(like, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else 'an integer'
    if isinstance(like, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else 'a number'
    return None


def check_cfg_option_types(cfg, options: Mapping | None) -> None:
    """Reject ``--cfg-options`` values of the wrong type before anything runs.

    mmengine keeps a value it cannot parse as a number as a string, so
    ``train_cfg.max_iters=abc`` or ``optim_wrapper.optimizer.lr=abc`` would fail deep inside
    the run (or, for some keys, not at all). A value must have the type of the value it
    replaces (for a new key: of the constructor argument's default): an integer for an integer,
    a number for a float, True/False for a flag. ``None`` is always accepted.
    """
    problems = []
    for dotted, value in (options or {}).items():
        node, walked, like = getattr(cfg, '_cfg_dict', cfg), [], None
        parts = dotted.split('.')
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, Sequence) and not isinstance(node, (str, bytes)) \
                    and part.isdigit() and int(part) < len(node):
                child = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                child = node[part]
            else:
                if last and isinstance(node, Mapping):
                    like = _constructor_default(node, walked, part)
                break
            if last:
                like = child
                if isinstance(child, int) and not isinstance(child, bool) and \
                        isinstance(node, Mapping):  # an int the constructor takes as float
                    default = _constructor_default(node, walked, part)
                    like = default if isinstance(default, float) else child
            node = child
            walked.append(part)
        expected = _type_problem(value, like)
        if expected:
            problems.append(f'--cfg-options {dotted}={value!r}: expected {expected} '
                            f'(like {like!r}), got {type(value).__name__} {value!r}')
    if problems:
        raise ConfigCheckError('config values of the wrong type:\n  - ' +
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
        check_cfg_option_types(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def check_config(cfg, stage: str) -> None:
    """Raise :class:`ConfigCheckError` listing every missing data root / weight file, an
    evaluation set without images or with images lacking their label files, a training
    schedule that cannot train (no iterations, a negative learning rate), and a forced scan
    backend or AMP this machine cannot run.

    Args:
        cfg: an mmengine Config.
        stage: ``'train'`` checks the train and val loaders, ``'test'`` the test loader,
            ``'infer'`` only the weight files.
    """
    if stage not in ('train', 'test', 'infer'):
        raise ValueError(f"stage must be 'train', 'test' or 'infer', got {stage!r}")
    loaders = {'train': ('train_dataloader', 'val_dataloader'), 'test': ('test_dataloader', ),
               'infer': ()}[stage]
    problems = []
    for key in loaders:
        problems += _dataset_problems(cfg, key)
        if key != 'train_dataloader':
            problems += _sample_problems(cfg, key)
    if stage == 'train':
        problems += _schedule_problems(cfg)
    problems += _weight_problems(cfg)
    problems += _runtime_problems(cfg, stage)
    if problems:
        raise ConfigCheckError('the config cannot run on this machine:\n  - ' +
                               '\n  - '.join(problems))


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

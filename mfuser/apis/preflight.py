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
from collections.abc import Mapping, Sequence

from .config import registered
from .errors import ConfigCheckError
from .reporting import one_line

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
    converter = getattr(registered(node.get('type')), 'CONVERTER', None)
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

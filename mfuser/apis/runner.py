"""From a config to a ready mmengine Runner, with every guard in one place.

:func:`train_runner` and :func:`test_runner` take a config read by
:func:`mfuser.apis.load_config` (and edited by the tool's options). They return a Runner to
``.train()`` / ``.test()``, after these steps:

1. register the modules and install the weights-only checkpoint loader
   (:func:`mfuser.engine.checkpoint.install_safe_loader`);
2. train: the work dir is free (no other training, no earlier checkpoints unless resuming or
   ``overwrite``); test: the checkpoint is read once (an official file is converted here,
   once) and the config's pretrained files whose parts it holds are cleared
   (:mod:`mfuser.engine.weights`);
3. preflight (:func:`mfuser.apis.preflight.check_config`): data roots and label files,
   weight files, the schedule, what this machine can run (skipped with ``preflight=False``);
4. train: the work dir is locked and cleared of checkpoint writes cut off by a killed run;
   the non-finite guard and atomic checkpoint writing are added to the config;
5. distributed: SyncBN in the necks for multi-GPU training, gloo + CPU DDP for ``torchrun``
   without GPUs (:mod:`mfuser.apis.distributed`);
6. the Runner is built; a ``--resume`` checkpoint, or the test checkpoint, must fit the model
   strictly (mmengine loads non-strictly), and the test checkpoint is loaded (into the model
   itself: mmengine's ``after_load_checkpoint`` hooks do not run for it; none of the configs'
   hooks uses them).

The tools add only their own options to the config first (``--amp``, ``--out``,
``--show-dir``, ...), raising the same error types.

Every error a user can fix is one of the types in :mod:`mfuser.apis.errors`.
"""
from __future__ import annotations

import logging
import os
import os.path as osp

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner, find_latest_checkpoint

from mfuser.engine import weights
from mfuser.engine.checkpoint import CheckpointError, install_safe_loader

from . import distributed, workdir
from .errors import ConfigCheckError
from .preflight import check_config


def _register() -> None:
    import mfuser  # noqa: F401  registers the modules
    install_safe_loader()  # weights-only loading of runner checkpoints (torch >= 2.6)


def _build(cfg: Config) -> Runner:
    if 'runner_type' in cfg:
        from mmseg.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def is_main_process(cfg: Config) -> bool:
    """Rank 0 (or no launcher), from the launchers' variables (before mmengine's init_dist)."""
    rank = next((os.environ[k] for k in ('RANK', 'OMPI_COMM_WORLD_RANK', 'SLURM_PROCID')
                 if k in os.environ), '0')
    return cfg.get('launcher', 'none') == 'none' or rank == '0'


def earlier_checkpoints(work_dir: str) -> list[str]:
    """Checkpoint files a fresh run in ``work_dir`` would overwrite."""
    if not osp.isdir(work_dir):
        return []
    return sorted(f for f in os.listdir(work_dir)
                  if f.endswith('.pth') or f == 'last_checkpoint')


def _claim_work_dir(cfg: Config, overwrite: bool) -> None:
    """Step 2 of training: no earlier checkpoints would be overwritten (every rank stops);
    no other training holds the work dir (rank 0 only: the others would find its lock)."""
    if is_main_process(cfg):
        workdir.check_work_dir_free(cfg.work_dir)
    found = earlier_checkpoints(cfg.work_dir)
    if found and not cfg.get('resume') and not overwrite:
        raise ConfigCheckError(
            f'work dir {cfg.work_dir!r} already holds checkpoints of an earlier run '
            f'({", ".join(found[:4])}{", ..." if len(found) > 4 else ""}), which a new run '
            'would overwrite. Continue that run with --resume, pick another --work-dir, or '
            'pass --overwrite to start afresh there.')


def _lock_work_dir(cfg: Config) -> None:
    if not is_main_process(cfg):
        return
    workdir.acquire_work_dir(cfg.work_dir)  # released when this process ends, however
    from mfuser.engine.atomic import remove_stale_parts
    for name in remove_stale_parts(cfg.work_dir):  # cut off by a killed run
        print_log(f'removed {name}: a checkpoint write cut off by an earlier run',
                  logger='current', level=logging.WARNING)


def add_nonfinite_guard(cfg: Config, skip: bool) -> None:
    """Put :class:`~mfuser.engine.NonFiniteLossHook` into ``custom_hooks`` unless the config
    has one (``skip``: skip bad steps instead of stopping)."""
    hooks = list(cfg.get('custom_hooks') or [])
    found = [h for h in hooks if isinstance(h, dict) and h.get('type') in (
        'NonFiniteLossHook', 'mmseg.NonFiniteLossHook')]
    if not found:
        hooks.append(dict(type='NonFiniteLossHook'))
        found = hooks[-1:]
    if skip:
        found[0]['action'] = 'skip'
    cfg.custom_hooks = hooks


def add_atomic_checkpoints(cfg: Config) -> None:
    """Let ``CheckpointHook`` write through :class:`~mfuser.engine.AtomicLocalBackend`
    (temporary name, then rename: a checkpoint is complete or absent, also after a SIGKILL or
    a full disk) unless the config picks a file backend itself."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args') or \
            '://' in str(hook.get('out_dir') or cfg.work_dir):
        return
    hook['backend_args'] = dict(backend='local_atomic')


def resume_from(cfg: Config) -> str | None:
    """The checkpoint a ``resume`` run continues from (``load_from``, else the work dir's
    latest); None, with ``cfg.resume`` switched off and a log line saying so, when the work
    dir has none yet (mmengine would log 'Auto resumed from the latest checkpoint None').

    Raises:
        CheckpointError: the file named (or named by ``last_checkpoint``) does not exist.
    """
    if cfg.get('load_from'):
        path, named_by = cfg.load_from, '--resume'
    else:
        path = find_latest_checkpoint(cfg.work_dir)
        named_by = osp.join(cfg.work_dir, 'last_checkpoint')
    if not path:
        print_log(f'--resume: no checkpoint in {cfg.work_dir} yet (no last_checkpoint); '
                  'starting from iteration 0', logger='current', level=logging.WARNING)
        cfg.resume = False
        return None
    if not osp.isfile(path):
        raise CheckpointError(f'cannot resume: {named_by} names {path!r}, which does not exist. '
                              'Name an existing checkpoint: --resume <work_dir>/iter_N.pth')
    return path


def train_runner(cfg: Config, *, preflight: bool = True, overwrite: bool = False,
                 skip_nonfinite: bool = False, sync_bn: bool = True) -> Runner:
    """A Runner ready to ``.train()`` (see the module docstring for the steps).

    Args:
        cfg: the config (``resume`` / ``load_from`` as mmengine reads them); changed in place.
        preflight: run the pre-run checks.
        overwrite: start afresh in a work dir that holds checkpoints of an earlier run.
        skip_nonfinite: skip optimizer steps with non-finite gradients instead of stopping.
        sync_bn: SyncBN in the necks for multi-GPU runs (as the release trained).
    """
    _register()
    _claim_work_dir(cfg, overwrite)
    if preflight:
        check_config(cfg, 'train')
    _lock_work_dir(cfg)
    add_nonfinite_guard(cfg, skip_nonfinite)
    add_atomic_checkpoints(cfg)
    resume = resume_from(cfg) if cfg.get('resume') else None
    distributed.default_sync_bn(cfg, enabled=sync_bn)
    distributed.setup_cpu_distributed(cfg)
    runner = _build(cfg)
    if resume:  # mmengine resumes non-strictly; a mismatch would fail later, obscurely
        try:
            weights.require_matching_checkpoint(runner.model, resume, cfg)
        except CheckpointError as exc:
            raise CheckpointError(f'cannot resume: {exc}') from exc
    return runner


def read_checkpoint_for(cfg: Config, checkpoint: str) -> weights.Checkpoint:
    """Steps 1-2 of testing and inference: register, read ``checkpoint`` once (converting an
    official file) and clear the config's pretrained files whose parts it holds (said in the
    log); the config's own ``load_from`` / ``resume`` are switched off."""
    if not osp.isfile(checkpoint):
        raise ConfigCheckError(f'checkpoint {checkpoint!r} not found')
    _register()
    cfg.load_from, cfg.resume = None, False  # the caller loads it, strictly
    ckpt = weights.read_checkpoint(checkpoint)
    for key in weights.skip_pretrained_held_by(cfg, ckpt):
        print_log(f'{key}: not needed, {checkpoint} holds these weights', logger='current')
    return ckpt


def test_runner(cfg: Config, checkpoint: str, *, preflight: bool = True,
                tta: bool = False) -> Runner:
    """A Runner ready to ``.test()`` with the weights of ``checkpoint`` loaded (see the module
    docstring for the steps); ``tta``: test-time augmentation (:func:`use_tta`)."""
    ckpt = read_checkpoint_for(cfg, checkpoint)
    if preflight:
        check_config(cfg, 'test')
    model_cfg = dict(model=cfg.model)  # where the pretrained files are named, also under --tta
    if tta:
        use_tta(cfg)
    distributed.setup_cpu_distributed(cfg)
    runner = _build(cfg)
    weights.load_weights(runner.model, ckpt, model_cfg)
    return runner


TTA_RATIOS = (0.75, 1.0, 1.25)


def tta_pipeline(pipeline: list, ratios=TTA_RATIOS) -> list:
    """A test pipeline turned into mmseg's ``TestTimeAug``: its ``Resize`` scale times each
    ratio, each with and without a horizontal flip; loading and packing as before."""
    types = [t['type'] for t in pipeline]
    if 'Resize' not in types:
        raise ConfigCheckError(f'--tta needs a Resize in the test pipeline, got {types}')
    i = types.index('Resize')
    resize = pipeline[i]
    w, h = resize['scale']
    scales = [dict(resize, scale=(int(w * r), int(h * r))) for r in ratios]
    flips = [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)]
    return pipeline[:i] + [dict(type='TestTimeAug',
                                transforms=[scales, flips, *[[t] for t in pipeline[i + 1:]]])]


def use_tta(cfg: Config) -> None:
    """Switch ``cfg`` to test-time augmentation (as mmseg's tools/test.py --tta does, per
    target data set of a multi-domain test set)."""
    if 'tta_model' not in cfg:
        raise ConfigCheckError("--tta needs 'tta_model' in the config (configs/_base_/"
                               'default_runtime.py has one)')
    dataset = cfg.test_dataloader.dataset
    for ds in dataset.get('datasets', [dataset]):
        ds.pipeline = tta_pipeline(ds.pipeline)
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model

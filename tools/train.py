"""Train an MFuser model: ``python tools/train.py CONFIG [--work-dir DIR] [--resume]``.

MMSegmentation 1.x conventions: mmengine Runner, ``--cfg-options`` overrides, ``--amp``,
``--launcher pytorch|slurm`` for multi-process training (see tools/dist_train.sh).
"""
import argparse
import logging
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train an MFuser segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and checkpoints')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from the latest checkpoint in the work dir, or from '
                        'the checkpoint file given')
    parser.add_argument('--overwrite', action='store_true',
                        help='start afresh in a work dir that already holds checkpoints '
                        '(they are replaced); without it such a run stops with an error')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--tensorboard', action='store_true',
                        help="also log to TensorBoard (mmengine's TensorboardVisBackend, next "
                        "to the local backend; needs pip install -e '.[tensorboard]')")
    parser.add_argument('--skip-nonfinite', action='store_true',
                        help='skip an optimizer step whose gradients are NaN/inf (at most 20 in '
                        'a row) instead of stopping the run (the default)')
    parser.add_argument('--no-sync-bn', action='store_true',
                        help='multi-GPU runs keep plain per-GPU BatchNorm in the necks '
                        '(default: SyncBN, as the release trained)')
    parser.add_argument('--no-preflight', action='store_true',
                        help='skip the pre-run checks (data roots and files, weight files, '
                        'schedule values such as max_iters and the learning rate)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. '
                        'train_cfg.max_iters=1000 model.backbone.with_cp=True)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error that otherwise ends in one line '
                        '(a config value, a missing or refused file, bad data, a full disk); '
                        'it is also written into the log file')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    from mfuser_tools.preflight import ConfigCheckError, load_config
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except ConfigCheckError as exc:
        sys.exit(f'error: {exc}')
    if args.amp:
        if cfg.optim_wrapper.type == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.tensorboard:
        add_tensorboard(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def add_tensorboard(cfg: Config) -> None:
    """Add mmengine's TensorBoard backend to the visualizer (event files go to
    ``<work_dir>/<timestamp>/vis_data``), or stop with what to install."""
    import importlib.util
    if importlib.util.find_spec('tensorboard') is None:
        sys.exit("error: --tensorboard needs the tensorboard package: pip install -e "
                 "'.[tensorboard]'")
    backends = list(cfg.visualizer.get('vis_backends') or [])
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    cfg.visualizer.vis_backends = backends


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
    import mfuser.engine.atomic  # noqa: F401  registers the 'local_atomic' backend
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args') or \
            '://' in str(hook.get('out_dir') or cfg.work_dir):
        return
    hook['backend_args'] = dict(backend='local_atomic')


def resume_from(cfg: Config) -> str | None:
    """The checkpoint a ``--resume`` run continues from (the one given, else the work dir's
    latest); None, with ``cfg.resume`` switched off and a log line saying so, when the work
    dir has none yet (mmengine would log 'Auto resumed from the latest checkpoint None').

    Raises:
        CheckpointError: the file named (or named by ``last_checkpoint``) does not exist.
    """
    from mmengine.runner import find_latest_checkpoint

    from mfuser.engine import CheckpointError
    if cfg.get('load_from'):
        path, named_by = cfg.load_from, '--resume'
    else:
        path, named_by = find_latest_checkpoint(cfg.work_dir), osp.join(cfg.work_dir,
                                                                        'last_checkpoint')
    if not path:
        print_log(f'--resume: no checkpoint in {cfg.work_dir} yet (no last_checkpoint); '
                  'starting from iteration 0', logger='current', level=logging.WARNING)
        cfg.resume = False
        return None
    if not osp.isfile(path):
        raise CheckpointError(f'cannot resume: {named_by} names {path!r}, which does not exist. '
                              'Name an existing checkpoint: --resume <work_dir>/iter_N.pth')
    return path


def earlier_checkpoints(work_dir: str) -> list[str]:
    """Checkpoint files a fresh run in ``work_dir`` would overwrite."""
    if not osp.isdir(work_dir):
        return []
    return sorted(f for f in os.listdir(work_dir)
                  if f.endswith('.pth') or f == 'last_checkpoint')


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    from mfuser_tools.workdir import WorkDirBusy, check_work_dir_free
    # the rank as the launchers set it (mmengine's init_dist reads the same variables later);
    # only rank 0 checks and holds the work-dir lock (the others would find rank 0's lock)
    rank = next((os.environ[k] for k in ('RANK', 'OMPI_COMM_WORLD_RANK', 'SLURM_PROCID')
                 if k in os.environ), '0')
    main_rank = args.launcher == 'none' or rank == '0'
    if main_rank:
        try:
            check_work_dir_free(cfg.work_dir)
        except WorkDirBusy as exc:
            sys.exit(f'error: {exc}')
    from mfuser_tools.reporting import reported
    with reported(args.debug):
        run(args, cfg, main_rank)


def run(args, cfg: Config, main_rank: bool) -> None:
    """Checks, then the Runner; errors a user can fix end in one line (``reported``)."""
    from mfuser_tools.workdir import acquire_work_dir
    found = earlier_checkpoints(cfg.work_dir)
    if found and not cfg.get('resume') and not args.overwrite:
        sys.exit(f'error: work dir {cfg.work_dir!r} already holds checkpoints of an earlier run '
                 f'({", ".join(found[:4])}{", ..." if len(found) > 4 else ""}), which a new '
                 'run would overwrite. Continue that run with --resume, pick another '
                 '--work-dir, or pass --overwrite to start afresh there.')
    import mfuser  # noqa: F401  registers the modules
    from mfuser.engine.checkpoint import install_safe_loader
    install_safe_loader()  # weights-only loading of runner checkpoints (torch >= 2.6)
    from mfuser_tools.preflight import check_config
    if not args.no_preflight:
        check_config(cfg, 'train')
    if main_rank:  # one training per work dir; released when this process ends, however
        acquire_work_dir(cfg.work_dir)
        from mfuser.engine.atomic import remove_stale_parts
        for name in remove_stale_parts(cfg.work_dir):  # cut off by a killed run
            print_log(f'removed {name}: a checkpoint write cut off by an earlier run',
                      logger='current', level=logging.WARNING)
    add_nonfinite_guard(cfg, args.skip_nonfinite)
    add_atomic_checkpoints(cfg)
    resume = resume_from(cfg) if cfg.get('resume') else None
    from mfuser_tools.distributed import default_sync_bn, setup_cpu_distributed
    default_sync_bn(cfg, enabled=not args.no_sync_bn)  # multi-GPU: SyncBN in the necks
    setup_cpu_distributed(cfg)  # torchrun on a machine without GPUs: gloo + CPU DDP
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if resume:  # mmengine resumes non-strictly; a mismatch fails later, obscurely
        from mfuser.engine import CheckpointError, require_matching_checkpoint
        try:
            require_matching_checkpoint(runner.model, resume, cfg)
        except CheckpointError as exc:
            raise CheckpointError(f'cannot resume: {exc}') from exc
    runner.train()
    print_log(f'checkpoints and logs: {osp.abspath(cfg.work_dir)}', logger='current')


if __name__ == '__main__':
    main()

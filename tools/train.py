"""Train an MFuser model: ``python tools/train.py CONFIG [--work-dir DIR] [--resume]``.

MMSegmentation 1.x conventions: mmengine Runner, ``--cfg-options`` overrides, ``--amp``,
``--launcher pytorch|slurm`` for multi-process training (see tools/dist_train.sh). The guards
(pre-run checks, one training per work dir, strict resume) are in :mod:`mfuser.apis`.
"""
import argparse
import importlib.util
import logging
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.logging import print_log

from mfuser.apis import ConfigCheckError, load_config, reported, train_runner


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


def main(argv=None):
    args = parse_args(argv)
    with reported(args.debug):  # a user's mistake ends in one line, not a traceback
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
        if args.amp:
            if cfg.optim_wrapper.type == 'AmpOptimWrapper':
                print_log('AMP training is already enabled in your config.', logger='current',
                          level=logging.WARNING)
            else:
                cfg.optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic')
        if args.tensorboard:
            if importlib.util.find_spec('tensorboard') is None:
                raise ConfigCheckError("--tensorboard needs the tensorboard package: pip "
                                       "install -e '.[tensorboard]'")
            backends = list(cfg.visualizer.get('vis_backends') or [])
            if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
                cfg.visualizer.vis_backends = backends + [dict(type='TensorboardVisBackend')]
        if args.resume is not None:
            cfg.resume = True
            cfg.load_from = None if args.resume == 'auto' else args.resume
        runner = train_runner(cfg, preflight=not args.no_preflight, overwrite=args.overwrite,
                              skip_nonfinite=args.skip_nonfinite, sync_bn=not args.no_sync_bn)
        runner.train()
    print_log(f'checkpoints and logs: {osp.abspath(cfg.work_dir)}', logger='current')


if __name__ == '__main__':
    main()

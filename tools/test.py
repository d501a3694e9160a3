"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]``.

With a multi-domain test set (configs/_base_/datasets/dg_*.py) the log ends with the
per-domain mIoU table and the JSON results are written into the work dir.
"""
import argparse
import copy
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.runner import Runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) an MFuser model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to write the evaluation results')
    parser.add_argument('--out', help='also save the predicted train-ID maps as PNGs here '
                        "(one sub-directory per domain, below it the image's sub-folders); a "
                        'relative DIR goes under the work dir (as --show-dir); DIR must be '
                        'new or empty, so that two runs never mix')
    parser.add_argument('--format-only', action='store_true',
                        help='only write the predictions into --out, for a benchmark server '
                        "(no labels read; a config's format_only_dataloader/_evaluator, e.g. "
                        'the ACDC test split and its submission zip, replace the test set)')
    parser.add_argument('--show-dir', help='save every painted prediction (ground truth | '
                        'prediction, Cityscapes palette) under DIR/vis_data/vis_image; a '
                        'relative DIR goes under the work dir')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: each target's test scale x (0.75, 1.0, "
                        "1.25), with and without a horizontal flip, merged by mmseg's "
                        'SegTTAModel (tta_model in the config)')
    parser.add_argument('--no-preflight', action='store_true',
                        help='skip the check for data roots and weight files')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error that otherwise ends in one line '
                        '(a missing or refused file, bad data, a full disk); it is also '
                        'written into the log file')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


TTA_RATIOS = (0.75, 1.0, 1.25)


def tta_pipeline(pipeline: list, ratios=TTA_RATIOS) -> list:
    """A test pipeline turned into mmseg's ``TestTimeAug``: its ``Resize`` scale times each
    ratio, each with and without a horizontal flip; loading and packing as before."""
    types = [t['type'] for t in pipeline]
    if 'Resize' not in types:
        raise ValueError(f'--tta needs a Resize in the test pipeline, got {types}')
    i = types.index('Resize')
    resize = pipeline[i]
    w, h = resize['scale']
    scales = [dict(resize, scale=(int(w * r), int(h * r))) for r in ratios]
    flips = [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0.0, 1.0)]
    return pipeline[:i] + [dict(type='TestTimeAug',
                                transforms=[scales, flips, *[[t] for t in pipeline[i + 1:]]])]


def use_tta(cfg) -> None:
    """Switch ``cfg`` to test-time augmentation (as mmseg's tools/test.py --tta does, per
    target data set of a multi-domain test set)."""
    if 'tta_model' not in cfg:
        raise ValueError("--tta needs 'tta_model' in the config (configs/_base_/"
                         'default_runtime.py has one)')
    dataset = cfg.test_dataloader.dataset
    for ds in dataset.get('datasets', [dataset]):
        ds.pipeline = tta_pipeline(ds.pipeline)
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def image_folders(dataloader) -> list[str]:
    """``data_root``/``data_prefix.img_path`` of every data set in a dataloader config."""
    found, todo = [], [dataloader.get('dataset', {})]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get('data_root'), str):
                prefix = (node.get('data_prefix') or {}).get('img_path') or ''
                found.append(osp.join(node['data_root'], prefix))
            todo += list(node.values())
        elif isinstance(node, (list, tuple)):
            todo += list(node)
    return found


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint {args.checkpoint!r} not found')
    from mfuser_tools.preflight import ConfigCheckError, load_config
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except ConfigCheckError as exc:
        sys.exit(f'error: {exc}')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.out is not None:  # like --show-dir: a relative DIR goes under the work dir
        args.out = args.out if osp.isabs(args.out) else osp.join(cfg.work_dir, args.out)
        if osp.isdir(args.out) and os.listdir(args.out):
            sys.exit(f'error: --out {args.out} already holds files (e.g. '
                     f'{sorted(os.listdir(args.out))[0]}); the predictions of two runs would '
                     'mix. Choose another --out or empty that folder.')
    if args.show_dir:
        if 'visualization' not in cfg.default_hooks:
            sys.exit('error: --show-dir needs default_hooks.visualization in the config')
        cfg.default_hooks.visualization.draw = True
        cfg.default_hooks.visualization.setdefault('interval', 1)  # every image, not every 50th
        show_dir = args.show_dir if osp.isabs(args.show_dir) else osp.join(cfg.work_dir,
                                                                          args.show_dir)
        cfg.visualizer.save_dir = show_dir
    if args.format_only:
        from mfuser.evaluation import use_format_only
        try:
            use_format_only(cfg, args.out)
        except ValueError as exc:
            sys.exit(f'error: {exc}')
    if args.out is not None:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
            cfg.test_evaluator]
        for evaluator in evaluators:
            evaluator['output_dir'] = args.out
            if 'DGIoUMetric' in str(evaluator.get('type')):  # names keep the sub-folders
                evaluator['output_roots'] = image_folders(cfg.test_dataloader)
    import mfuser  # noqa: F401  registers the modules
    from mfuser.engine.checkpoint import install_safe_loader
    install_safe_loader()  # weights-only loading of runner checkpoints (torch >= 2.6)
    from mfuser.engine import require_matching_checkpoint, skip_pretrained_held_by
    from mfuser_tools.preflight import check_config
    from mfuser_tools.reporting import reported
    with reported(args.debug):  # a refused checkpoint, missing data: one line
        for key in skip_pretrained_held_by(cfg, args.checkpoint):
            print(f'{key}: not needed, {args.checkpoint} holds these weights', flush=True)
        if not args.no_preflight:
            check_config(cfg, 'test')
    from mfuser_tools.distributed import setup_cpu_distributed
    setup_cpu_distributed(cfg)  # torchrun on a machine without GPUs: gloo + CPU DDP
    model_cfg = copy.deepcopy(cfg)  # the plain model's config (pretrained files), also --tta
    if args.tta:
        try:
            use_tta(cfg)
        except ValueError as exc:
            sys.exit(f'error: {exc}')
    with reported(args.debug):  # a refused file, a bad image/label, a full disk: one line
        runner = Runner.from_cfg(cfg)
        # mmengine loads it non-strictly: a mismatch would test a partly random model
        require_matching_checkpoint(runner.model, args.checkpoint, model_cfg)
        runner.test()
    if args.show_dir:
        runner.logger.info('painted predictions (ground truth | prediction) saved to '
                           f'{osp.join(osp.abspath(show_dir), "vis_data", "vis_image")}')
    if args.out is not None:
        runner.logger.info(f'predicted train-ID maps saved to {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()

"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]``.

With a multi-domain test set (configs/_base_/datasets/dg_*.py) the log ends with the
per-domain mIoU table and the JSON results are written into the work dir. The checkpoint is
checked against the model and loaded strictly (:func:`mfuser.apis.test_runner`).
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction

from mfuser.apis import ConfigCheckError, load_config, reported, test_runner
from mfuser.evaluation import use_format_only


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


def save_predictions(cfg, out: str) -> None:
    """Let every evaluator also write its train-ID maps into the new or empty ``out``."""
    if osp.isdir(out) and os.listdir(out):
        raise ConfigCheckError(f'--out {out} already holds files (e.g. '
                               f'{sorted(os.listdir(out))[0]}); the predictions of two runs '
                               'would mix. Choose another --out or empty that folder.')
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
        cfg.test_evaluator]
    for evaluator in evaluators:
        evaluator['output_dir'] = out
        if 'DGIoUMetric' in str(evaluator.get('type')):  # names keep the sub-folders
            evaluator['output_roots'] = image_folders(cfg.test_dataloader)


def paint_predictions(cfg, show_dir: str) -> None:
    """Let the visualization hook paint every test image into ``show_dir``."""
    if 'visualization' not in cfg.default_hooks:
        raise ConfigCheckError('--show-dir needs default_hooks.visualization in the config')
    cfg.default_hooks.visualization.draw = True
    cfg.default_hooks.visualization.setdefault('interval', 1)  # every image, not every 50th
    cfg.visualizer.save_dir = show_dir


def main(argv=None):
    args = parse_args(argv)
    with reported(args.debug):  # a user's mistake ends in one line, not a traceback
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
        # like mmseg's --show-dir, a relative --out goes under the work dir
        out, show_dir = (None if d is None else osp.join(cfg.work_dir, d)
                         for d in (args.out, args.show_dir))  # (an absolute d stays)
        if show_dir:
            paint_predictions(cfg, show_dir)
        if args.format_only:
            use_format_only(cfg, out)
        if out:
            save_predictions(cfg, out)
        runner = test_runner(cfg, args.checkpoint, preflight=not args.no_preflight,
                             tta=args.tta)
        runner.test()
    if show_dir:
        runner.logger.info('painted predictions (ground truth | prediction) saved to '
                           f'{osp.join(osp.abspath(show_dir), "vis_data", "vis_image")}')
    if out:
        runner.logger.info(f'predicted train-ID maps saved to {osp.abspath(out)}')


if __name__ == '__main__':
    main()

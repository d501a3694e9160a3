"""Training curves from mmengine's scalar log, and the hook that draws them."""
from __future__ import annotations

import json
import os.path as osp
from collections import defaultdict

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def read_scalars(path: str) -> tuple[dict, dict]:
    """Parse ``vis_data/scalars.json`` (one JSON object per line).

    Returns ``(train, val)``: ``{name: [(iter, value), ...]}`` for the loss terms logged
    during training and for the validation metrics (``*/mIoU``).
    """
    train, val = defaultdict(list), defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            step = rec.get('iter', rec.get('step'))
            for key, value in rec.items():
                if not isinstance(value, (int, float)) or step is None:
                    continue
                if key.startswith('loss') or key.endswith('loss') or '.loss' in key:
                    train[key].append((step, value))
                elif key.endswith('mIoU'):
                    val[key].append((rec.get('step', step), value))
    return dict(train), dict(val)


def plot_curves(scalars_json: str, out_png: str) -> str | None:
    """Draw loss terms (left) and per-domain mIoU (right) to ``out_png``."""
    if not osp.isfile(scalars_json):
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    train, val = read_scalars(scalars_json)
    if not train and not val:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    main = ['loss', 'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice', 'vl.loss_ce']
    for key in [k for k in main if k in train] or sorted(train)[:6]:
        its, vals = zip(*train[key])
        axes[0].plot(its, vals, label=key)
    axes[0].set_xlabel('iteration')
    axes[0].set_ylabel('loss')
    axes[0].set_title('training losses (last decoder layer + total)')
    axes[0].legend(fontsize=8)
    for key in sorted(val):
        its, vals = zip(*val[key])
        axes[1].plot(its, vals, marker='o', label=key)
    axes[1].set_xlabel('iteration')
    axes[1].set_ylabel('mIoU (%)')
    axes[1].set_title('validation mIoU per target domain')
    if val:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


@HOOKS.register_module()
class TrainingCurvesHook(Hook):
    """After a run, save ``training_curves.png`` in the run's log directory."""

    priority = 'VERY_LOW'

    def __init__(self, filename: str = 'training_curves.png'):
        self.filename = filename

    def after_run(self, runner) -> None:
        scalars = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
        out = plot_curves(scalars, osp.join(runner.log_dir, self.filename))
        if out:
            runner.logger.info(f'training curves saved to {out}')

"""Training curves from mmengine's scalar log, and the hook that draws them."""
from __future__ import annotations

import json
import os
import os.path as osp
import re
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


def _records(path: str) -> list[dict]:
    """The JSON records of a scalar log; unreadable lines (a run killed mid-write) dropped."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
    except OSError:
        pass
    return out


def earlier_scalars(work_dir: str, log_dir: str, upto: int) -> list[dict]:
    """The scalar records of the run ``log_dir`` continues, up to iteration ``upto``.

    mmengine starts a new timestamped log directory (with its own ``vis_data/scalars.json``)
    for every launch, so after ``--resume`` the log would hold only the last segment. The
    newest earlier run directory of ``work_dir`` with training records is the previous
    segment (and, when it was resumed itself, already holds the segments before it); its
    records past ``upto`` (logged after the checkpoint the run resumes from) are dropped.
    """
    current = osp.basename(osp.normpath(log_dir))
    try:
        runs = sorted(d for d in os.listdir(work_dir)
                      if re.fullmatch(r'\d{8}_\d{6}', d) and d < current)
    except OSError:
        return []
    for run in reversed(runs):
        records = _records(osp.join(work_dir, run, 'vis_data', 'scalars.json'))
        if any(any('loss' in k for k in r) for r in records):
            return [r for r in records if isinstance(r.get('step'), (int, float))
                    and r['step'] <= upto]
    return []


@HOOKS.register_module()
class TrainingCurvesHook(Hook):
    """Keep the scalar log of a resumed run whole, and save ``training_curves.png`` in the
    run's log directory after the run.

    When training resumes (iteration > 0 at the start), the records of the run it continues
    (:func:`earlier_scalars`) are written at the head of the new run's
    ``vis_data/scalars.json``, so that file and the curves cover the whole run.
    """

    priority = 'VERY_LOW'

    def __init__(self, filename: str = 'training_curves.png'):
        self.filename = filename

    def before_train(self, runner) -> None:
        from mmengine.dist import is_main_process
        if runner.iter == 0 or not is_main_process():
            return
        earlier = earlier_scalars(runner.work_dir, runner.log_dir, runner.iter)
        if not earlier:
            return
        path = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
        os.makedirs(osp.dirname(path), exist_ok=True)
        own = _records(path)
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
            for rec in earlier + own:
                f.write(json.dumps(rec) + '\n')
        os.replace(tmp, path)
        runner.logger.info(f'resumed at iteration {runner.iter}: {len(earlier)} earlier scalar '
                           f'records copied into {path}')

    def after_run(self, runner) -> None:
        scalars = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
        out = plot_curves(scalars, osp.join(runner.log_dir, self.filename))
        if out:
            runner.logger.info(f'training curves saved to {out}')

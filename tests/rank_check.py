"""A hook that checks that all ranks of a distributed run hold the same model."""
from __future__ import annotations

import json
import os.path as osp

import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS


def parameter_checksum(model: torch.nn.Module) -> list[float]:
    """Per-tensor sums of the trainable parameters, in float64 (a cheap fingerprint)."""
    return [float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad]


@HOOKS.register_module()
class RankConsistencyHook(Hook):
    """After training (and every ``interval`` iterations if > 0) gather a fingerprint of the
    trainable parameters from every rank, log it, write ``rank_checksums.json`` into the
    work dir, and raise if the ranks disagree beyond ``atol`` (they should be identical under
    DDP: same initial broadcast, all-reduced gradients).
    """

    priority = 'LOW'

    def __init__(self, interval: int = 0, atol: float = 1e-6):
        self.interval = int(interval)
        self.atol = float(atol)

    def _check(self, runner, tag: str) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        mine = parameter_checksum(model)
        every = all_gather_object(mine) if get_world_size() > 1 else [mine]
        worst = max((abs(a - b) for other in every for a, b in zip(other, every[0])),
                    default=0.0)
        if is_main_process():
            record = dict(tag=tag, world_size=len(every), max_abs_diff=worst,
                          totals=[sum(c) for c in every])
            with open(osp.join(runner.work_dir, 'rank_checksums.json'), 'w') as f:
                json.dump(record, f, indent=1)
        print_log(f'rank {get_rank()}: parameter fingerprints of {len(every)} rank(s) at '
                  f'{tag} differ by at most {worst:.3g}', logger='current')
        if worst > self.atol:
            raise RuntimeError(f'ranks disagree at {tag}: parameter sums differ by {worst:.3g}')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and self.every_n_train_iters(runner, self.interval):
            self._check(runner, f'iter {runner.iter + 1}')

    def after_train(self, runner) -> None:
        self._check(runner, f'end of training (iter {runner.iter})')

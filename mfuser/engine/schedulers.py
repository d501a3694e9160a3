"""The MFuser learning-rate schedule exactly as mmcv 1.x computed it for the release.

The release trains with mmcv 1.x ``lr_config = dict(policy='poly', power=0.9, min_lr=1e-6,
by_epoch=False, warmup='linear', warmup_iters=1500, warmup_ratio=1e-6)``. mmcv 1.x computes the
poly value from iteration 0 to ``max_iters`` and, during the warm-up, MULTIPLIES it by the
linear warm-up factor::

    regular(i) = (base - min_lr) * (1 - i / max_iters) ** power + min_lr
    lr(i)      = regular(i) * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio))   (i < warmup)
    lr(i)      = regular(i)                                                     (otherwise)

so lr(1500) = 9.33e-5 for base 1e-4 and 20k iterations. Chaining mmengine's ``LinearLR`` and
``PolyLR`` (poly starting after the warm-up) gives another curve; this scheduler gives the
release's, in closed form (so resuming at any iteration gives the same value).
"""
from __future__ import annotations

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmseg.registry import PARAM_SCHEDULERS

__all__ = ['PolyLRWithLinearWarmup']


@PARAM_SCHEDULERS.register_module()
class PolyLRWithLinearWarmup(LRSchedulerMixin, _ParamScheduler):
    """mmcv 1.x ``poly`` policy with a multiplicative ``linear`` warm-up (see module doc).

    Args:
        optimizer: the (wrapped) optimizer.
        power: poly power (0.9).
        eta_min: ``min_lr`` of mmcv 1.x (1e-6), absolute for every parameter group.
        warmup_iters: length of the linear warm-up (1500); 0 disables it.
        warmup_ratio: warm-up factor at iteration 0 (1e-6).
        begin, end: iterations the schedule covers (poly reaches ``eta_min`` at ``end``).
        by_epoch: must be False (the release schedules by iteration).
    """

    def __init__(self, optimizer, power: float = 0.9, eta_min: float = 1e-6,
                 warmup_iters: int = 1500, warmup_ratio: float = 1e-6, begin: int = 0,
                 end: int = INF, last_step: int = -1, by_epoch: bool = False,
                 verbose: bool = False):
        if by_epoch:
            raise ValueError('PolyLRWithLinearWarmup schedules by iteration: by_epoch=False.')
        if end == INF:
            raise ValueError('PolyLRWithLinearWarmup needs a finite end (the max iterations).')
        if warmup_iters < 0 or not 0 < warmup_ratio <= 1:
            raise ValueError(f'bad warm-up: warmup_iters={warmup_iters}, '
                             f'warmup_ratio={warmup_ratio}')
        self.power, self.eta_min = float(power), float(eta_min)
        self.warmup_iters, self.warmup_ratio = int(warmup_iters), float(warmup_ratio)
        self.total_iters = end - begin
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    def factor(self, base: float, step: int) -> float:
        """The learning rate of a group whose base value is ``base`` at ``step`` (closed form)."""
        t = min(max(step, 0), self.total_iters)
        value = (base - self.eta_min) * (1 - t / self.total_iters) ** self.power + self.eta_min
        if step < self.warmup_iters:
            value *= 1 - (1 - step / self.warmup_iters) * (1 - self.warmup_ratio)
        return value

    def _get_value(self) -> list[float]:
        return [self.factor(base, self.last_step) for base in self.base_values]

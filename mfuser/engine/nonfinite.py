"""Stop (or skip a step) when the training loss stops being a number; never save NaN weights.

Without this, a diverging run (too high a learning rate, a bad batch) goes on for thousands of
iterations computing NaN, saves NaN checkpoints and, with ``max_keep_ckpts``, deletes the last
good ones to make room for them.
"""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or weights (the message names iteration and terms)."""


def _non_finite_terms(outputs) -> list[str]:
    """``name=value`` for every loss term in ``outputs`` (mmengine's log_vars) that is not
    finite; one device sync for all of them."""
    if not isinstance(outputs, dict):
        return []
    names, values = [], []
    for name, value in outputs.items():
        if 'loss' not in name:
            continue
        if isinstance(value, torch.Tensor):
            value = value.detach().float().mean()
        elif isinstance(value, (int, float)):
            value = torch.tensor(float(value))
        else:
            continue
        names.append(name)
        values.append(value.cpu() if value.device.type != 'cpu' else value)
    if not values:
        return []
    stacked = torch.stack(values)
    bad = (~torch.isfinite(stacked)).tolist()
    return [f'{n}={v:g}' for n, v, b in zip(names, stacked.tolist(), bad) if b]


def _non_finite_tensors(state: dict, allowed: set) -> list[str]:
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and name not in allowed
            and not bool(torch.isfinite(t).all())]


def _some(names: list[str], n: int = 8) -> str:
    return ', '.join(names[:n]) + (f', ... ({len(names)} in all)' if len(names) > n else '')


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Guard a training run against NaN/inf losses and weights.

    * ``action='stop'`` (default): after an iteration whose loss (or any loss term) is not
      finite, stop at once with :class:`NonFiniteLossError` naming the iteration and the
      terms. It runs before the checkpoint hook, so no checkpoint of that iteration is
      written and ``max_keep_ckpts`` deletes nothing.
    * ``action='skip'``: an optimizer step whose loss or gradients are not finite is skipped
      (as AMP's loss scaler does; with ``AmpOptimWrapper`` the scaler itself does it) and
      reported; after ``max_skips`` consecutive bad iterations the run stops as above.

    Either way, before an iteration's checkpoint is saved (and before ``CheckpointHook``
    rotates the old ones out) the weights are checked, and a checkpoint holding NaN/inf is
    never written. :func:`mfuser.apis.train_runner` (``tools/train.py``) adds this hook to
    every run.
    """

    priority = 'ABOVE_NORMAL'  # before the logger and checkpoint hooks of the same iteration

    def __init__(self, action: str = 'stop', max_skips: int = 20) -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"NonFiniteLossHook: action must be 'stop' or 'skip', got "
                             f'{action!r}')
        self.action = action
        self.max_skips = int(max_skips)
        self._skips = 0
        self._skipped_step = False
        self._allowed: set = set()

    # ---------------------------------------------------------------- set-up
    def before_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        # buffers that are meant to hold inf (attention masks) are not damage
        self._allowed = set(_non_finite_tensors(model.state_dict(), set()))
        if self.action == 'skip':
            from mmengine.optim import AmpOptimWrapper, OptimWrapperDict
            wrapper = runner.optim_wrapper
            wrappers = wrapper.optim_wrappers.values() if isinstance(
                wrapper, OptimWrapperDict) else [wrapper]
            for w in wrappers:
                if not isinstance(w, AmpOptimWrapper):  # the scaler skips by itself
                    self._guard_step(w)

    def _guard_step(self, wrapper) -> None:
        """Skip ``wrapper``'s optimizer step when the loss or a gradient is not finite. The
        decision is all-reduced, so that every rank of a distributed run skips together."""
        update_params, step = wrapper.update_params, wrapper.step
        state = {'loss_ok': True}

        def guarded_update_params(loss, *args, **kwargs):
            state['loss_ok'] = bool(torch.isfinite(loss.detach()).all())
            return update_params(loss, *args, **kwargs)

        def guarded_step(**kwargs):
            from mmengine.dist import all_reduce
            grads = [p.grad for group in wrapper.optimizer.param_groups
                     for p in group['params'] if p.grad is not None]
            ok = state['loss_ok'] and (not grads or bool(
                torch.stack([torch.isfinite(g).all() for g in grads]).all()))
            flag = torch.tensor([1.0 if ok else 0.0],
                                device=grads[0].device if grads else 'cpu')
            all_reduce(flag, op='min')
            if flag.item() < 1:
                self._skipped_step = True
                return None
            return step(**kwargs)

        wrapper.update_params = guarded_update_params
        wrapper.step = guarded_step

    # ---------------------------------------------------------------- checks
    def _last_checkpoint(self, runner) -> str:
        path = osp.join(runner.work_dir, 'last_checkpoint')
        try:
            with open(path) as f:
                return f'the last checkpoint is {f.read().strip()}'
        except OSError:
            return 'no checkpoint was written yet'

    @staticmethod
    def _checkpoint_due(runner) -> bool:
        """Whether a CheckpointHook saves after this iteration (it deletes the oldest
        checkpoint *before* saving, so damaged weights must be caught before it runs)."""
        from mmengine.hooks import CheckpointHook
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch and (
                    hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                    or (hook.save_last and hook.is_last_train_iter(runner))):
                return True
        return False

    def _check_weights(self, runner, it) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        bad = _non_finite_tensors(model.state_dict(), self._allowed)
        if bad:
            raise NonFiniteLossError(
                f'training stopped at iteration {it}: weights not finite ({_some(bad)}). '
                f'No checkpoint of this iteration was written; {self._last_checkpoint(runner)}.'
                ' Lower the learning rate (optim_wrapper.optimizer.lr) or clip gradients '
                '(optim_wrapper.clip_grad=dict(max_norm=1.0)).')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        it = runner.iter + 1
        bad = _non_finite_terms(outputs)
        skipped, self._skipped_step = self._skipped_step, False
        if not bad and not skipped:
            self._skips = 0
            if self._checkpoint_due(runner):
                self._check_weights(runner, it)
            return
        what = f'loss terms not finite: {_some(bad)}' if bad else 'gradients not finite'
        if self.action == 'skip' and self._skips < self.max_skips:
            self._skips += 1
            runner.logger.warning(f'iteration {it}: {what}; optimizer step skipped '
                                  f'({self._skips} in a row, at most {self.max_skips})')
            if self._checkpoint_due(runner):
                self._check_weights(runner, it)
            return
        extra = (f' after {self._skips} skipped steps in a row' if self.action == 'skip'
                 else '')
        raise NonFiniteLossError(
            f'training stopped at iteration {it}{extra}: {what}. No checkpoint of this '
            f'iteration was written; {self._last_checkpoint(runner)}. Lower the learning rate '
            '(optim_wrapper.optimizer.lr), clip gradients (optim_wrapper.clip_grad='
            "dict(max_norm=1.0)), or skip such steps (tools/train.py --skip-nonfinite).")

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict') or {}
        bad = _non_finite_tensors(state, self._allowed)
        if bad:
            it = (checkpoint.get('meta') or {}).get('iter', runner.iter)
            raise NonFiniteLossError(
                f'refusing to save the checkpoint of iteration {it}: its weights are '
                f'not finite ({_some(bad)}); {self._last_checkpoint(runner)}. Lower the '
                'learning rate or clip gradients (optim_wrapper.clip_grad).')

"""Runner-side pieces: checkpoint loading (installed by the tools, not on import), atomic
checkpoint writing (the ``local_atomic`` file backend), the LR schedule, hooks (non-finite
guard, trainable-only checkpoints, training curves)."""
from . import checkpoint as _ckpt
from .atomic import AtomicLocalBackend, atomic_open, atomic_write_bytes
from .curves import TrainingCurvesHook, plot_curves, read_scalars
from .nonfinite import NonFiniteLossError, NonFiniteLossHook
from .schedulers import PolyLRWithLinearWarmup
from .trainable_checkpoint import TrainableCheckpointHook

CheckpointError = _ckpt.CheckpointError
checkpoint_mismatch = _ckpt.checkpoint_mismatch
load_trusted_local = _ckpt.load_trusted_local
read_state_dict = _ckpt.read_state_dict
require_matching_checkpoint = _ckpt.require_matching_checkpoint
runner_checkpoint_globals = _ckpt.runner_checkpoint_globals
skip_pretrained_held_by = _ckpt.skip_pretrained_held_by

__all__ = ['AtomicLocalBackend', 'CheckpointError', 'NonFiniteLossError', 'NonFiniteLossHook',
           'PolyLRWithLinearWarmup', 'TrainableCheckpointHook', 'TrainingCurvesHook',
           'atomic_open', 'atomic_write_bytes', 'checkpoint_mismatch', 'load_trusted_local',
           'plot_curves', 'read_scalars', 'read_state_dict', 'require_matching_checkpoint',
           'runner_checkpoint_globals', 'skip_pretrained_held_by']

"""Runner-side pieces: the weights' lifecycle (:mod:`.weights`: pretrained files, trainable-only
checkpoints, strict checkpoint loading), reading checkpoint files safely (:mod:`.checkpoint`,
installed by the tools, not on import), atomic checkpoint writing (the ``local_atomic`` file
backend), the LR schedule, hooks (non-finite guard, training curves)."""
from .atomic import AtomicLocalBackend, atomic_open, atomic_write_bytes
from .checkpoint import CheckpointError, load_trusted_local
from .curves import TrainingCurvesHook, plot_curves, read_scalars
from .nonfinite import NonFiniteLossError, NonFiniteLossHook
from .schedulers import PolyLRWithLinearWarmup
from .weights import (
    PRETRAINED_PARTS,
    Checkpoint,
    TrainableCheckpointHook,
    build_model_without_pretrained,
    checkpoint_mismatch,
    load_weights,
    read_checkpoint,
    read_state_dict,
    require_matching_checkpoint,
    skip_pretrained_held_by,
)

__all__ = ['PRETRAINED_PARTS', 'AtomicLocalBackend', 'Checkpoint', 'CheckpointError',
           'NonFiniteLossError', 'NonFiniteLossHook', 'PolyLRWithLinearWarmup',
           'TrainableCheckpointHook', 'TrainingCurvesHook', 'atomic_open', 'atomic_write_bytes',
           'build_model_without_pretrained', 'checkpoint_mismatch', 'load_trusted_local',
           'load_weights', 'plot_curves', 'read_checkpoint', 'read_scalars', 'read_state_dict',
           'require_matching_checkpoint', 'skip_pretrained_held_by']

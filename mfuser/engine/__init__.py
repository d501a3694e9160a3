"""Runner-side helpers: safe checkpoint loading (registered on import) and hooks."""
from . import checkpoint as _ckpt
from .curves import TrainingCurvesHook, plot_curves, read_scalars
from .distributed import CPUDistributedDataParallel, setup_cpu_distributed
from .nonfinite import NonFiniteLossError, NonFiniteLossHook
from .rank_check import RankConsistencyHook, parameter_checksum
from .schedulers import PolyLRWithLinearWarmup
from .trainable_checkpoint import TrainableCheckpointHook
from .workdir import WorkDirBusy, acquire_work_dir, check_work_dir_free

CheckpointError = _ckpt.CheckpointError
checkpoint_mismatch = _ckpt.checkpoint_mismatch
load_trusted_local = _ckpt.load_trusted_local
read_state_dict = _ckpt.read_state_dict
require_matching_checkpoint = _ckpt.require_matching_checkpoint
runner_checkpoint_globals = _ckpt.runner_checkpoint_globals
skip_pretrained_held_by = _ckpt.skip_pretrained_held_by

__all__ = ['CPUDistributedDataParallel', 'CheckpointError', 'NonFiniteLossError',
           'NonFiniteLossHook', 'PolyLRWithLinearWarmup', 'TrainableCheckpointHook',
           'RankConsistencyHook', 'WorkDirBusy',
           'acquire_work_dir', 'check_work_dir_free',
           'TrainingCurvesHook', 'checkpoint_mismatch', 'load_trusted_local',
           'parameter_checksum', 'plot_curves', 'read_scalars',
           'read_state_dict', 'require_matching_checkpoint', 'runner_checkpoint_globals',
           'setup_cpu_distributed', 'skip_pretrained_held_by']

"""Runner-side helpers: safe checkpoint loading (registered on import) and hooks."""
from .checkpoint import load_trusted_local, runner_checkpoint_globals, skip_pretrained_held_by
from .curves import TrainingCurvesHook, plot_curves, read_scalars
from .distributed import CPUDistributedDataParallel, setup_cpu_distributed
from .rank_check import RankConsistencyHook, parameter_checksum

__all__ = ['CPUDistributedDataParallel', 'RankConsistencyHook', 'TrainingCurvesHook',
           'load_trusted_local', 'parameter_checksum', 'plot_curves', 'read_scalars',
           'runner_checkpoint_globals', 'setup_cpu_distributed', 'skip_pretrained_held_by']

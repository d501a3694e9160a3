"""Runner-side helpers: safe checkpoint loading (registered on import) and hooks."""
from .checkpoint import load_trusted_local, runner_checkpoint_globals
from .curves import TrainingCurvesHook, plot_curves, read_scalars

__all__ = ['TrainingCurvesHook', 'load_trusted_local', 'plot_curves', 'read_scalars',
           'runner_checkpoint_globals']

"""The road from a config to a running job, shared by ``tools/train.py``, ``test.py`` and
``infer.py`` (as ``mmseg.apis`` is by mmseg's tools).

* :func:`load_config`: read a config, ``--cfg-options`` checked before they merge;
* :func:`train_runner` / :func:`test_runner`: a ready mmengine Runner, every guard in one
  place (:mod:`.runner` lists them);
* :func:`init_segmentor`: a model for mmseg's ``inference_model``, loaded strictly;
* :func:`reported`: the tools' top-level handler, turning the user errors of :mod:`.errors`
  into one line.
"""
from .config import check_cfg_options, load_config
from .errors import ConfigCheckError, WorkDirBusy
from .inference import inference_config, init_segmentor
from .preflight import check_config
from .reporting import reported
from .runner import test_runner, train_runner, use_tta

__all__ = ['ConfigCheckError', 'WorkDirBusy', 'check_cfg_options', 'check_config',
           'inference_config', 'init_segmentor', 'load_config', 'reported', 'test_runner',
           'train_runner', 'use_tta']

"""Multi-process training without GPUs (gloo), on top of mmengine's Runner.

mmengine's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` and its default model
wrapper passes ``device_ids=[LOCAL_RANK]`` to DDP; both fail on a CPU-only machine. Tools call
:func:`setup_cpu_distributed` before building the Runner: it starts a gloo process group
from torchrun's environment and selects :class:`CPUDistributedDataParallel`, which is
mmengine's wrapper without device ids. On GPU machines it does nothing.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS  # the root registry: Runner.wrap_model looks here


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules (``device_ids`` must be None there)."""

    def __init__(self, module, device_ids=None, detect_anomalous_params=False, **kwargs):
        if next(module.parameters()).device.type == 'cpu':
            device_ids = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=device_ids,
                         detect_anomalous_params=detect_anomalous_params, **kwargs)


def setup_cpu_distributed(cfg) -> bool:
    """Initialise gloo and the CPU DDP wrapper for ``cfg.launcher == 'pytorch'`` without CUDA.

    Returns True when it did so. Needs torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT).
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs torchrun (tools/dist_train.sh); '
                           f'{", ".join(missing)} not set')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
    cfg.model_wrapper_cfg = wrapper
    return True


def default_sync_bn(cfg, enabled: bool = True, cuda: bool | None = None) -> str | None:
    """Use SyncBN in the necks for multi-GPU training, as the release trained.

    Under a distributed launcher (``cfg.launcher != 'none'``) on CUDA, sets ``cfg.sync_bn =
    'torch'`` (mmengine's Runner then converts every BatchNorm to ``torch.nn.SyncBatchNorm``
    before wrapping the model in DDP), unless the config already sets ``sync_bn`` (``sync_bn =
    None`` there keeps plain BN) or ``enabled`` is False (``train.py --no-sync-bn``). CPU / gloo
    runs keep BN (SyncBN needs NCCL). Returns the value in force.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if 'sync_bn' in cfg:
        return cfg.sync_bn
    if enabled and cuda and cfg.get('launcher', 'none') != 'none':
        cfg.sync_bn = 'torch'
        return 'torch'
    return None

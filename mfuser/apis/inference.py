"""An MFuser segmentor for mmseg's ``inference_model``, loaded strictly from a checkpoint."""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from mfuser.engine import weights
from mfuser.engine.checkpoint import install_safe_loader

from .errors import ConfigCheckError
from .preflight import check_config


def inference_config(path: str) -> Config:
    """The config with a ``test_pipeline`` for mmseg's ``inference_model``: the config's own,
    else the test data set's pipeline (the first target of a multi-domain set) without label
    loading."""
    if not osp.isfile(path):
        raise ConfigCheckError(f'config file {path!r} not found')
    cfg = Config.fromfile(path)
    if 'test_pipeline' not in cfg:
        dataset = cfg.test_dataloader.dataset
        while 'pipeline' not in dataset:
            dataset = dataset['datasets'][0] if 'datasets' in dataset else dataset['dataset']
        cfg.test_pipeline = [t for t in dataset['pipeline'] if t['type'] not in (
            'LoadAnnotations', 'LoadCheckedAnnotations')]
    return cfg


def init_segmentor(config: str, checkpoint: str, device: str = 'cpu') -> torch.nn.Module:
    """mmseg's ``init_model`` with MFuser's guards: the checkpoint read once (an official file
    converted), the pretrained files it makes unnecessary cleared, the weight files checked, the
    weights loaded strictly; ``dataset_meta`` from the checkpoint (Cityscapes by default).
    The model is in eval mode on ``device``; ``model.cfg`` has a ``test_pipeline``.

    Raises:
        ConfigCheckError, CheckpointError: see :mod:`mfuser.apis.errors`.
    """
    from mmseg.apis import init_model
    from mmseg.datasets import CityscapesDataset

    import mfuser  # noqa: F401  registers the modules
    install_safe_loader()
    if not osp.isfile(checkpoint):
        raise ConfigCheckError(f'checkpoint {checkpoint!r} not found')
    cfg = inference_config(config)
    ckpt = weights.read_checkpoint(checkpoint)
    for key in weights.skip_pretrained_held_by(cfg, ckpt):
        print_log(f'{key}: not needed, {checkpoint} holds these weights', logger='current')
    check_config(cfg, 'infer')
    model = init_model(cfg, None, device='cpu')
    weights.require_matching_checkpoint(model, ckpt, cfg)
    weights.load_weights(model, ckpt)
    meta = ckpt.meta.get('dataset_meta') or {}
    model.dataset_meta = dict(classes=meta.get('classes', CityscapesDataset.METAINFO['classes']),
                              palette=meta.get('palette', CityscapesDataset.METAINFO['palette']))
    return model.to(device).eval()

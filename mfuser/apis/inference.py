"""An MFuser segmentor for mmseg's ``inference_model``, loaded strictly from a checkpoint."""
from __future__ import annotations

import torch
from mmengine.config import Config

from mfuser.engine import weights

from .config import load_config
from .preflight import check_config
from .runner import read_checkpoint_for


def inference_config(path: str) -> Config:
    """The config with a ``test_pipeline`` for mmseg's ``inference_model``: the config's own,
    else the test data set's pipeline (the first target of a multi-domain set) without label
    loading."""
    cfg = load_config(path)
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
    cfg = inference_config(config)
    ckpt = read_checkpoint_for(cfg, checkpoint)
    check_config(cfg, 'infer')
    model = init_model(cfg, None, device='cpu')
    weights.load_weights(model, ckpt, cfg)
    meta = ckpt.meta.get('dataset_meta') or {}
    model.dataset_meta = dict(classes=meta.get('classes', CityscapesDataset.METAINFO['classes']),
                              palette=meta.get('palette', CityscapesDataset.METAINFO['palette']))
    return model.to(device).eval()

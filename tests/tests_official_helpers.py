"""Shared by the official-release tests: the project models built on the 'meta' device."""
import os.path as osp

import torch
from mmengine.config import Config
from mmseg.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {'eva02': 'mfuser_eva02_gta.py', 'clip': 'mfuser_clip_gta.py',
           'siglip': 'mfuser_siglip_gta.py'}


def build_meta(variant: str) -> torch.nn.Module:
    """The variant's full-size model with random towers, on 'meta' (no memory, < 1 s)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', CONFIGS[variant]))
    cfg.model.backbone.vfm.checkpoint = None
    cfg.model.backbone.vlm.checkpoint = None
    cfg.model.text_encoder.checkpoint = None
    if variant == 'siglip':  # token ids do not matter for shapes (the real one is a local file)
        cfg.model.text_encoder.tokenizer = (
            lambda texts, context_length: torch.ones(len(texts), context_length,
                                                     dtype=torch.long))
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def meta_model_shapes(variant: str) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in build_meta(variant).state_dict().items()}

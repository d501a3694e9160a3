"""Shared by the official-release tests: the project models built on the 'meta' device."""
import os.path as osp

import torch

from mfuser.engine import build_model_without_pretrained

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {'eva02': 'mfuser_eva02_gta.py', 'clip': 'mfuser_clip_gta.py',
           'siglip': 'mfuser_siglip_gta.py'}


def build_meta(variant: str) -> torch.nn.Module:
    """The variant's full-size model with random towers, on 'meta' (no memory, < 1 s)."""
    return build_model_without_pretrained(osp.join(REPO, 'configs', CONFIGS[variant]),
                                          device='meta', placeholder_tokens=True)


def meta_model_shapes(variant: str) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in build_meta(variant).state_dict().items()}

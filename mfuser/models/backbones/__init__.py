"""Image backbones: the fused VFM x VLM encoder (registered as ``FusedEncoder``)."""
from .fused_encoder import FusedEncoder, build_fpn_necks

__all__ = ['FusedEncoder', 'build_fpn_necks']

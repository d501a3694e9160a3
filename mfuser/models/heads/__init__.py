"""Decode heads."""
from .deform_attn import PortableMSDeformAttn
from .text_mask2former_head import TextQueriedMask2FormerHead
from .text_pixel_decoder import TextMSDeformAttnPixelDecoder

__all__ = ['PortableMSDeformAttn', 'TextMSDeformAttnPixelDecoder', 'TextQueriedMask2FormerHead']

"""Attention co-adapters for the paper's ablation (alternatives to :class:`MVFuser`).

All adapters share one interface: ``adapter(x, n_first=None) -> out`` with x the concatenated
tokens ``cat([first_stream, second_stream], dim=1)`` of shape (B, L, C) and ``n_first`` the
length of the first stream (the VFM tokens in the fused encoder). The output (B, L, C) is the
adapter's contribution, already multiplied by a learnable scalar ``scale`` (init 1e-3); the
caller adds the residual. Adapters that do not need ``n_first`` ignore it.

- :class:`ConcatAttentionAdapter`: one pre-norm multi-head self-attention over all L tokens
  (cost quadratic in the doubled sequence): 4.20 M params at C = 1024.
- :class:`SeparateAttentionAdapter`: one self-attention per stream, no mixing across
  streams: 8.40 M params at C = 1024.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from timm.models.vision_transformer import Attention

__all__ = ['ConcatAttentionAdapter', 'SelfAttention', 'SeparateAttentionAdapter']


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention block body: LN -> timm's ``Attention`` (qkv, SDPA,
    proj, dropout). (B, L, C) -> (B, L, C), no residual."""

    def __init__(self, dim: int, num_heads: int = 16, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm(x))


def _check_tokens(x: torch.Tensor, dim: int, name: str):
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f'{name} expects (B, L, {dim}) tokens, got {tuple(x.shape)}')


@MODELS.register_module()
class ConcatAttentionAdapter(nn.Module):
    """Self-attention over the concatenated streams: (B, L, C) -> (B, L, C)."""

    def __init__(self, d_model: int, num_heads: int = 16, proj_drop: float = 0.1,
                 init_scale: float = 1e-3):
        super().__init__()
        self.d_model = d_model
        self.attn = SelfAttention(d_model, num_heads, proj_drop=proj_drop)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def forward(self, x: torch.Tensor, n_first: int | None = None) -> torch.Tensor:
        _check_tokens(x, self.d_model, type(self).__name__)
        return self.attn(x) * self.scale


@MODELS.register_module()
class SeparateAttentionAdapter(nn.Module):
    """Independent self-attention for tokens [:n_first] and [n_first:]: (B, L, C) -> (B, L, C).

    ``n_first`` is required (the split between the two streams).
    """

    def __init__(self, d_model: int, num_heads: int = 16, proj_drop: float = 0.1,
                 init_scale: float = 1e-3):
        super().__init__()
        self.d_model = d_model
        self.attn_first = SelfAttention(d_model, num_heads, proj_drop=proj_drop)
        self.attn_second = SelfAttention(d_model, num_heads, proj_drop=proj_drop)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def forward(self, x: torch.Tensor, n_first: int | None = None) -> torch.Tensor:
        _check_tokens(x, self.d_model, type(self).__name__)
        if n_first is None or not 0 < n_first < x.shape[1]:
            raise ValueError('SeparateAttentionAdapter needs n_first, the length of the first '
                             f'stream (0 < n_first < {x.shape[1]}), got {n_first}')
        first, second = x[:, :n_first], x[:, n_first:]
        out = torch.cat([self.attn_first(first), self.attn_second(second)], dim=1)
        return out * self.scale

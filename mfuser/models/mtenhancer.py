"""MTEnhancer: text-embedding refinement with an MVFuser over [text ; visual ; text] (spec 4).

The stack (:class:`MTEnhancerStack`) is what the released checkpoints call
``context_decoder``: ``memory_proj.{0,1,2}``, ``text_proj.{0,1}``, ``decoder.N`` (one
:class:`MTEnhancer` each), ``out_proj.{0,1}``. It returns the refinement only; the segmentor
owns the learnable ``gamma`` and computes ``text + gamma * refinement``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from .mvfuser import MVFuser

__all__ = ['MTEnhancer', 'MTEnhancerStack', 'MultiHeadAttention']


class MultiHeadAttention(nn.Module):
    """DenseCLIP-style attention with separate ``q_proj``/``k_proj``/``v_proj`` and ``proj``.

    q (B, Lq, C), k and v (B, Lk, C) -> (B, Lq, C).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, nq, c = q.shape
        nk = k.shape[1]
        hd = c // self.num_heads
        q = self.q_proj(q).reshape(b, nq, self.num_heads, hd).transpose(1, 2)
        k = self.k_proj(k).reshape(b, nk, self.num_heads, hd).transpose(1, 2)
        v = self.v_proj(v).reshape(b, nk, self.num_heads, hd).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, nq, c)
        return self.proj_drop(self.proj(out))


@MODELS.register_module()
class MTEnhancer(nn.Module):
    """One refinement layer; text x (B, K, C), visual memory (B, M, C) -> x (B, K, C).

    x = x + SelfAttn(LN1(x))
    s = MVFuser(cat[LN2(x) ; visual ; LN2(x)]);  x = x + s[:, :K] + s[:, -K:]
    x = x + Dropout(MLP(LN3(x)))

    The text copy after the image tokens has seen the whole image through the one-directional
    scan; both copies are added back.

    Args:
        d_model: width C. nhead: attention heads. dropout: attention-proj / MLP dropout.
        fuser_cfg: extra keyword arguments for the inner :class:`MVFuser` (``cross_attn``).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.1,
                 fuser_cfg: dict | None = None):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, proj_drop=dropout)
        self.cross_attn = MVFuser(d_model, **(fuser_cfg or {}))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_model * 4),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_model * 4, d_model),
        )

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or mem.dim() != 3 or x.shape[0] != mem.shape[0] \
                or x.shape[-1] != mem.shape[-1]:
            raise ValueError(f'MTEnhancer expects text (B, K, C) and visual (B, M, C), got '
                             f'{tuple(x.shape)} and {tuple(mem.shape)}')
        k = x.shape[1]
        q = self.norm1(x)
        x = x + self.self_attn(q, q, q)
        q = self.norm2(x)
        s = self.cross_attn(torch.cat([q, mem, q], dim=1))
        x = x + s[:, :k] + s[:, -k:]
        return x + self.dropout(self.mlp(self.norm3(x)))


@MODELS.register_module()
class MTEnhancerStack(nn.Module):
    """Text refiner (released name ``context_decoder``).

    forward(text (B, K, visual_dim), visual (B, 1 + HW, visual_dim)) -> (B, K, visual_dim),
    the refinement to be gated by the segmentor's ``gamma`` and added to ``text``.
    ``visual`` is [global embedding ; flattened dense embeddings].

    ``reinit_fuser_linears`` (default True, as released): the DenseCLIP init also re-draws the
    Linears of the inner MVFusers (see :meth:`_init_weights`).
    """

    def __init__(self,
                 visual_dim: int = 768,
                 transformer_width: int = 256,
                 transformer_heads: int = 4,
                 transformer_layers: int = 1,
                 dropout: float = 0.1,
                 fuser_cfg: dict | None = None,
                 reinit_fuser_linears: bool = True):
        super().__init__()
        self.visual_dim = visual_dim
        self.reinit_fuser_linears = bool(reinit_fuser_linears)
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(visual_dim),
            nn.Linear(visual_dim, transformer_width),
            nn.LayerNorm(transformer_width),
        )
        self.text_proj = nn.Sequential(
            nn.LayerNorm(visual_dim),
            nn.Linear(visual_dim, transformer_width),
        )
        self.decoder = nn.ModuleList([
            MTEnhancer(transformer_width, transformer_heads, dropout, fuser_cfg)
            for _ in range(transformer_layers)
        ])
        self.out_proj = nn.Sequential(
            nn.LayerNorm(transformer_width),
            nn.Linear(transformer_width, visual_dim),
        )
        self._init_weights()

    def _init_weights(self):
        """DenseCLIP's context-decoder init: every Linear trunc-normal(0.02) with zero bias,
        every LayerNorm (1, 0).

        As released, this includes the Linears inside the MVFusers (``in_proj``, ``x_proj``,
        ``dt_proj`` - whose bias thus starts at 0 - and ``out_proj``); ``A_log``, ``D``,
        ``scale`` and the convolutions keep their MVFuser init. With
        ``reinit_fuser_linears=False`` the MVFusers keep Mamba's delta initialisation.
        """
        skip = set()
        if not self.reinit_fuser_linears:
            skip = {id(m) for layer in self.decoder for m in layer.cross_attn.modules()}
        for m in self.modules():
            if id(m) in skip:
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        for name, t in (('text', text), ('visual', visual)):
            if t.dim() != 3 or t.shape[-1] != self.visual_dim:
                raise ValueError(f'MTEnhancerStack: {name} must be (B, *, {self.visual_dim}), '
                                 f'got {tuple(t.shape)}')
        mem = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.decoder:
            x = layer(x, mem)
        return self.out_proj(x)

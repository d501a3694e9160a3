"""timm ViT / EVA image towers, driven one block at a time.

The fused encoder runs two towers in lock-step, so it cannot call ``forward_features``; these
helpers expose the pieces of a timm ``VisionTransformer`` or ``Eva`` in the order timm runs
them (checked equal to ``forward_features``):

* ``VisionTransformer``: ``patch_embed`` -> ``_pos_embed`` -> ``patch_drop`` -> ``norm_pre``
  -> ``blocks[i](x)`` -> ``norm``.
* ``Eva``: ``patch_embed`` -> ``_pos_embed`` (returns tokens and the rotary embedding) ->
  ``norm_pre`` -> ``blocks[i](x, rope=rope)`` -> ``norm``.

Towers are built with ``dynamic_img_size=True`` (absolute position embeddings are resampled to
the token grid of every input, EVA's rotary embedding is computed for it) and
``dynamic_img_pad=True`` (inputs whose sides do not divide by the patch size are zero-padded at
the bottom/right). Nothing is downloaded: ``pretrained=False`` always.
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn as nn
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # fallback pixel statistics
from timm.layers import DropPath
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer


def build_vit_tower(name: str, img_size: int | tuple[int, int], *, keep_head: bool,
                    **overrides) -> nn.Module:
    """Build a timm ViT/EVA tower by registered name, without weights.

    Args:
        name: a timm model name, e.g. ``'vit_large_patch14_dinov2'``,
            ``'eva02_large_patch14_clip_336'``, ``'vit_large_patch14_clip_quickgelu_336'``,
            ``'vit_large_patch16_siglip_384'``.
        img_size: the training crop; position embeddings are stored for its token grid.
        keep_head: keep the model's projection head (``head`` / ``attn_pool``). A VFM does
            not need it (``num_classes=0``); a VLM uses it as its image-text projection.
        **overrides: passed to ``timm.create_model`` (``depth``, ``embed_dim``,
            ``num_heads``, ``patch_size``, ``num_classes``, ...), e.g. to build tiny models.
            ``head_bias=False`` makes a linear projection head bias-free (OpenAI CLIP's
            ``proj`` is a plain matrix, as in the released CLIP variant).
            ``drop_path_unit``: what the blocks' stochastic depth (``drop_path_rate``) drops:
            ``'sample'`` (timm's: a whole sample's residual branch) or ``'token'`` (one draw
            per token position, shared by the batch: :class:`TokenDropPath`, as the released
            CLIP tower, whose blocks run sequence-first).

    Returns:
        The timm model (``VisionTransformer`` or ``Eva``) in eval mode.
    """
    if not timm.is_model(name):
        raise ValueError(f'Unknown timm model name {name!r}. Pick a registered timm ViT/EVA name, '
                         "e.g. 'vit_large_patch14_dinov2' or 'eva02_large_patch14_clip_336'.")
    for forbidden in ('pretrained', 'pretrained_cfg_overlay', 'checkpoint_path'):
        if forbidden in overrides:
            raise ValueError(f'{forbidden!r} is not allowed in the tower overrides: weights are '
                             "only loaded from local files named by the config key 'checkpoint'.")
    head_bias = overrides.pop('head_bias', True)
    drop_path_unit = overrides.pop('drop_path_unit', 'sample')
    if drop_path_unit not in ('sample', 'token'):
        raise ValueError(f"drop_path_unit must be 'sample' or 'token', got {drop_path_unit!r}.")
    kwargs = dict(img_size=img_size, dynamic_img_size=True, dynamic_img_pad=True,
                  drop_path_rate=0.0)
    if not keep_head:
        kwargs['num_classes'] = 0
    kwargs.update(overrides)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise ValueError(f'timm model {name!r} rejected the overrides {sorted(overrides)}: '
                         f'{exc}') from exc
    if not isinstance(model, (VisionTransformer, Eva)):
        raise ValueError(f'timm model {name!r} is a {type(model).__name__}; the fused encoder '
                         'supports timm VisionTransformer and Eva towers only.')
    if not head_bias and isinstance(model.head, nn.Linear):
        model.head = nn.Linear(model.head.in_features, model.head.out_features, bias=False)
    if drop_path_unit == 'token':
        for block in model.blocks:
            for name, child in list(block.named_children()):
                if isinstance(child, DropPath):
                    setattr(block, name, TokenDropPath(child.drop_prob, child.scale_by_keep))
    if getattr(model, 'rope_mixed', False):
        raise ValueError(f'timm model {name!r} uses depth-dependent (mixed) RoPE, which is not '
                         'supported by the block-by-block runner.')
    return model.eval()


class TokenDropPath(nn.Module):
    """Stochastic depth with one keep/drop draw per token position, shared by the batch.

    This is what ``timm.layers.drop_path`` does to a sequence-first (L, B, C) tensor, and the
    released CLIP tower runs its blocks sequence-first (``DropPath`` on ``drop_path`` from timm,
    models/backbones/clip/models.py:29-38, applied to both residual branches at :63-65, on the
    (L, B, C) stream made at :328). Here the tokens are batch-first (B, L, C); the same
    draws (same order, same random numbers) give the same result.
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = float(drop_prob)
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((1, x.shape[1]) + (1, ) * (x.ndim - 2)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}, per token'


def tower_patch_size(model: nn.Module) -> int:
    """Square patch size of a tower (raises for non-square patches)."""
    ph, pw = model.patch_embed.patch_size
    if ph != pw:
        raise ValueError(f'Only square patches are supported, got {ph}x{pw}.')
    return int(ph)


def tower_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pixel mean/std (0-1 scale) the tower was trained with, from timm's pretrained_cfg."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    mean = tuple(float(v) for v in cfg.get('mean', OPENAI_CLIP_MEAN))
    std = tuple(float(v) for v in cfg.get('std', OPENAI_CLIP_STD))
    return mean, std


def num_prefix_tokens(model: nn.Module) -> int:
    """Number of prefix (class + register) tokens in front of the patch tokens."""
    return int(model.num_prefix_tokens)


def has_class_token(model: nn.Module) -> bool:
    return getattr(model, 'cls_token', None) is not None


def embed(model: nn.Module, x: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """Patch-embed an image and add position information.

    Args:
        model: a tower from :func:`build_vit_tower`.
        x: (B, 3, H, W) image normalised for this tower; any H, W (padded to the patch size).

    Returns:
        tokens (B, P + h*w, C) with P prefix tokens, the rotary embedding for EVA towers
        (``None`` otherwise) and the token grid ``(h, w)``.
    """
    x = model.patch_embed(x)  # (B, h, w, C): dynamic_img_size keeps NHWC until _pos_embed
    grid = (int(x.shape[1]), int(x.shape[2]))
    if isinstance(model, Eva):
        x, rope = model._pos_embed(x)
    else:
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        rope = None
    x = model.norm_pre(x)
    return x, rope, grid


def run_block(model: nn.Module, index: int, x: torch.Tensor,
              rope: torch.Tensor | None) -> torch.Tensor:
    """Run block ``index`` of a tower on tokens (B, L, C) -> (B, L, C)."""
    block = model.blocks[index]
    if isinstance(model, Eva):
        return block(x, rope=rope)
    return block(x)


def final_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tower's final norm (``norm``; identity for towers that pool with ``fc_norm``)."""
    return model.norm(x)


def embed_dim(model: nn.Module) -> int:
    """Output width of the projection head (:func:`project`)."""
    head = model.head
    if isinstance(head, nn.Linear):
        return int(head.out_features)
    return int(model.embed_dim)


def project(model: nn.Module, x: torch.Tensor, dense_pool: str = 'attention'
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Map final-normed tokens into the image-text embedding space.

    Args:
        model: the VLM tower.
        x: (B, P + N, C) tokens after the final norm (P prefix tokens, N patch tokens).
        dense_pool: for attention-pool heads, how the dense embeddings are made (below).

    Returns:
        global embedding (B, 1, E) and dense patch embeddings (B, N, E).

    * CLIP-style towers with a class token (EVA02-CLIP, OpenAI CLIP): the linear ``head`` is
      applied to every token; token 0 is the global embedding (as the release does).
    * SigLIP (no class token, attention-pool "MAP" head): the global embedding is the
      attention pool over the patch tokens, exactly as SigLIP embeds images. Dense embeddings,
      ``dense_pool='attention'`` (as released): the pool's attention with every patch token
      as a query over all patch tokens, then its residual MLP; ``'value'`` (MaskCLIP): each
      token attends only to itself (value path -> ``proj`` -> residual MLP).
    """
    npt = num_prefix_tokens(model)
    patches = x[:, npt:]
    pool = getattr(model, 'attn_pool', None)
    if pool is not None:
        global_emb = pool(patches).unsqueeze(1)  # latent_len 1, 'token' pool -> (B, C)
        if dense_pool == 'attention':
            dense = _attn_pool_all_queries(pool, patches)
        else:
            dense = _attn_pool_value_path(pool, patches)
        head = model.head
        if not isinstance(head, nn.Identity):
            global_emb, dense = head(model.fc_norm(global_emb)), head(model.fc_norm(dense))
        return global_emb, dense
    if not has_class_token(model):
        raise ValueError('A VLM tower without a class token needs an attention-pool head '
                         "(global_pool='map'), like SigLIP.")
    out = model.head(model.fc_norm(x))
    return out[:, :1], out[:, npt:]


def _attn_pool_all_queries(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``AttentionPoolLatent`` with the tokens themselves as queries: (B, N, C) -> same.

    The released SigLIP local map: the head's multi-head attention with query = key = value =
    tokens, its output projection, then ``out + mlp(norm(out))`` - the pool's own steps with
    ``q(x)`` in place of ``q(latent)``.
    """
    B, N, C = x.shape
    if pool.pos_embed is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    heads = pool.num_heads
    q = pool.q(x).reshape(B, N, heads, C // heads).transpose(1, 2)
    k, v = pool.kv(x).reshape(B, N, 2, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = pool.q_norm(q), pool.k_norm(k)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = pool.proj_drop(pool.proj(out.transpose(1, 2).reshape(B, N, C)))
    if pool.mlp is not None:
        out = out + pool.mlp(pool.norm(out))
    return out


def _attn_pool_value_path(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-token output of an attention pool whose query attends to that token only
    (MaskCLIP): value path -> ``proj`` -> residual MLP. (B, N, C) -> (B, N, C)."""
    B, N, C = x.shape
    if pool.pos_embed is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    v = pool.kv(x).reshape(B, N, 2, C)[:, :, 1]
    out = pool.proj_drop(pool.proj(v))
    if pool.mlp is not None:
        out = out + pool.mlp(pool.norm(out))
    return out


def grid_for(size: int, patch: int, mode: str) -> int:
    """Token-grid side for an image side: ``ceil`` when padding, ``floor`` when cropping."""
    return math.ceil(size / patch) if mode == 'pad' else size // patch

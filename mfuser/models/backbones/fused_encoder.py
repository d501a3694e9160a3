"""The fused VFM x VLM image encoder of MFuser (spec section 3).

A frozen vision foundation model (VFM, e.g. DINOv2-L/14) and a frozen vision-language
model's image tower (VLM, e.g. EVA02-CLIP-L/14) run block by block in lock-step. After block
``i`` of both, the token sequences are concatenated, passed through adapter ``i`` (MVFuser by
default), split at the VFM length and added back to each stream::

    x_vfm, x_vlm = vfm.blocks[i](x_vfm), vlm.blocks[i](x_vlm)
    d = adapter[i](cat([to_vlm(x_vfm), x_vlm], 1), n_first=L_vfm)      # (B, L_vfm + L_vlm, C)
    x_vfm, x_vlm = x_vfm + to_vfm(d[:, :L_vfm]), x_vlm + d[:, L_vfm:]

``to_vlm`` / ``to_vfm`` are Linear projections that exist only when the widths differ.

Outputs (``forward``):

* four feature maps from blocks ``out_indices``: patch tokens of both streams reshaped to
  (B, C_vfm + C_vlm, h, w) and sent through the necks ``fpn1..fpn4`` (4x, 2x, 1x, 1/2x);
* the global embedding (B, 1, E) and dense embeddings (B, E, h, w): the VLM's projection head
  applied to ``vlm.norm(x_vlm) + vfm.norm(x_vfm)`` (token 0 / patch tokens).

Only the adapters, the width projections and the necks train; both towers are frozen
(``requires_grad=False``). As released, the frozen towers follow the model's train/eval mode
(the CLIP tower's stochastic depth is live while training); ``eval_frozen_towers=True`` keeps
them in eval mode instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.utils.checkpoint import checkpoint

from . import vit_tower as vt

__all__ = ['FusedEncoder', 'build_fpn_necks', 'DEFAULT_VFM', 'DEFAULT_VLM']

DEFAULT_VFM = dict(name='vit_large_patch14_dinov2', checkpoint=None)
DEFAULT_VLM = dict(name='eva02_large_patch14_clip_336', checkpoint=None)
DEFAULT_ADAPTER = dict(type='MVFuser', d_state=16)


def build_fpn_necks(channels: int, norm_cfg: dict) -> nn.ModuleList:
    """The four multi-scale necks of the reference (BEiT/ViTDet style), as ``fpn1..fpn4``.

    fpn1: ConvT(2x) -> norm -> GELU -> ConvT(2x)  (4x up; keys ``fpn1.0``, ``fpn1.1``, ``fpn1.3``)
    fpn2: ConvT(2x)                                (2x up; key ``fpn2.0``)
    fpn3: identity                                 (1x)
    fpn4: MaxPool(2)                               (1/2x; a 1-token side stays 1)
    """
    def up2() -> nn.ConvTranspose2d:
        return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)

    fpn1 = nn.Sequential(up2(), build_norm_layer(norm_cfg, channels)[1], nn.GELU(), up2())
    fpn2 = nn.Sequential(up2())
    fpn3 = nn.Identity()
    fpn4 = HalfMaxPool()
    return nn.ModuleList([fpn1, fpn2, fpn3, fpn4])


class HalfMaxPool(nn.MaxPool2d):
    """``MaxPool2d(2)``; a side of a single token (tiny slide crops) is kept, not dropped."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 2:
            return nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)
        return super().forward(x)


@MODELS.register_module()
class FusedEncoder(BaseModule):
    """Frozen VFM and VLM image towers fused by one adapter per block pair.

    Args:
        vfm: the vision foundation model: ``dict(name=<timm name>, checkpoint=<local file or
            None>, **timm_overrides)``. Default DINOv2-L/14 (``vit_large_patch14_dinov2``).
            Also DINOv2-S/B (``vit_small_patch14_dinov2``, ``vit_base_patch14_dinov2``).
        vlm: the VLM image tower, same form. Default EVA02-CLIP-L/14-336
            (``eva02_large_patch14_clip_336``); also OpenAI CLIP ViT-L/14-336
            (``vit_large_patch14_clip_quickgelu_336``: QuickGELU, as OpenAI trained it) and
            SigLIP ViT-L/16-384 (``vit_large_patch16_siglip_384``, see ``vit_tower.project`` for
            how its class-token-free global/dense embeddings are made).
            ``timm_overrides`` (``depth``, ``embed_dim``, ``num_heads``, ``patch_size``,
            ``num_classes`` = projection dim of CLIP-style heads, ...) go to
            ``timm.create_model``; tests use them for tiny towers.
        adapter: config of the per-block adapter, built from ``mmseg.registry.MODELS`` with
            ``d_model`` set to the VLM width and called as ``adapter(x, n_first=L_vfm)`` on
            (B, L_vfm + L_vlm, C). ``None`` disables fusion (plain concatenation ablation).
        img_size: training crop (int or (H, W)). Position embeddings are stored (and
            pretrained ones resized) for its token grid; other sizes are resampled on the fly.
        out_indices: four block indices whose outputs feed ``fpn1..fpn4``.
        grid_mode: ``'pad'`` (default) zero-pads each normalised input at the bottom/right to
            a multiple of the patch size (512 -> 518, 37x37 tokens, every pixel seen);
            ``'floor'`` crops the remainder instead, like a stride-p convolution does in the
            reference implementation (512 -> 36x36 tokens, the last 8 pixel rows/cols unseen).
        input_norm: ``dict(mean=[...], std=[...])`` the data preprocessor normalised with
            (0-255 scale). ``None``: the VLM's own statistics (CLIP mean/std for EVA/CLIP,
            0.5/0.5 for SigLIP) - the data preprocessor should then use ``self.input_mean`` /
            ``self.input_std``. The VFM branch converts on the fly to its own statistics.
        norm_cfg: norm of ``fpn1`` (mmcv ``build_norm_layer``). Default ``BN``: it works on a
            CPU and single-process runs; for multi-GPU training set ``dict(type='SyncBN')`` (or
            mmengine's ``sync_bn='torch'``), as the reference does.
        with_cp: activation checkpointing per block pair while training (saves memory).
        resample: how pretrained position embeddings and patch kernels are resized to the
            towers' grid and patch size: ``'release'`` (plain ``F.interpolate`` with the tower's
            ``interpolation``, as the official code) or ``'timm'`` (antialiased, pseudo-inverse
            patch resize); see :data:`mfuser.models.pretrained.RESAMPLE_MODES`. A tower dict
            may set ``interpolation`` (default ``'bicubic'``; the release resizes OpenAI CLIP
            and SigLIP with ``'bilinear'``).
        adapter_proj: Linear projections around the adapters, named as released:
            ``adapter_proj1[i]`` maps the VFM tokens into the adapter, ``adapter_proj2[i]`` maps
            the adapter's VFM half back, ``adapter_proj3`` maps the final VFM tokens. ``None``
            (default): only when the widths differ; ``True``: always (the released CLIP variant).
        final: how the image-text embeddings are made from the last tokens ``x`` (VLM) and ``d``
            (VFM). ``'norm_sum'`` (EVA02 and SigLIP as released):
            ``head(vlm.norm(x) + vfm.norm(d))``; ``'clip'`` (CLIP as released):
            ``head(vlm.norm(x + adapter_proj3(d)))``.
        dense_pool: dense embeddings of a VLM with an attention-pool head (SigLIP):
            ``'attention'`` (as released: the pool's attention with every token as a query,
            then its residual MLP) or ``'value'`` (MaskCLIP: each token attends to itself).
        double_class_embedding: when loading an OpenAI CLIP file, store twice its class
            embedding as the class token (the released CLIP tower adds it twice).
        eval_frozen_towers: keep both frozen towers in eval mode under ``.train()`` (no
            stochastic depth or dropout in them while training). Default ``False``, as released:
            the official segmentors only set ``requires_grad=False`` on the towers
            (``models/segmentors/mfuser_clip.py:65-72``) and never put them in eval mode, so the
            CLIP tower trains with its drop path 0.1 live (weights still frozen). Towers
            without stochastic layers (EVA02, SigLIP, DINOv2 as configured) compute the same
            in either mode.
        init_cfg: mmengine init config (unused for the towers; pretrained weights come from
            ``vfm.checkpoint`` / ``vlm.checkpoint``, loaded at construction time).
    """

    def __init__(self,
                 vfm: dict | None = None,
                 vlm: dict | None = None,
                 adapter: dict | None = DEFAULT_ADAPTER,
                 img_size: int | Sequence[int] = 512,
                 out_indices: Sequence[int] = (7, 11, 15, 23),
                 grid_mode: str = 'pad',
                 input_norm: dict | None = None,
                 norm_cfg: dict | None = None,
                 with_cp: bool = False,
                 resample: str = 'release',
                 adapter_proj: bool | None = None,
                 final: str = 'norm_sum',
                 dense_pool: str = 'attention',
                 double_class_embedding: bool = False,
                 eval_frozen_towers: bool = False,
                 init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        vfm = dict(DEFAULT_VFM if vfm is None else vfm)
        vlm = dict(DEFAULT_VLM if vlm is None else vlm)
        for key, cfg in (('vfm', vfm), ('vlm', vlm)):
            if 'name' not in cfg:
                raise ValueError(f"FusedEncoder: '{key}' needs a timm model 'name', got {cfg}.")
        if grid_mode not in ('pad', 'floor'):
            raise ValueError(f"grid_mode must be 'pad' or 'floor', got {grid_mode!r}.")
        if final not in ('norm_sum', 'clip'):
            raise ValueError(f"final must be 'norm_sum' or 'clip', got {final!r}.")
        if dense_pool not in ('attention', 'value'):
            raise ValueError(f"dense_pool must be 'attention' or 'value', got {dense_pool!r}.")
        self.final, self.dense_pool = final, dense_pool
        self.eval_frozen_towers = bool(eval_frozen_towers)
        self.grid_mode = grid_mode
        self.with_cp = bool(with_cp)
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(img_hw) != 2:
            raise ValueError(f'img_size must be an int or (H, W), got {img_size!r}.')
        self.img_size = tuple(int(s) for s in img_hw)

        vfm_name, vfm_ckpt = vfm.pop('name'), vfm.pop('checkpoint', None)
        vlm_name, vlm_ckpt = vlm.pop('name'), vlm.pop('checkpoint', None)
        vfm_interp = vfm.pop('interpolation', 'bicubic')
        vlm_interp = vlm.pop('interpolation', 'bicubic')
        from ..pretrained import load_vision_tower, require_file
        for key, name, path in (('vfm', vfm_name, vfm_ckpt), ('vlm', vlm_name, vlm_ckpt)):
            if path is not None:  # fail before building 2 x 300M parameters
                require_file(path, f'{key}.checkpoint', name)
        self.vlm_name, self.vfm_name = vlm_name, vfm_name

        # The VLM fixes the token grid; the VFM takes the VLM's patch size (its patch-embedding
        # kernel is resized when weights load, as ``resample`` says: by default a plain
        # F.interpolate with the tower's interpolation, as released; 'timm': timm's
        # resample_patch_embed, a pseudo-inverse resize).
        if 'patch_size' in vfm:
            raise ValueError("Leave 'patch_size' out of the vfm config: the VFM always uses the "
                             "VLM's patch size so that both towers share one token grid.")
        self.vlm = vt.build_vit_tower(vlm_name, self.img_size, keep_head=True, **vlm)
        self.patch_size = vt.tower_patch_size(self.vlm)
        tower_img = tuple(vt.grid_for(s, self.patch_size, grid_mode) * self.patch_size
                          for s in self.img_size)
        if min(tower_img) < self.patch_size:
            raise ValueError(f'img_size {self.img_size} is smaller than one patch.')
        if tower_img != tuple(self.vlm.patch_embed.img_size):
            self.vlm.set_input_size(img_size=tower_img)
        self.vfm = vt.build_vit_tower(vfm_name, tower_img, keep_head=False,
                                      patch_size=self.patch_size, **vfm)

        self.depth = len(self.vlm.blocks)
        if len(self.vfm.blocks) != self.depth:
            raise ValueError(
                f'FusedEncoder: the VFM ({vfm_name}) has {len(self.vfm.blocks)} blocks but the '
                f'VLM ({vlm_name}) has {self.depth}; the towers run in lock-step and need equal '
                "depth (set 'depth' in the vfm/vlm overrides or pick a matching pair).")
        out_indices = tuple(int(i) for i in out_indices)
        if len(out_indices) != 4 or any(not 0 <= i < self.depth for i in out_indices):
            raise ValueError(f'out_indices must be four block indices in [0, {self.depth}), got '
                             f'{out_indices} (the defaults (7, 11, 15, 23) need depth 24).')
        self.out_indices = out_indices

        self.vfm_width = int(self.vfm.embed_dim)
        self.vlm_width = int(self.vlm.embed_dim)
        self.embed_dim = vt.embed_dim(self.vlm)
        channels = self.vfm_width + self.vlm_width
        self.out_channels = [channels] * 4

        if adapter_proj is None:
            adapter_proj = self.vfm_width != self.vlm_width
        if final == 'clip' and not adapter_proj:
            raise ValueError("final='clip' adds adapter_proj3(d): set adapter_proj=True.")
        if adapter_proj:  # default nn.Linear init, as released
            self.adapter_proj1 = nn.ModuleList(
                nn.Linear(self.vfm_width, self.vlm_width) for _ in range(self.depth))
            self.adapter_proj2 = nn.ModuleList(
                nn.Linear(self.vlm_width, self.vfm_width) for _ in range(self.depth))
            self.adapter_proj3 = nn.Linear(self.vfm_width, self.vlm_width)
        else:
            self.adapter_proj1 = self.adapter_proj2 = self.adapter_proj3 = None

        if adapter is None:
            self.adapter = None
        else:
            adapter = dict(adapter)
            if 'd_model' in adapter and adapter['d_model'] != self.vlm_width:
                raise ValueError(f"adapter d_model={adapter['d_model']} must equal the VLM width "
                                 f'{self.vlm_width}; leave it out, it is set automatically.')
            adapter['d_model'] = self.vlm_width
            self.adapter = nn.ModuleList(MODELS.build(dict(adapter)) for _ in range(self.depth))

        norm_cfg = dict(type='BN', requires_grad=True) if norm_cfg is None else dict(norm_cfg)
        self.fpn1, self.fpn2, self.fpn3, self.fpn4 = build_fpn_necks(channels, norm_cfg)

        # Input statistics: the data preprocessor normalises for the VLM; the VFM branch maps
        # x_vfm = (x * std_in + mean_in - mean_vfm) / std_vfm, in that order (as released),
        # with the statistics on the 0-255 scale.
        vlm_mean, vlm_std = vt.tower_mean_std(self.vlm)
        vfm_mean, vfm_std = vt.tower_mean_std(self.vfm)
        if input_norm is None:
            self.input_mean = [m * 255.0 for m in vlm_mean]
            self.input_std = [s * 255.0 for s in vlm_std]
        else:
            self.input_mean = [float(v) for v in input_norm['mean']]
            self.input_std = [float(v) for v in input_norm['std']]
        for name, values in (('in_mean', self.input_mean), ('in_std', self.input_std),
                             ('vfm_mean', [m * 255.0 for m in vfm_mean]),
                             ('vfm_std', [s * 255.0 for s in vfm_std])):
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)

        # Pretrained weights from local files (never downloaded), then freeze the towers.
        if vfm_ckpt is not None:
            load_vision_tower(self.vfm, vfm_ckpt, config_key='model.backbone.vfm.checkpoint',
                              role='vfm', resample=resample, interpolation=vfm_interp)
        if vlm_ckpt is not None:
            load_vision_tower(self.vlm, vlm_ckpt, config_key='model.backbone.vlm.checkpoint',
                              role='vlm', resample=resample, interpolation=vlm_interp,
                              double_class_embedding=double_class_embedding)
        for tower in (self.vfm, self.vlm):
            tower.requires_grad_(False)
            tower.eval()

    # ------------------------------------------------------------------ mode / init
    def train(self, mode: bool = True) -> FusedEncoder:
        """Set train/eval mode; the frozen towers follow it unless ``eval_frozen_towers``."""
        super().train(mode)
        if self.eval_frozen_towers:
            self.vfm.eval()
            self.vlm.eval()
        return self

    def init_weights(self) -> None:
        """Initialise the trainable parts only.

        The towers hold pretrained (or deliberately random) weights from construction and
        must not be re-initialised by mmengine's recursive ``init_weights`` (timm models have
        their own ``init_weights`` that would re-draw them).
        """
        trainable = [m for m in (self.adapter, self.adapter_proj1, self.adapter_proj2,
                                 self.adapter_proj3, self.fpn1, self.fpn2) if m is not None]
        for module in trainable:
            for sub in module.modules():
                if sub is not module and hasattr(sub, 'init_weights') and \
                        not getattr(sub, 'is_init', False) and isinstance(sub, BaseModule):
                    sub.init_weights()
        self._is_init = True

    # ------------------------------------------------------------------ forward
    def _block_pair(self, index: int, x_vfm: torch.Tensor, x_vlm: torch.Tensor,
                    rope_vfm: torch.Tensor | None, rope_vlm: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index`` of both towers, then adapter ``index`` across the two streams."""
        x_vfm = vt.run_block(self.vfm, index, x_vfm, rope_vfm)
        x_vlm = vt.run_block(self.vlm, index, x_vlm, rope_vlm)
        if self.adapter is None:
            return x_vfm, x_vlm
        n_vfm = x_vfm.shape[1]
        vfm_in = x_vfm if self.adapter_proj1 is None else self.adapter_proj1[index](x_vfm)
        delta = self.adapter[index](torch.cat([vfm_in, x_vlm], dim=1), n_first=n_vfm)
        d_vfm, d_vlm = delta[:, :n_vfm], delta[:, n_vfm:]
        if self.adapter_proj2 is not None:
            d_vfm = self.adapter_proj2[index](d_vfm)
        return x_vfm + d_vfm, x_vlm + d_vlm

    def vfm_input(self, img: torch.Tensor) -> torch.Tensor:
        """Re-normalise a VLM-normalised image (B, 3, H, W) for the VFM."""
        dt = img.dtype
        raw = img * self.in_std.to(dt) + self.in_mean.to(dt)
        return (raw - self.vfm_mean.to(dt)) / self.vfm_std.to(dt)

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f'FusedEncoder expects images (B, 3, H, W), got {tuple(img.shape)}.')
        p = self.patch_size
        H, W = img.shape[-2:]
        if self.grid_mode == 'floor':
            if H < p or W < p:
                raise ValueError(f'Input {H}x{W} is smaller than one {p}x{p} patch.')
            img = img[..., :H // p * p, :W // p * p]
        return img

    def forward(self, img: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Encode images normalised for the VLM.

        Args:
            img: (B, 3, H, W), any H and W.

        Returns:
            ``(feats, global_emb, dense_emb)``: ``feats`` a list of four maps
            (B, C_vfm + C_vlm, 4h, 4w), (.., 2h, 2w), (.., h, w), (.., h//2, w//2) with
            (h, w) the token grid (ceil(H/p), ceil(W/p)) in ``'pad'`` mode; ``global_emb``
            (B, 1, E); ``dense_emb`` (B, E, h, w).
        """
        img = self._prepare(img)
        B = img.shape[0]
        x_vfm_img = self.vfm_input(img)
        x_vfm, rope_vfm, grid = vt.embed(self.vfm, x_vfm_img)
        x_vlm, rope_vlm, grid_vlm = vt.embed(self.vlm, img)
        if grid != grid_vlm:  # cannot happen with a shared patch size; guard anyway
            raise RuntimeError(f'token grids differ: VFM {grid} vs VLM {grid_vlm}')
        h, w = grid
        p_vfm, p_vlm = vt.num_prefix_tokens(self.vfm), vt.num_prefix_tokens(self.vlm)

        maps: list[torch.Tensor | None] = [None] * 4
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for i in range(self.depth):
            if use_cp:
                x_vfm, x_vlm = checkpoint(self._block_pair, i, x_vfm, x_vlm, rope_vfm, rope_vlm,
                                          use_reentrant=False)
            else:
                x_vfm, x_vlm = self._block_pair(i, x_vfm, x_vlm, rope_vfm, rope_vlm)
            for k, index in enumerate(self.out_indices):
                if index == i:
                    maps[k] = torch.cat([self._to_map(x_vfm[:, p_vfm:], h, w),
                                         self._to_map(x_vlm[:, p_vlm:], h, w)], dim=1)
        necks = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        feats = [neck(m) for neck, m in zip(necks, maps)]

        global_emb, dense = self._embeddings(x_vfm, x_vlm, p_vfm, p_vlm)
        dense = dense.transpose(1, 2).reshape(B, -1, h, w)
        return feats, global_emb, dense

    def _embeddings(self, x_vfm: torch.Tensor, x_vlm: torch.Tensor, p_vfm: int, p_vlm: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final tokens of both towers -> the VLM's projection head (see ``final``).

        Patch tokens are summed position by position; a VLM class token gets the VFM class
        token added (when the VFM has one). VFM register tokens are not used.
        """
        if self.final == 'clip':  # head(norm(x + adapter_proj3(d))), as the released CLIP
            d = self.adapter_proj3(x_vfm)
            fused = self._sum_tokens(x_vlm, d, p_vfm, p_vlm)
            return vt.project(self.vlm, vt.final_norm(self.vlm, fused), self.dense_pool)
        n_vlm = vt.final_norm(self.vlm, x_vlm)
        n_vfm = vt.final_norm(self.vfm, x_vfm)
        if self.adapter_proj3 is not None:
            n_vfm = self.adapter_proj3(n_vfm)
        return vt.project(self.vlm, self._sum_tokens(n_vlm, n_vfm, p_vfm, p_vlm),
                          self.dense_pool)

    def _sum_tokens(self, x_vlm: torch.Tensor, x_vfm: torch.Tensor, p_vfm: int, p_vlm: int
                    ) -> torch.Tensor:
        """VLM tokens plus the VFM's: patch tokens position by position, class tokens."""
        parts = []
        if p_vlm:
            prefix = x_vlm[:, :p_vlm]
            if vt.has_class_token(self.vlm) and vt.has_class_token(self.vfm):
                prefix = torch.cat([prefix[:, :1] + x_vfm[:, :1], prefix[:, 1:]], dim=1)
            parts.append(prefix)
        parts.append(x_vlm[:, p_vlm:] + x_vfm[:, p_vfm:])
        return torch.cat(parts, dim=1)

    @staticmethod
    def _to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, C, h, w)."""
        B, N, C = tokens.shape
        return tokens.transpose(1, 2).reshape(B, C, h, w)


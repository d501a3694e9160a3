"""Text-aware multi-scale deformable-attention pixel decoder.

mmdet's Mask2Former pixel decoder (``MSDeformAttnPixelDecoder``) with one change per
encoder layer: after the deformable self-attention over the three coarsest levels, the
pixel tokens cross-attend to the projected class-text embeddings (plus a learnable text
position embedding), so the pixel features are conditioned on the classes being queried.
The FPN-style lateral fusion with the finest level that yields the mask features is
mmdet's.

Adapted from mmdet 3.3 (Apache-2.0): ``MSDeformAttnPixelDecoder.forward``
(mmdet/models/layers/msdeformattn_pixel_decoder.py) and
``DeformableDetrTransformerEncoderLayer.forward``; with ``text=None`` and ``post_norm=False``
the forward is mmdet's own, which tests/test_head.py checks against mmdet's module.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.layers import DeformableDetrTransformerEncoderLayer, Mask2FormerTransformerEncoder
from mmdet.models.layers.msdeformattn_pixel_decoder import MSDeformAttnPixelDecoder
from mmengine.config import ConfigDict
from mmengine.model import ModuleList
from mmseg.registry import MODELS

from .deform_attn import PortableMSDeformAttn


class TextDeformableEncoderLayer(DeformableDetrTransformerEncoderLayer):
    """Deformable self-attention -> text cross-attention -> FFN, post-norm.

    Shapes: query (B, N, C), text (B, K, C), text_pos (B, K, C) -> (B, N, C).
    """

    def __init__(self, *args, text_cross_attn_cfg: dict | None = None, **kwargs):
        self.text_cross_attn_cfg = dict(text_cross_attn_cfg or {})
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        self.self_attn = PortableMSDeformAttn(**self.self_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        cross_cfg = dict(embed_dims=self.embed_dims, num_heads=self.self_attn.num_heads,
                         batch_first=True)
        cross_cfg.update(self.text_cross_attn_cfg)
        self.cross_attn = MultiheadAttention(**cross_cfg)
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = ModuleList(
            [build_norm_layer(self.norm_cfg, self.embed_dims)[1] for _ in range(3)])

    def forward(self, query, query_pos, key_padding_mask, text=None, text_pos=None,
                **kwargs):
        query = self.self_attn(query=query, key=query, value=query, query_pos=query_pos,
                               key_padding_mask=key_padding_mask, **kwargs)
        query = self.norms[0](query)
        if text is not None:
            query = self.cross_attn(query=query, key=text, value=text, query_pos=query_pos,
                                    key_pos=text_pos)
            query = self.norms[1](query)
        query = self.ffn(query)
        return self.norms[2](query)


class TextMSDeformAttnEncoder(Mask2FormerTransformerEncoder):
    """Stack of :class:`TextDeformableEncoderLayer` (extra kwargs reach every layer).

    Args:
        post_norm: apply a final LayerNorm (``post_norm``) to the last layer's output, as the
            release does (its encoder is an mmcv-1.x ``DetrTransformerDecoder`` with
            ``return_intermediate=True``, which always applies its ``post_norm``). ``False``
            gives mmdet's Mask2Former encoder (no final norm).
    """

    def __init__(self, *args, post_norm: bool = True, **kwargs):
        self.use_post_norm = bool(post_norm)
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        self.layers = ModuleList(
            [TextDeformableEncoderLayer(**self.layer_cfg) for _ in range(self.num_layers)])
        self.embed_dims = self.layers[0].embed_dims
        self.post_norm = nn.LayerNorm(self.embed_dims) if self.use_post_norm else None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        query = super().forward(*args, **kwargs)
        return query if self.post_norm is None else self.post_norm(query)


@MODELS.register_module()
class TextMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """Pixel decoder whose encoder layers also attend to class-text embeddings.

    Args:
        text_dim: width of the incoming text embeddings (E, 768 for EVA02-CLIP-L).
        num_classes: K, the number of text embeddings (for the text position embedding).
        Other arguments: see mmdet's ``MSDeformAttnPixelDecoder``.

    forward(feats, text): feats are 4 maps (B, C_i, H_i, W_i) finest first, text (B, K, E)
    -> mask_features (B, out_channels, H_0, W_0) and 3 multi-scale maps (coarsest first).
    """

    def __init__(self, *, text_dim: int, num_classes: int, encoder: dict, **kwargs):
        encoder = ConfigDict(copy.deepcopy(encoder))
        plain = copy.deepcopy(encoder)
        plain.layer_cfg.pop('text_cross_attn_cfg', None)
        plain.pop('post_norm', None)
        super().__init__(encoder=plain, **kwargs)
        self.encoder = TextMSDeformAttnEncoder(**encoder)
        feat_channels = self.level_encoding.embedding_dim
        self.text_proj = nn.Linear(text_dim, feat_channels)
        self.text_pos_embed = nn.Embedding(num_classes, feat_channels)

    def init_weights(self) -> None:
        super().init_weights()
        for m in self.encoder.layers.modules():
            if isinstance(m, PortableMSDeformAttn):
                m.init_weights()
        nn.init.trunc_normal_(self.text_pos_embed.weight, std=0.02)

    def forward(self, feats: list[torch.Tensor], text: torch.Tensor | None):
        batch_size = feats[0].shape[0]
        inputs, pos_list, shapes, refs = [], [], [], []
        for i in range(self.num_encoder_levels):
            level_idx = self.num_input_levels - i - 1
            feat = feats[level_idx]
            projected = self.input_convs[i](feat)
            h, w = feat.shape[-2:]
            no_pad = feat.new_zeros((batch_size, h, w), dtype=torch.bool)
            pos = self.postional_encoding(no_pad) + self.level_encoding.weight[i].view(
                1, -1, 1, 1)
            ref = self.point_generator.single_level_grid_priors(
                (h, w), level_idx, device=feat.device)
            factor = feat.new_tensor([w, h]) * self.strides[level_idx]
            refs.append((ref / factor).to(feat.dtype))
            inputs.append(projected.flatten(2).transpose(1, 2))
            pos_list.append(pos.flatten(2).transpose(1, 2))
            shapes.append((h, w))
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=feats[0].device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = torch.cat(refs, 0)[None, :, None].repeat(
            batch_size, 1, self.num_encoder_levels, 1)
        if text is None:  # no text conditioning: mmdet's pixel decoder
            text_tokens = text_pos = None
        else:
            text_tokens = self.text_proj(text)
            text_pos = self.text_pos_embed.weight.unsqueeze(0).expand(batch_size, -1, -1)
        memory = self.encoder(
            query=torch.cat(inputs, 1), query_pos=torch.cat(pos_list, 1),
            key_padding_mask=None, spatial_shapes=spatial_shapes,
            reference_points=reference_points, level_start_index=level_start_index,
            valid_ratios=reference_points.new_ones((batch_size, self.num_encoder_levels, 2)),
            text=text_tokens, text_pos=text_pos)
        memory = memory.transpose(1, 2)
        outs = torch.split(memory, [h * w for h, w in shapes], dim=-1)
        outs = [x.reshape(batch_size, -1, h, w) for x, (h, w) in zip(outs, shapes)]
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode='bilinear',
                                        align_corners=False)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]

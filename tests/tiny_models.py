"""Tiny MFuser configurations for the tests (random weights, seconds on a CPU)."""
from __future__ import annotations

import copy

NUM_CLASSES = 5
CLASS_NAMES = ('road', 'building', 'sky', 'car', 'person')


def tiny_head_cfg(num_classes=NUM_CLASSES, text_dim=32, in_ch=16, feat=32, **kw):
    """A 1-layer pixel decoder, 3-layer transformer decoder text-queried head."""
    cfg = dict(
        type='TextQueriedMask2FormerHead', in_channels=[in_ch] * 4, strides=[4, 8, 16, 32],
        feat_channels=feat, out_channels=feat, num_classes=num_classes, text_dim=text_dim,
        pixel_decoder=dict(
            num_outs=3, norm_cfg=dict(type='GN', num_groups=8), act_cfg=dict(type='ReLU'),
            encoder=dict(num_layers=1, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat, num_heads=4, num_levels=3, num_points=2,
                                   im2col_step=64, dropout=0.0, batch_first=True),
                text_cross_attn_cfg=dict(embed_dims=feat, num_heads=4, batch_first=True),
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=64, num_fcs=2,
                             ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=feat // 2, normalize=True)),
        positional_encoding=dict(num_feats=feat // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True, num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat, num_heads=4, dropout=0.0,
                                   batch_first=True),
                cross_attn_cfg=dict(embed_dims=feat, num_heads=4, dropout=0.0,
                                    batch_first=True),
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=64, num_fcs=2,
                             ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))),
            init_cfg=None),
        train_cfg=dict(num_points=256, oversample_ratio=3.0, importance_sample_ratio=0.75))
    cfg.update(kw)
    return cfg


def tiny_mfuser_cfg(width=32, embed_dim=24, depth=2, crop=(56, 56), patch=8, **kw):
    """The whole MFuser (fused encoder, text encoder, MTEnhancer, head) at toy size."""
    tower = dict(depth=depth, embed_dim=width, num_heads=2)
    cfg = dict(
        type='MFuser',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[122.77, 116.75, 104.09],
            std=[68.50, 66.63, 70.32], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
            size=crop),
        backbone=dict(
            type='FusedEncoder',
            vfm=dict(name='vit_small_patch14_dinov2', **tower),
            vlm=dict(name='eva02_large_patch14_clip_336', num_classes=embed_dim,
                     patch_size=patch, **tower),
            adapter=dict(type='MVFuser', d_state=4),
            img_size=crop, out_indices=(0, 1, 1, depth - 1)),
        text_encoder=dict(type='CoOpTextEncoder', model_name='EVA02-L-14-336',
                          class_names=CLASS_NAMES, text_cfg=dict(width=32, heads=2, layers=1),
                          embed_dim=embed_dim, n_ctx=4),
        context_decoder=dict(type='MTEnhancerStack', visual_dim=embed_dim,
                             transformer_width=32, transformer_heads=2, dropout=0.0),
        n_ctx=4,
        decode_head=tiny_head_cfg(text_dim=embed_dim, in_ch=2 * width),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    cfg.update(kw)
    return copy.deepcopy(cfg)

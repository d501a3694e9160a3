# The embedded demo: a small MFuser trained on the CPU in minutes on generated data.
# Source: the synthetic game-like 'gta' domain; targets: the unseen synthetic 'cityscapes'
# (grey, overcast), 'bdd100k' (dark) and 'mapillary' (bright) domains, in their real formats.
#
#   python tools/make_synthetic_data.py --out data/synthetic --convert
#   python tools/train.py configs/mfuser_tiny_synthetic.py
#
# Same architecture as the paper's model, shrunk: 4-block towers of width 96 (random weights,
# frozen - no pretrained files exist offline), patch 16, MVFusers after every block pair, the
# MTEnhancer, a 1-layer text-cross-attending pixel decoder and a 3-layer text-queried decoder.
_base_ = [
    './_base_/models/mfuser_dinov2_eva02.py',
    './_base_/datasets/dg_synthetic.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]
crop_size = (224, 224)
width = 96
embed_dim = 64
feat = 64
tower = dict(depth=4, embed_dim=width, num_heads=4, patch_size=16)
dinov2_checkpoint = eva02_checkpoint = None  # random towers: no pretrained files
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        vfm=dict(_delete_=True, name='vit_small_patch14_dinov2', depth=4, embed_dim=width,
                 num_heads=4, checkpoint=dinov2_checkpoint),
        vlm=dict(_delete_=True, name='eva02_large_patch14_clip_336', checkpoint=eva02_checkpoint,
                 num_classes=embed_dim, **tower),
        adapter=dict(type='MVFuser', d_state=8, d_conv=3, expand=1),
        img_size=crop_size,
        out_indices=(0, 1, 2, 3)),
    text_encoder=dict(
        model_name='EVA02-L-14-336',
        checkpoint=eva02_checkpoint,
        text_cfg=dict(width=64, heads=2, layers=2),
        embed_dim=embed_dim),
    context_decoder=dict(visual_dim=embed_dim, transformer_width=64, transformer_heads=2),
    decode_head=dict(
        in_channels=[2 * width] * 4,
        feat_channels=feat,
        out_channels=feat,
        text_dim=embed_dim,
        pixel_decoder=dict(
            norm_cfg=dict(type='GN', num_groups=8),
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=feat, num_heads=4, num_levels=3, num_points=4,
                                       im2col_step=64, dropout=0.0, batch_first=True),
                    text_cross_attn_cfg=dict(embed_dims=feat, num_heads=4, batch_first=True),
                    ffn_cfg=dict(embed_dims=feat, feedforward_channels=128, num_fcs=2,
                                 ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=feat // 2, normalize=True)),
        positional_encoding=dict(num_feats=feat // 2, normalize=True),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat, num_heads=4, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=feat, num_heads=4, dropout=0.0, batch_first=True),
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=256, num_fcs=2,
                             ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True)))),
        train_cfg=dict(num_points=3136, oversample_ratio=3.0, importance_sample_ratio=0.75)),
    test_cfg=dict(mode='whole', crop_size=crop_size, stride=(149, 149)))

# A short, CPU-sized schedule: higher lr (random towers, tiny heads), 40-iteration warm-up,
# validation on the three unseen domains every val_interval iterations (for the curves).
iters = 600
warmup_iters = 40
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=warmup_iters,
         end=iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=200)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=200, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))

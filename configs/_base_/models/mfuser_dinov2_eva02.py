# MFuser with DINOv2-L/14 (VFM) x EVA02-CLIP-L/14-336 (VLM), spec sections 2-5.
# Pretrained weights are local files (nothing is downloaded), named below: put them under
# checkpoints/ or point the keys elsewhere, e.g. --cfg-options model.backbone.vfm.checkpoint=...
# (model.backbone.vfm.checkpoint, model.backbone.vlm.checkpoint, model.text_encoder.checkpoint).
# Swap the VLM by overriding vlm.name / checkpoint + text_encoder.model_name / checkpoint, n_ctx
# (+ embed_dim-dependent widths: decode_head.text_dim, context_decoder.visual_dim); see
# mfuser_dinov2_clip.py.
crop_size = (512, 512)
num_classes = 19
embed_dim = 768  # VLM projection width E (EVA02-CLIP-L: 768)
clip_mean = [122.7709383, 116.7460125, 104.09373615]  # CLIP mean x 255, RGB
clip_std = [68.5005327, 66.6321579, 70.32316305]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=clip_mean,
    std=clip_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
feat = 256
dinov2_checkpoint = 'checkpoints/dinov2_vitl14_pretrain.pth'
eva02_checkpoint = 'checkpoints/EVA02_CLIP_L_336_psz14_s6B.pt'  # visual + text towers
n_ctx = 8  # learnable context tokens: the prompt learner's and the text encoder's (one value)
model = dict(
    type='MFuser',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='FusedEncoder',
        vfm=dict(name='vit_large_patch14_dinov2', checkpoint=dinov2_checkpoint),
        vlm=dict(name='eva02_large_patch14_clip_336', checkpoint=eva02_checkpoint),
        adapter=dict(type='MVFuser', d_state=16, d_conv=3, expand=1),
        img_size=crop_size,
        out_indices=(7, 11, 15, 23),
        grid_mode='floor',  # 512 -> 36x36 tokens (1297 with cls) as the reference; 'pad': 37x37
        input_norm=dict(mean=clip_mean, std=clip_std),
        norm_cfg=dict(type='BN', requires_grad=True),  # SyncBN for multi-GPU runs
        with_cp=False),
    text_encoder=dict(
        type='CoOpTextEncoder',
        model_name='EVA02-L-14-336',
        class_names='cityscapes',
        n_ctx=n_ctx,
        name_context_length=5,
        checkpoint=eva02_checkpoint),
    context_decoder=dict(
        type='MTEnhancerStack',
        visual_dim=embed_dim,
        transformer_width=256,
        transformer_heads=4,
        transformer_layers=1,
        dropout=0.1),
    n_ctx=n_ctx,
    tau=0.07,
    # score-map CE on score_map / tau, averaged over ALL pixels (ignored ones included), as released
    loss_vl=dict(type='CrossEntropyLoss', loss_weight=1.0, avg_non_ignore=False),
    gamma_init='reference',
    decode_head=dict(
        type='TextQueriedMask2FormerHead',
        in_channels=[2048] * 4,
        strides=[4, 8, 16, 32],
        feat_channels=feat,
        out_channels=feat,
        num_classes=num_classes,
        text_dim=embed_dim,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='TextMSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=feat, num_heads=8, num_levels=3, num_points=4,
                                       im2col_step=64, dropout=0.0, batch_first=True),
                    text_cross_attn_cfg=dict(embed_dims=feat, num_heads=8, batch_first=True),
                    # 2048 as released (its config's ffn_cfgs say 1024, but mmcv 1.x lets the
                    # layer-level feedforward_channels=2048 override it; the weights are 2048)
                    ffn_cfg=dict(embed_dims=feat, feedforward_channels=2048, num_fcs=2,
                                 ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))),
                post_norm=True),  # final LayerNorm on the encoder output, as released
            positional_encoding=dict(num_feats=feat // 2, normalize=True)),
        positional_encoding=dict(num_feats=feat // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat, num_heads=8, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=feat, num_heads=8, dropout=0.0, batch_first=True),
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=2048, num_fcs=2,
                             ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))),
            init_cfg=None),
        # losses (spec section 5): class CE 2.0 with "no object" weighted 0.1 (class_weight
        # [1.0] * K + [no_object_weight] is filled in), point-sampled mask BCE 5.0 and dice 5.0
        no_object_weight=0.1,
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean'),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                       reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# MFuser: DINOv2-L/14 x EVA02-CLIP-L/14-336, trained on GTAV, evaluated on Cityscapes, BDD100K
# and Mapillary in one run (the paper's G -> C/B/M recipe, spec section 6; test protocol of the
# text-queried line: 2048x1024 Cityscapes, full-resolution Mapillary, slide 512 / stride 341).
#
#   python tools/train.py configs/mfuser_eva02_gta.py
#   python tools/test.py  configs/mfuser_eva02_gta.py work_dirs/mfuser_eva02_gta/iter_20000.pth
#
# Pretrained weights: local files (nothing is downloaded). Put them under checkpoints/ or
# point these keys elsewhere (also with --cfg-options model.backbone.vfm.checkpoint=...).
_base_ = [
    './_base_/models/mfuser_dinov2_eva02.py',
    './_base_/datasets/dg_gta_to_cbm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['mfuser', 'mfuser.engine.safe_loading'], allow_failed_imports=False)
dinov2_checkpoint = 'checkpoints/dinov2_vitl14_pretrain.pth'
eva02_checkpoint = 'checkpoints/EVA02_CLIP_L_336_psz14_s6B.pt'  # visual + text towers
model = dict(
    backbone=dict(
        vfm=dict(name='vit_large_patch14_dinov2', checkpoint=dinov2_checkpoint),
        vlm=dict(name='eva02_large_patch14_clip_336', checkpoint=eva02_checkpoint)),
    text_encoder=dict(model_name='EVA02-L-14-336', checkpoint=eva02_checkpoint))

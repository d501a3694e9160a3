# MFuser: DINOv2-L/14 x EVA02-CLIP-L/14-336, trained on GTAV, evaluated on Cityscapes, BDD100K
# and Mapillary in one run (the paper's G -> C/B/M recipe, spec section 6; test protocol of the
# text-queried line: 2048x1024 Cityscapes, full-resolution Mapillary, slide 512 / stride 341).
#
#   python tools/train.py configs/mfuser_eva02_gta.py
#   python tools/test.py  configs/mfuser_eva02_gta.py work_dirs/mfuser_eva02_gta/iter_20000.pth
#
# Pretrained weights: local files (nothing is downloaded), named in configs/_base_/models/
# mfuser_dinov2_eva02.py (override with --cfg-options model.backbone.vfm.checkpoint=... etc.).
_base_ = [
    './_base_/models/mfuser_dinov2_eva02.py',
    './_base_/datasets/dg_gta_to_cbm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]

# MFuser DINOv2-L x EVA02-CLIP-L trained on Cityscapes, validated on the four ACDC conditions
# (C -> ACDC; per-condition mIoU, their mean, all four pooled, Cityscapes val as source domain).
# Same model, schedule and source data as configs/mfuser_eva02_cityscapes.py; only the targets
# differ. Test protocol: the release's for targets (ACDC at native 1920x1080, slide 512/341).
#
#   python tools/train.py configs/mfuser_eva02_cityscapes_acdc.py
#   python tools/test.py  configs/mfuser_eva02_cityscapes_acdc.py CKPT          # ACDC val
#   python tools/test.py  configs/mfuser_eva02_cityscapes_acdc.py CKPT \
#       --format-only --out acdc_submission   # test server: <work_dir>/acdc_submission
_base_ = [
    './_base_/models/mfuser_dinov2_eva02.py',
    './_base_/datasets/dg_cityscapes_to_acdc.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]

# MFuser DINOv2-L x EVA02-CLIP-L trained on GTAV + SYNTHIA together (multi-source), evaluated
# on Cityscapes, BDD100K and Mapillary in one run. Same model and schedule as
# configs/mfuser_eva02_gta.py; the training set is the union of both sources with rare-class
# sampling over it (configs/_base_/datasets/dg_gta_synthia_to_cbm.py).
#
#   python tools/train.py configs/mfuser_eva02_gta_synthia.py
#   python tools/test.py  configs/mfuser_eva02_gta_synthia.py CKPT
_base_ = [
    './_base_/models/mfuser_dinov2_eva02.py',
    './_base_/datasets/dg_gta_synthia_to_cbm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]

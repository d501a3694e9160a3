# MFuser DINOv2-L x EVA02-CLIP-L trained on Cityscapes, evaluated on BDD100K and Mapillary
# (C -> B/M). Same model and schedule as configs/mfuser_eva02_gta.py; only the data differ.
_base_ = [
    './_base_/models/mfuser_dinov2_eva02.py',
    './_base_/datasets/dg_cityscapes_to_bm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]

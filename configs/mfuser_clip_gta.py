# MFuser DINOv2-L x OpenAI CLIP ViT-L/14-336 (16-pixel patches),
# trained on GTAV, evaluated on Cityscapes, BDD100K and Mapillary (G -> C/B/M).
# The model as released, and the pretrained files it reads: configs/_base_/models/
# mfuser_dinov2_clip.py (override with --cfg-options model.backbone.vlm.checkpoint=...).
_base_ = [
    './_base_/models/mfuser_dinov2_clip.py',
    './_base_/datasets/dg_gta_to_cbm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k_clip.py',
]

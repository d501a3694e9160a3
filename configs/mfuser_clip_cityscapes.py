# MFuser DINOv2-L x OpenAI CLIP ViT-L/14-336 (16-pixel patches),
# trained on Cityscapes, evaluated on BDD100K and Mapillary (C -> B/M).
# The model as released, and the pretrained files it reads: configs/_base_/models/
# mfuser_dinov2_clip.py (override with --cfg-options model.backbone.vlm.checkpoint=...).
_base_ = [
    './_base_/models/mfuser_dinov2_clip.py',
    './_base_/datasets/dg_cityscapes_to_bm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k_clip.py',
]

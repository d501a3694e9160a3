# MFuser DINOv2-L x OpenAI CLIP ViT-L/14-336 (16-pixel patches),
# trained on GTAV, evaluated on Cityscapes, BDD100K and Mapillary (G -> C/B/M).
# The model as released: configs/_base_/models/mfuser_dinov2_clip.py.
_base_ = [
    './_base_/models/mfuser_dinov2_clip.py',
    './_base_/datasets/dg_gta_to_cbm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k_clip.py',
]
custom_imports = dict(imports=['mfuser', 'mfuser.engine.safe_loading'], allow_failed_imports=False)
dinov2_checkpoint = 'checkpoints/dinov2_vitl14_pretrain.pth'
clip_checkpoint = 'checkpoints/ViT-L-14-336px.pt'  # OpenAI TorchScript archive (visual + text)
model = dict(
    backbone=dict(
        vfm=dict(checkpoint=dinov2_checkpoint),
        vlm=dict(checkpoint=clip_checkpoint)),
    text_encoder=dict(checkpoint=clip_checkpoint))

# MFuser DINOv2-L x SigLIP ViT-L/16-384,
# trained on GTAV, evaluated on Cityscapes, BDD100K and Mapillary (G -> C/B/M).
# The model as released: configs/_base_/models/mfuser_dinov2_siglip.py.
_base_ = [
    './_base_/models/mfuser_dinov2_siglip.py',
    './_base_/datasets/dg_gta_to_cbm.py',
    './_base_/default_runtime.py',
    './_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['mfuser', 'mfuser.engine.safe_loading'], allow_failed_imports=False)
dinov2_checkpoint = 'checkpoints/dinov2_vitl14_pretrain.pth'
siglip_checkpoint = 'checkpoints/ViT-L-16-SigLIP-384/open_clip_pytorch_model.bin'
siglip_tokenizer = 'checkpoints/ViT-L-16-SigLIP-384'  # tokenizer.json / spiece.model here
model = dict(
    backbone=dict(
        vfm=dict(checkpoint=dinov2_checkpoint),
        vlm=dict(checkpoint=siglip_checkpoint)),
    text_encoder=dict(checkpoint=siglip_checkpoint, tokenizer=siglip_tokenizer))

# MFuser with OpenAI CLIP ViT-L/14-336 as the VLM (DINOv2-L VFM), G -> C/B/M.
# Swapping the VLM is these lines: the vision tower name, the text tower name, the checkpoint
# and the embedding width E (CLIP-L projects to 768, like EVA02-CLIP-L).
_base_ = ['./mfuser_eva02_gta.py']
clip_checkpoint = 'checkpoints/ViT-L-14-336px.pt'  # OpenAI TorchScript archive
embed_dim = 768
model = dict(
    backbone=dict(vlm=dict(name='vit_large_patch14_clip_quickgelu_336',
                           checkpoint=clip_checkpoint)),
    text_encoder=dict(model_name='ViT-L-14-336-quickgelu', checkpoint=clip_checkpoint),
    context_decoder=dict(visual_dim=embed_dim),
    decode_head=dict(text_dim=embed_dim))

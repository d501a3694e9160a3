# MFuser with SigLIP ViT-L/16-384 as the VLM (DINOv2-L VFM), G -> C/B/M.
# SigLIP uses 16-pixel patches: the DINOv2 patch embedding is resampled to 16 so both towers
# share one 32x32 token grid at 512. Its embeddings are 1024 wide, and its text tokenizer is a
# Hugging Face SentencePiece tokenizer: give a local tokenizer directory (needs `transformers`).
_base_ = ['./mfuser_eva02_gta.py']
siglip_checkpoint = 'checkpoints/ViT-L-16-SigLIP-384/open_clip_pytorch_model.bin'
siglip_tokenizer = 'checkpoints/ViT-L-16-SigLIP-384'  # tokenizer.json / spiece.model here
embed_dim = 1024
model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        vlm=dict(name='vit_large_patch16_siglip_384', checkpoint=siglip_checkpoint),
        input_norm=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])),
    text_encoder=dict(model_name='ViT-L-16-SigLIP-384', checkpoint=siglip_checkpoint,
                      tokenizer=siglip_tokenizer),
    context_decoder=dict(visual_dim=embed_dim),
    decode_head=dict(text_dim=embed_dim))

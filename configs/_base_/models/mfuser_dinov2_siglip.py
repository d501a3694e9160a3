# MFuser with DINOv2-L (VFM) x SigLIP ViT-L/16-384 (VLM), wired as the released MFuser_SIGLIP
# (configs/mfuser/mfuser_siglip_vit-l_1e-4_20k-g2c-512.py of the release):
# * 16-pixel patches, a 32x32 grid at 512 (SigLIP's 24x24 position embedding resized
#   bilinearly, DINOv2's patch kernel bicubically to 16x16); SigLIP has no class token;
# * GELU-tanh activations (vision and text), LayerNorm eps 1e-6;
# * final embedding: the attention-pooling head over post_layernorm(h) + dinov2.norm(d[:, 1:]);
#   the dense map is the same head's attention with every token as a query, plus its MLP;
# * text: 5 context tokens after the first word token (no start token), the last of the 10
#   positions pooled, no causal mask, the `head` Linear; width 1024;
# * score-map loss on score_map * exp(logit_scale) + logit_bias, both read from the pretrained
#   SigLIP file (model.text_encoder.checkpoint), as the release reads them.
# The release's adapter_proj1/2/3 are built but unused by its forward; the converter drops them.
# Its text tokens come from the Hugging Face SigLIP tokenizer: give a local tokenizer directory
# (model.text_encoder.tokenizer), or the class names' ids it makes (one row of 5 per class) as
# model.text_encoder.token_ids with model.text_encoder.tokenizer=None (no directory needed).
# Pretrained weights (local files, never downloaded): DINOv2 (the base's dinov2_checkpoint), the
# open_clip / timm SigLIP file (visual + text towers, logit_scale / logit_bias) and its tokenizer
# directory.
_base_ = ['./mfuser_dinov2_eva02.py']
siglip_checkpoint = 'checkpoints/ViT-L-16-SigLIP-384/open_clip_pytorch_model.bin'
siglip_tokenizer = 'checkpoints/ViT-L-16-SigLIP-384'  # tokenizer.json / spiece.model here
embed_dim = 1024
n_ctx = 5
siglip_norm = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
model = dict(
    data_preprocessor=dict(mean=siglip_norm['mean'], std=siglip_norm['std']),
    backbone=dict(
        vlm=dict(name='vit_large_patch16_siglip_384', checkpoint=siglip_checkpoint,
                 act_layer='gelu_tanh', interpolation='bilinear'),
        input_norm=siglip_norm,
        dense_pool='attention'),
    text_encoder=dict(model_name='ViT-L-16-SigLIP-384', checkpoint=siglip_checkpoint,
                      tokenizer=siglip_tokenizer, n_ctx=n_ctx, name_context_length=5,
                      text_cfg=dict(act_kwargs=dict(approximate='tanh'))),
    n_ctx=n_ctx,
    score_logits='pretrained',
    context_decoder=dict(visual_dim=embed_dim),
    decode_head=dict(text_dim=embed_dim))

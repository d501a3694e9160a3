# MFuser with DINOv2-L (VFM) x OpenAI CLIP ViT-L/14-336 (VLM), wired as the released MFuser_CLIP
# (configs/mfuser/mfuser_clip_vit-l_1e-4_20k-g2c-512.py of the release):
# * both towers use 16-pixel patches: a 32x32 token grid at 512 (CLIP's 14x14 patch kernel and
#   24x24 position embedding are resized bilinearly, DINOv2's bicubically, when loading);
# * per-block projections adapter_proj1[i] (DINOv2 tokens into the MVFuser) and
#   adapter_proj2[i] (the MVFuser's DINOv2 half back), and the final embedding
#   proj(ln_post(x + adapter_proj3(d))) with a bias-free projection;
# * the release adds CLIP's class embedding twice to token 0 (stored doubled as cls_token);
# * drop path 0.1 over the CLIP blocks, live while training (the frozen towers follow the
#   model's train mode, as released; backbone.eval_frozen_towers=True switches it off), one
#   draw per token position as in the released sequence-first CLIP blocks
#   (drop_path_unit='token'); 5 context tokens (text context 10).
# Pretrained weights (local files, never downloaded): DINOv2 (the base's dinov2_checkpoint) and
# OpenAI's TorchScript archive (visual + text towers); override with --cfg-options
# model.backbone.vlm.checkpoint=... etc.
_base_ = ['./mfuser_dinov2_eva02.py']
clip_checkpoint = 'checkpoints/ViT-L-14-336px.pt'
embed_dim = 768
n_ctx = 5
model = dict(
    backbone=dict(
        vlm=dict(name='vit_large_patch14_clip_quickgelu_336', checkpoint=clip_checkpoint,
                 patch_size=16,
                 drop_path_rate=0.1, drop_path_unit='token', head_bias=False,
                 interpolation='bilinear'),
        adapter_proj=True,
        final='clip',
        double_class_embedding=True),
    text_encoder=dict(model_name='ViT-L-14-336-quickgelu', checkpoint=clip_checkpoint,
                      n_ctx=n_ctx, name_context_length=5),
    n_ctx=n_ctx,
    context_decoder=dict(visual_dim=embed_dim),
    decode_head=dict(text_dim=embed_dim))

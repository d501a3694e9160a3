"""Pretrained loaders: official layouts (tiny round trips; full-size synthetic from key tables)."""
import json
import pathlib
import re

import pytest
import torch
import torch.nn as nn

from mfuser.models import pretrained as P
from mfuser.models.backbones import FusedEncoder
from mfuser.models.backbones import vit_tower as vt
from mfuser.models.text_encoder import CoOpTextEncoder

# Copies of shared/checkpoint_keys: key -> shape tables of the official checkpoints.
KEYS_DIR = pathlib.Path(__file__).resolve().parent / 'data' / 'checkpoint_keys'
TINY_TEXT = dict(text_cfg=dict(width=32, heads=2, layers=2), embed_dim=24)


def tiny_tower(name, img=28, keep_head=True, **kw):
    kw = dict(dict(depth=2, embed_dim=64, num_heads=2), **kw)
    return vt.build_vit_tower(name, img, keep_head=keep_head, **kw)


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def assert_same_weights(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if any(re.match(s, k) for s in skip):
            continue
        torch.testing.assert_close(sa[k], sb[k], msg=k)


# ---------------------------------------------------------------- official layouts, tiny
def to_dinov2_layout(model):
    """timm -> DINOv2 repository layout (same names plus the pretraining mask_token)."""
    sd = dict(model.state_dict())
    sd['mask_token'] = torch.zeros(1, sd['cls_token'].shape[-1])
    return sd


def to_baai_eva_clip_layout(model, text=None):
    """timm Eva -> BAAI EVA-CLIP keys (visual.*, rope buffers, text.*, logit_scale)."""
    rules = [('attn.q_proj.bias', 'attn.q_bias'), ('attn.v_proj.bias', 'attn.v_bias'),
             ('attn.norm.', 'attn.inner_attn_ln.'), ('mlp.fc1_g.', 'mlp.w1.'),
             ('mlp.fc1_x.', 'mlp.w2.'), ('mlp.fc2.', 'mlp.w3.'), ('mlp.norm.', 'mlp.ffn_ln.')]
    out = {}
    for k, v in model.state_dict().items():
        for a, b in rules:
            k = k.replace(a, b)
        out['visual.' + k] = v.clone()
    out['visual.rope.freqs_cos'] = torch.randn(4, 32)
    out['visual.rope.freqs_sin'] = torch.randn(4, 32)
    out['visual.blocks.0.attn.rope.freqs_cos'] = torch.randn(4, 32)
    if text is not None:
        out.update({'text.' + k: v.clone() for k, v in text.state_dict().items()})
    out['logit_scale'] = torch.tensor(4.6)
    return out


def to_openai_layout(model, text=None):
    """timm CLIP VisionTransformer -> OpenAI CLIP state dict (inverse of timm's converter)."""
    swaps = [('patch_embed.proj', 'conv1'), ('norm_pre', 'ln_pre'),
             ('blocks.', 'transformer.resblocks.'),
             ('norm1', 'ln_1'), ('norm2', 'ln_2'), ('attn.qkv.', 'attn.in_proj_'),
             ('attn.proj', 'attn.out_proj'), ('mlp.fc1', 'mlp.c_fc'), ('mlp.fc2', 'mlp.c_proj')]
    out = {}
    for k, v in model.state_dict().items():
        if k == 'head.weight':
            out['visual.proj'] = v.t().contiguous()
            continue
        if k == 'head.bias':
            continue
        if k == 'cls_token':
            out['visual.class_embedding'] = v.flatten().clone()
            continue
        if k == 'pos_embed':
            out['visual.positional_embedding'] = v[0].clone()
            continue
        if k.startswith('norm.'):
            k = k.replace('norm.', 'ln_post.')
        for a, b in swaps:
            k = k.replace(a, b)
        out['visual.' + k] = v.clone()
    if text is not None:
        out.update({k: v.clone() for k, v in text.state_dict().items()})
    out.update(logit_scale=torch.tensor(4.6), input_resolution=torch.tensor(336),
               context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return out


class _Holder(nn.Module):
    """Nested modules holding tensors under dotted names (to script into a TorchScript file)."""

    def __init__(self, state):
        super().__init__()
        children = {}
        for k, v in state.items():
            head, _, rest = k.partition('.')
            if rest:
                children.setdefault(head, {})[rest] = v
            else:
                self.register_buffer(k, v.clone())
        for name, sub in children.items():
            self.add_module(name, _Holder(sub))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_dinov2_layout_loads_with_position_resize(tmp_path):
    src = randomize(tiny_tower('vit_small_patch14_dinov2', img=56, keep_head=False))
    path = tmp_path / 'dinov2_vits14_pretrain.pth'
    torch.save(to_dinov2_layout(src), path)
    dst = tiny_tower('vit_small_patch14_dinov2', img=42, keep_head=False)  # 3x3 grid, not 4x4
    P.load_vision_tower(dst, str(path), config_key='vfm.checkpoint', role='vfm')
    assert dst.pos_embed.shape == (1, 1 + 9, 64)
    assert_same_weights(src, dst, skip=[r'pos_embed'])
    # same grid: position embeddings load unchanged
    same = tiny_tower('vit_small_patch14_dinov2', img=56, keep_head=False)
    P.load_vision_tower(same, str(path), config_key='vfm.checkpoint', role='vfm')
    assert_same_weights(src, same)


def test_dinov2_patch_kernel_resampled_for_patch16_vlm(tmp_path):
    src = randomize(tiny_tower('vit_small_patch14_dinov2', img=56, keep_head=False))
    path = tmp_path / 'dinov2.pth'
    torch.save(to_dinov2_layout(src), path)
    dst = tiny_tower('vit_small_patch14_dinov2', img=64, keep_head=False, patch_size=16)
    P.load_vision_tower(dst, str(path), config_key='vfm.checkpoint', role='vfm')
    assert dst.patch_embed.proj.weight.shape == (64, 3, 16, 16)
    assert_same_weights(src, dst, skip=[r'pos_embed', r'patch_embed\.proj\.weight'])


def test_baai_eva_clip_layout_loads_visual_and_text(tmp_path):
    src = randomize(tiny_tower('eva02_large_patch14_clip_336', img=28))
    text_src = randomize(CoOpTextEncoder(**TINY_TEXT))
    path = tmp_path / 'EVA02_CLIP_L_336_psz14_s6B.pt'
    torch.save(to_baai_eva_clip_layout(src, text_src), path)
    dst = tiny_tower('eva02_large_patch14_clip_336', img=28)
    P.load_vision_tower(dst, str(path), config_key='vlm.checkpoint')
    assert_same_weights(src, dst)
    text_dst = CoOpTextEncoder(checkpoint=str(path), **TINY_TEXT)
    assert_same_weights(text_src, text_dst)
    ctx = torch.randn(1, 8, 32)
    torch.testing.assert_close(text_src(ctx), text_dst(ctx))


def test_openai_torchscript_layout_loads_visual_and_text(tmp_path):
    src = randomize(tiny_tower('vit_large_patch14_clip_quickgelu_336', img=28))
    text_src = randomize(CoOpTextEncoder(model_name='ViT-L-14-336-quickgelu', **TINY_TEXT))
    state = to_openai_layout(src, text_src)
    path = tmp_path / 'ViT-L-14-336px.pt'
    torch.jit.script(_Holder({k: v.half() if v.is_floating_point() else v
                              for k, v in state.items()})).save(str(path))
    dst = tiny_tower('vit_large_patch14_clip_quickgelu_336', img=28)
    P.load_vision_tower(dst, str(path), config_key='vlm.checkpoint')
    assert_same_weights(src.half().float(), dst, skip=[r'head\.bias'])
    assert torch.count_nonzero(dst.head.bias) == 0
    text_dst = CoOpTextEncoder(model_name='ViT-L-14-336-quickgelu', checkpoint=str(path),
                               **TINY_TEXT)
    assert_same_weights(text_src.half().float(), text_dst)


def test_open_clip_siglip_and_timm_safetensors_layouts(tmp_path):
    from safetensors.torch import save_file
    src = randomize(tiny_tower('vit_large_patch16_siglip_384', img=32))
    oc = {'visual.trunk.' + k: v.clone() for k, v in src.state_dict().items()}
    oc['text.token_embedding.weight'] = torch.zeros(10, 4)
    torch.save(oc, tmp_path / 'open_clip_pytorch_model.bin')
    dst = tiny_tower('vit_large_patch16_siglip_384', img=32)
    P.load_vision_tower(dst, str(tmp_path / 'open_clip_pytorch_model.bin'), 'vlm.checkpoint')
    assert_same_weights(src, dst)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(tmp_path / 'model.safetensors'))
    dst2 = tiny_tower('vit_large_patch16_siglip_384', img=32)
    P.load_vision_tower(dst2, str(tmp_path / 'model.safetensors'), 'vlm.checkpoint')
    assert_same_weights(src, dst2)


def test_fused_encoder_loads_both_towers_from_config(tmp_path):
    vfm_src = randomize(tiny_tower('vit_small_patch14_dinov2', img=28, keep_head=False))
    vlm_src = randomize(tiny_tower('eva02_large_patch14_clip_336', img=28))
    torch.save(to_dinov2_layout(vfm_src), tmp_path / 'dinov2.pth')
    torch.save(to_baai_eva_clip_layout(vlm_src), tmp_path / 'eva.pt')
    enc = FusedEncoder(
        vfm=dict(name='vit_small_patch14_dinov2', depth=2, embed_dim=64, num_heads=2,
                 checkpoint=str(tmp_path / 'dinov2.pth')),
        vlm=dict(name='eva02_large_patch14_clip_336', depth=2, embed_dim=64, num_heads=2,
                 checkpoint=str(tmp_path / 'eva.pt')),
        adapter=None, img_size=28, out_indices=(0, 1, 1, 1))
    assert_same_weights(vfm_src, enc.vfm)
    assert_same_weights(vlm_src, enc.vlm)
    enc.init_weights()  # must not re-initialise the loaded towers
    assert_same_weights(vlm_src, enc.vlm)
    assert all(not p.requires_grad for p in enc.vlm.parameters())


def test_mismatches_are_reported_clearly(tmp_path):
    src = randomize(tiny_tower('vit_small_patch14_dinov2', img=28, keep_head=False))
    sd = to_dinov2_layout(src)
    bad = dict(sd)
    bad['blocks.0.attn.qkv.weight'] = torch.zeros(3, 3)
    bad['blocks.9.extra'] = torch.zeros(1)
    del bad['norm.weight']
    torch.save(bad, tmp_path / 'bad.pth')
    dst = tiny_tower('vit_small_patch14_dinov2', img=28, keep_head=False)
    with pytest.raises(P.CheckpointMismatchError) as err:
        P.load_vision_tower(dst, str(tmp_path / 'bad.pth'), 'vfm.checkpoint', role='vfm')
    msg = str(err.value)
    assert 'vfm.checkpoint' in msg and 'norm.weight' in msg and 'blocks.9.extra' in msg
    assert 'blocks.0.attn.qkv.weight: checkpoint (3, 3)' in msg
    # a DINOv2-S file into a DINOv2-B-sized tower
    torch.save(sd, tmp_path / 'small.pth')
    wide = tiny_tower('vit_small_patch14_dinov2', img=28, keep_head=False, embed_dim=96)
    with pytest.raises(P.CheckpointMismatchError, match='shape mismatches'):
        P.load_vision_tower(wide, str(tmp_path / 'small.pth'), 'vfm.checkpoint', role='vfm')
    # missing file names the key and the expected official file
    with pytest.raises(FileNotFoundError, match=r'vlm\.checkpoint.*EVA02_CLIP_L_336_psz14_s6B'):
        P.load_vision_tower(tiny_tower('eva02_large_patch14_clip_336'), str(tmp_path / 'x.pt'),
                            'vlm.checkpoint')
    # garbage file
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(P.CheckpointMismatchError, match='not a PyTorch checkpoint'):
        P.load_state_dict_file(str(tmp_path / 'junk.pt'), 'vlm.checkpoint')
    # a vision-only file has no text tower
    with pytest.raises(P.CheckpointMismatchError, match='no text tower'):
        CoOpTextEncoder(checkpoint=str(tmp_path / 'small.pth'), **TINY_TEXT)


# ---------------------------------------------------------------- full size (slow)
def synthetic_from_table(name):
    table = json.loads((KEYS_DIR / name).read_text())
    gen = torch.Generator().manual_seed(0)
    return {k: (torch.randn(s, generator=gen) * 0.02 if s else torch.tensor(1.0))
            for k, s in table.items()}


@pytest.mark.slow
def test_full_size_dinov2_vitl14_file_loads(tmp_path):
    sd = synthetic_from_table('dinov2_vitl14_pretrain.keys.json')
    path = tmp_path / 'dinov2_vitl14_pretrain.pth'
    torch.save(sd, path)
    ref_qkv = sd['blocks.23.attn.qkv.weight'].clone()
    del sd
    tower = vt.build_vit_tower('vit_large_patch14_dinov2', 504, keep_head=False)  # 36x36 grid
    P.load_vision_tower(tower, str(path), config_key='vfm.checkpoint', role='vfm')
    assert tower.pos_embed.shape == (1, 1 + 36 * 36, 1024)  # resized from 37x37
    torch.testing.assert_close(tower.blocks[23].attn.qkv.weight, ref_qkv)


@pytest.mark.slow
def test_full_size_eva02_clip_l_336_file_loads_visual_and_text(tmp_path):
    sd = synthetic_from_table('EVA02_CLIP_L_336_psz14_s6B.keys.json')
    path = tmp_path / 'EVA02_CLIP_L_336_psz14_s6B.pt'
    torch.save(sd, path)
    ref_w3 = sd['visual.blocks.5.mlp.w3.weight'].clone()
    ref_text = sd['text.transformer.resblocks.11.mlp.c_fc.weight'].clone()
    del sd
    tower = vt.build_vit_tower('eva02_large_patch14_clip_336', 518, keep_head=True)
    P.load_vision_tower(tower, str(path), config_key='vlm.checkpoint')
    assert tower.pos_embed.shape == (1, 1 + 37 * 37, 1024)  # resized from 24x24
    torch.testing.assert_close(tower.blocks[5].mlp.fc2.weight, ref_w3)
    del tower
    text = CoOpTextEncoder(checkpoint=str(path))
    torch.testing.assert_close(text.transformer.resblocks[11].mlp.c_fc.weight, ref_text)
    assert text.embed_dim == 768 and text.width == 768
    assert text(torch.zeros(1, 8, 768)).shape == (19, 768)

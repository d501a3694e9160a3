"""Conventions of the official release the goldens cannot see (initialisation, losses) and the
CLIP / SigLIP wiring, each against an independent computation at toy size."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from tiny_models import tiny_mfuser_cfg

import mfuser  # noqa: F401
from mfuser.models import MTEnhancerStack
from mfuser.models.backbones import FusedEncoder


def tiny(name, width=64, depth=2, **kw):
    return dict(name=name, depth=depth, embed_dim=width, num_heads=2, **kw)


def test_contexts_start_as_truncated_standard_normal():
    model = MODELS.build(tiny_mfuser_cfg(n_ctx=64,
                                         text_encoder=dict(tiny_mfuser_cfg()['text_encoder'],
                                                           n_ctx=64, name_context_length=5)))
    c = model.contexts.detach()
    assert c.shape == (1, 64, 32)
    assert 0.75 < float(c.std()) < 1.0  # N(0, 1) cut at +-2 has std 0.88
    assert float(c.abs().max()) <= 2.0
    coop = MODELS.build(tiny_mfuser_cfg(contexts_init_std=0.02))
    assert float(coop.contexts.std()) < 0.05  # the explicit CoOp option


def test_mtenhancer_reinitialises_every_linear_including_the_mvfusers():
    torch.manual_seed(0)
    stack = MTEnhancerStack(visual_dim=64, transformer_width=128, transformer_heads=4)
    fuser = stack.decoder[0].cross_attn
    assert torch.count_nonzero(fuser.dt_proj.bias) == 0  # as released: trunc-normal + zero bias
    for lin in (fuser.in_proj, fuser.x_proj, fuser.dt_proj, fuser.out_proj):
        assert 0.015 < float(lin.weight.std()) < 0.025
    assert torch.equal(fuser.D, torch.ones_like(fuser.D))  # not a Linear: MVFuser init kept
    mamba = MTEnhancerStack(visual_dim=64, transformer_width=128, transformer_heads=4,
                            reinit_fuser_linears=False).decoder[0].cross_attn
    assert float(mamba.dt_proj.bias.min()) > -10 and torch.count_nonzero(mamba.dt_proj.bias) > 0
    # softplus(dt bias) = Mamba's dt in [1e-3, 0.1]
    dt = F.softplus(mamba.dt_proj.bias)
    assert float(dt.min()) >= 1e-4 and float(dt.max()) <= 0.1 + 1e-6


def test_init_weights_keeps_the_heads_constructor_init_unless_asked():
    model = MODELS.build(tiny_mfuser_cfg())
    before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    model.init_weights()  # what mmengine's Runner calls before training
    after = model.decode_head.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    cfg = tiny_mfuser_cfg()
    cfg['decode_head']['mmdet_init'] = True
    model = MODELS.build(cfg)
    before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    model.init_weights()
    changed = [k for k, v in model.decode_head.state_dict().items()
               if not torch.equal(before[k], v)]
    assert any('transformer_decoder' in k for k in changed)


def _samples(label):
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=label[None])
    h, w = label.shape
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    return [s]


def test_score_map_loss_averages_over_all_pixels_and_none_switches_it_off():
    torch.manual_seed(0)
    model = MODELS.build(tiny_mfuser_cfg()).eval()
    img = torch.randn(1, 3, 56, 56)
    label = torch.randint(0, 5, (56, 56))
    label[:20] = 255  # a third of the pixels ignored
    with torch.no_grad():
        losses = model.loss(img, _samples(label))
        feats, text, dense = model._encode(img)
        logits = F.interpolate(model.score_map(text, dense) / 0.07, size=(56, 56),
                               mode='bilinear', align_corners=False)
    per_pixel = F.cross_entropy(logits, label[None], ignore_index=255, reduction='none')
    torch.testing.assert_close(losses['vl.loss_ce'], per_pixel.sum() / label.numel())
    assert not torch.allclose(losses['vl.loss_ce'], per_pixel.sum() / (label != 255).sum())
    off = MODELS.build(tiny_mfuser_cfg(loss_vl=None))
    assert 'vl.loss_ce' not in off.loss(img, _samples(label))


def test_pretrained_score_logits_need_the_text_files_scale():
    model = MODELS.build(tiny_mfuser_cfg(score_logits='pretrained'))
    with pytest.raises(RuntimeError, match='logit_scale'):
        model.score_map_logits(torch.zeros(1, 5, 2, 2))
    model.text_encoder.logit_scale, model.text_encoder.logit_bias = 2.0, -10.0
    out = model.score_map_logits(torch.full((1, 5, 2, 2), 0.5))
    torch.testing.assert_close(out, torch.full((1, 5, 2, 2), 0.5 * 7.38905609893065 - 10.0))


def run_and_capture_last_tokens(enc, img):
    """Run the encoder; also return the last tokens of both streams (``d``: VFM, ``x``: VLM)
    that go into its embedding head."""
    captured = {}
    orig = enc._embeddings

    def spy(x_vfm, x_vlm, p_vfm, p_vlm):
        captured.update(d=x_vfm, x=x_vlm)
        return orig(x_vfm, x_vlm, p_vfm, p_vlm)
    enc._embeddings = spy
    _, g, dense = enc(img)
    return g, dense, captured


def test_clip_wiring_is_proj_of_ln_post_of_x_plus_adapter_proj3_d():
    """final='clip': the global/dense embeddings are ((x + adapter_proj3(d)) -> ln_post) @ proj
    on the last tokens of both streams, computed here by hand from the tower's pieces."""
    torch.manual_seed(0)
    enc = FusedEncoder(vfm=tiny('vit_small_patch14_dinov2'),
                       vlm=tiny('vit_large_patch14_clip_quickgelu_336', num_classes=24,
                                head_bias=False),
                       adapter=None, adapter_proj=True, final='clip', img_size=32,
                       out_indices=(0, 1, 1, 1)).eval()
    assert enc.vlm.head.bias is None and len(enc.adapter_proj1) == 2
    with torch.no_grad():
        g, dense, captured = run_and_capture_last_tokens(enc, torch.randn(1, 3, 32, 32))
        fused = captured['x'] + enc.adapter_proj3(captured['d'])  # class token + patches
        out = enc.vlm.norm(fused) @ enc.vlm.head.weight.t()
    torch.testing.assert_close(g, out[:, :1])
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), out[:, 1:])
    with pytest.raises(ValueError, match='adapter_proj=True'):
        FusedEncoder(vfm=tiny('vit_small_patch14_dinov2'),
                     vlm=tiny('vit_large_patch14_clip_quickgelu_336'), final='clip',
                     img_size=32, out_indices=(0, 1, 1, 1))


def test_siglip_dense_map_is_the_pool_attention_with_every_token_as_query():
    """As released: nn.MultiheadAttention(q=k=v=tokens) with the pool head's weights, then
    out + mlp(layernorm(out)); built here from torch's own MultiheadAttention."""
    torch.manual_seed(0)
    enc = FusedEncoder(vfm=tiny('vit_small_patch14_dinov2'),
                       vlm=tiny('vit_large_patch16_siglip_384'), adapter=None, img_size=48,
                       out_indices=(0, 1, 1, 1)).eval()
    pool = enc.vlm.attn_pool
    mha = nn.MultiheadAttention(64, pool.num_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([pool.q.weight, pool.kv.weight]))
        mha.in_proj_bias.copy_(torch.cat([pool.q.bias, pool.kv.bias]))
        mha.out_proj.weight.copy_(pool.proj.weight)
        mha.out_proj.bias.copy_(pool.proj.bias)
    with torch.no_grad():
        g, dense, captured = run_and_capture_last_tokens(enc, torch.randn(1, 3, 48, 48))
        last = enc.vlm.norm(captured['x']) + enc.vfm.norm(captured['d'])[:, 1:]
        local, _ = mha(last, last, last)
        local = local + pool.mlp(pool.norm(local))
        probe, _ = mha(pool.latent, last, last)
        probe = probe + pool.mlp(pool.norm(probe))
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), local, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g, probe, atol=1e-5, rtol=1e-5)


def test_openai_class_embedding_is_stored_twice_when_asked(tmp_path):
    """The released CLIP tower adds OpenAI's class_embedding twice to token 0."""
    from mfuser.models import pretrained as P
    from mfuser.models.backbones import vit_tower as vt
    tower = vt.build_vit_tower('vit_large_patch14_clip_quickgelu_336', 28, keep_head=True,
                               depth=1, embed_dim=32, num_heads=2, num_classes=16,
                               head_bias=False)
    sd = {'visual.class_embedding': torch.randn(32),
          'visual.positional_embedding': torch.randn(5, 32),
          'visual.conv1.weight': torch.randn(32, 3, 14, 14), 'visual.proj': torch.randn(32, 16)}
    for name in ('ln_pre', 'ln_post'):
        sd[f'visual.{name}.weight'], sd[f'visual.{name}.bias'] = torch.ones(32), torch.zeros(32)
    blk = tower.blocks[0]
    sd.update({f'visual.transformer.resblocks.0.{k}': v for k, v in {
        'ln_1.weight': blk.norm1.weight, 'ln_1.bias': blk.norm1.bias,
        'attn.in_proj_weight': blk.attn.qkv.weight, 'attn.in_proj_bias': blk.attn.qkv.bias,
        'attn.out_proj.weight': blk.attn.proj.weight, 'attn.out_proj.bias': blk.attn.proj.bias,
        'ln_2.weight': blk.norm2.weight, 'ln_2.bias': blk.norm2.bias,
        'mlp.c_fc.weight': blk.mlp.fc1.weight, 'mlp.c_fc.bias': blk.mlp.fc1.bias,
        'mlp.c_proj.weight': blk.mlp.fc2.weight, 'mlp.c_proj.bias': blk.mlp.fc2.bias}.items()})
    path = tmp_path / 'clip.pt'
    torch.save({k: v.detach().clone() for k, v in sd.items()}, path)
    P.load_vision_tower(tower, str(path), 'vlm.checkpoint', double_class_embedding=True)
    torch.testing.assert_close(tower.cls_token.flatten(), 2 * sd['visual.class_embedding'])
    torch.testing.assert_close(tower.head.weight, sd['visual.proj'].t())

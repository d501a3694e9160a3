"""FusedEncoder: shapes, plumbing (scale-0 adapters == separate towers), freezing, configs."""
import os.path as osp

import pytest
import torch
import torch.nn as nn

from mfuser.models.backbones import FusedEncoder

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class ScaledLinearAdapter(nn.Module):
    """Stand-in adapter with the MVFuser call signature: returns scale * Linear(x)."""

    def __init__(self, d_model, scale=0.0, **kwargs):
        super().__init__()
        self.lin = nn.Linear(d_model, d_model)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.seen_n_first = None

    def forward(self, x, n_first):
        self.seen_n_first = n_first
        return self.scale * self.lin(x)


def tiny(name, width=64, depth=2, **kw):
    return dict(name=name, depth=depth, embed_dim=width, num_heads=2, **kw)


def build(vfm='vit_small_patch14_dinov2', vlm='eva02_large_patch14_clip_336', scale=0.0,
          vfm_width=64, vlm_width=64, depth=2, **kw):
    kw.setdefault('out_indices', (0, 1, 1, depth - 1))
    kw.setdefault('img_size', 56)
    return FusedEncoder(vfm=tiny(vfm, vfm_width, depth), vlm=tiny(vlm, vlm_width, depth),
                        adapter=dict(type=ScaledLinearAdapter, scale=scale), **kw)


@pytest.mark.parametrize('hw', [(56, 56), (50, 77), (28, 33), (64, 40)])
def test_output_shapes_any_size(hw):
    enc = build()
    H, W = hw
    feats, g, d = enc(torch.randn(2, 3, H, W))
    h, w = -(-H // 14), -(-W // 14)  # padded to the patch size
    assert [tuple(f.shape) for f in feats] == [
        (2, 128, 4 * h, 4 * w), (2, 128, 2 * h, 2 * w), (2, 128, h, w), (2, 128, h // 2, w // 2)]
    assert enc.out_channels == [128] * 4
    assert g.shape == (2, 1, enc.embed_dim) and d.shape == (2, enc.embed_dim, h, w)
    assert enc.patch_size == 14 and enc.vlm_name == 'eva02_large_patch14_clip_336'


def test_floor_grid_mode_matches_reference_grid():
    enc = build(grid_mode='floor')
    feats, _, d = enc(torch.randn(1, 3, 56 + 8, 56 + 13))
    assert feats[2].shape[-2:] == (4, 4) and d.shape[-2:] == (4, 4)


def test_adapter_gets_n_first_and_one_adapter_per_block():
    enc = build(depth=3, out_indices=(0, 1, 2, 2))
    enc(torch.randn(1, 3, 28, 42))
    assert len(enc.adapter) == 3
    assert all(a.seen_n_first == 1 + 2 * 3 for a in enc.adapter)  # cls + 2x3 patches


def _pixels_to_inputs(pixels):
    x_vlm = (pixels / 255.0 - CLIP_MEAN) / CLIP_STD
    x_vfm = (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return x_vlm, x_vfm


@pytest.mark.parametrize('vlm', ['eva02_large_patch14_clip_336',
                                 'vit_large_patch14_clip_quickgelu_336'])
def test_scale_zero_adapters_equal_separate_towers(vlm):
    enc = build(vlm=vlm, scale=0.0).eval()
    pixels = torch.rand(2, 3, 44, 60) * 255
    x_vlm, x_vfm = _pixels_to_inputs(pixels)
    with torch.no_grad():
        feats, g, d = enc(x_vlm)
        # independent computation with timm's own forward paths
        _, vfm_maps = enc.vfm.forward_intermediates(x_vfm, indices=[0, 1], norm=False)
        _, vlm_maps = enc.vlm.forward_intermediates(x_vlm, indices=[0, 1], norm=False)
        fused_final = enc.vlm.forward_features(x_vlm) + enc.vfm.forward_features(x_vfm)
        proj = enc.vlm.head(fused_final)
    cat0 = torch.cat([vfm_maps[0], vlm_maps[0]], 1)
    cat1 = torch.cat([vfm_maps[1], vlm_maps[1]], 1)
    torch.testing.assert_close(feats[2], cat1, atol=1e-5, rtol=1e-5)      # fpn3 = identity
    torch.testing.assert_close(feats[0], enc.fpn1(cat0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats[3], nn.functional.max_pool2d(cat1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g, proj[:, :1], atol=1e-5, rtol=1e-5)
    h, w = d.shape[-2:]
    torch.testing.assert_close(d, proj[:, 1:].transpose(1, 2).reshape(2, -1, h, w),
                               atol=1e-5, rtol=1e-5)


def test_gradients_reach_trainable_parts_only_and_towers_follow_the_mode():
    enc = build(vfm_width=64, vlm_width=48, scale=0.1)
    enc.train()
    assert enc.vfm.training and enc.vlm.training  # as released (frozen, not in eval)
    assert enc.fpn1.training and enc.adapter.training
    feats, g, d = enc(torch.randn(2, 3, 28, 42))
    (sum(f.square().mean() for f in feats) + g.square().mean() + d.square().mean()).backward()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(('adapter.', 'fpn', 'adapter_proj1.',
                                           'adapter_proj2.', 'adapter_proj3.'))
                             for n in trainable)
    for name, p in enc.named_parameters():
        if name.startswith(('vfm.', 'vlm.')):
            assert not p.requires_grad and p.grad is None, name
    for prefix in ('adapter.0.lin', 'adapter.1.lin', 'fpn1.0', 'fpn2.0', 'adapter_proj1.0',
                   'adapter_proj1.1', 'adapter_proj2.1', 'adapter_proj3'):
        grads = [p.grad for n, p in enc.named_parameters() if n.startswith(prefix)]
        assert grads and all(gr is not None and gr.abs().sum() > 0 for gr in grads), prefix


def from_config(variant: str, **kw) -> FusedEncoder:
    """The backbone of configs/mfuser_<variant>_gta.py as configured (activations, drop path,
    heads, ...), with 2 narrow blocks per tower and no weight files."""
    from mmengine.config import Config
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                    f'mfuser_{variant}_gta.py')
    cfg = Config.fromfile(path).model.backbone.to_dict()
    cfg.pop('type')
    for key in ('vfm', 'vlm'):
        cfg[key].update(checkpoint=None, depth=2, embed_dim=64, num_heads=2)
    cfg.update(img_size=64, out_indices=(0, 1, 1, 1), **kw)
    return FusedEncoder(**cfg)


def towers_only_train(enc: FusedEncoder) -> FusedEncoder:
    """Train mode, but the trainable parts (MVFuser dropout, fpn1 BatchNorm) in eval: what
    changes then is the frozen towers' mode only."""
    enc.train()
    for part in (enc.adapter, enc.fpn1):
        part.eval()
    return enc


def encode(enc: FusedEncoder, x: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    with torch.no_grad():
        feats, g, d = enc(x)
    return [*feats, g, d]


def test_token_drop_path_is_timm_drop_path_on_the_sequence_first_stream():
    """The released CLIP blocks run sequence-first (L, B, C) with timm's drop_path, so one
    keep/drop draw per token position is shared by the batch; TokenDropPath does that on our
    batch-first tokens: the same draws give the same result."""
    from timm.layers import drop_path

    from mfuser.models.backbones.vit_tower import TokenDropPath
    x = torch.randn(3, 50, 8)
    module = TokenDropPath(0.3).train()
    torch.manual_seed(5)
    ours = module(x)
    torch.manual_seed(5)
    ref = drop_path(x.transpose(0, 1), 0.3, training=True).transpose(0, 1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    kept = ours[0, :, 0] != 0
    assert 0 < int(kept.sum()) < 50  # some tokens dropped, others kept (scaled by 1/0.7)
    torch.testing.assert_close(ours[:, kept], x[:, kept] / 0.7)
    assert (ours[:, ~kept] == 0).all()
    assert module.eval()(x) is x


def test_clip_tower_stochastic_depth_is_live_in_training_as_released():
    """configs/mfuser_clip_gta.py: drop path 0.1 over the CLIP blocks, per token; the frozen
    towers follow train mode (release), so training draws differ and eval is deterministic;
    backbone.eval_frozen_towers=True keeps them in eval (train == eval)."""
    from mfuser.models.backbones.vit_tower import TokenDropPath
    enc = from_config('clip')
    drops = [m for m in enc.vlm.modules() if isinstance(m, TokenDropPath)]
    assert [m.drop_prob for m in drops] == pytest.approx([0.1, 0.1])  # linspace(0, 0.1, 2)[1]
    x = torch.randn(2, 3, 64, 64)
    ref = encode(enc.eval(), x)
    assert all(torch.equal(a, b) for a, b in zip(ref, encode(enc, x, seed=1)))
    towers_only_train(enc)
    assert enc.vlm.training and all(m.training for m in drops)
    a, b = encode(enc, x, seed=1), encode(enc, x, seed=2)
    assert not torch.allclose(a[-1], ref[-1]) and not torch.allclose(a[-1], b[-1])
    assert not torch.allclose(a[-2], ref[-2])
    frozen_eval = from_config('clip', eval_frozen_towers=True)
    frozen_eval.load_state_dict(enc.state_dict())
    towers_only_train(frozen_eval)
    assert not frozen_eval.vlm.training and not frozen_eval.vfm.training
    assert frozen_eval.training
    for got, want in zip(encode(frozen_eval, x, seed=1), ref):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize('variant', ['eva02', 'siglip'])
def test_eva02_and_siglip_towers_compute_the_same_in_train_and_eval_mode(variant):
    """EVA02, SigLIP and DINOv2 have no live stochastic layers as configured (drop path 0,
    dropouts 0), so the release's train mode for the frozen towers changes nothing there."""
    enc = from_config(variant)
    x = torch.randn(2, 3, 64, 64)
    ref = encode(enc.eval(), x)
    towers_only_train(enc)
    assert enc.vlm.training and enc.vfm.training
    for got, want in zip(encode(enc, x, seed=3), ref):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_activation_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    enc = build(scale=0.3)
    enc_cp = build(scale=0.3, with_cp=True)
    enc_cp.load_state_dict(enc.state_dict())
    x = torch.randn(1, 3, 28, 28)
    outs = []
    for model in (enc, enc_cp):
        model.train()
        feats, g, d = model(x)
        (feats[0].mean() + g.sum() + d.mean()).backward()
        outs.append((g.detach(), model.adapter[0].lin.weight.grad.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_width_and_patch_mismatch_are_handled():
    enc = build(vfm='vit_small_patch14_dinov2', vlm='vit_large_patch16_siglip_384',
                vfm_width=64, vlm_width=48, img_size=64)
    assert enc.patch_size == 16
    assert enc.vfm.patch_embed.proj.weight.shape[-2:] == (16, 16)
    # one projection pair per block (the release's adapter_proj1/2) and one for the output
    assert len(enc.adapter_proj1) == len(enc.adapter_proj2) == len(enc.vfm.blocks)
    assert enc.adapter_proj1[0].out_features == 48 and enc.adapter_proj2[0].out_features == 64
    assert isinstance(enc.adapter_proj3, nn.Linear) and enc.adapter_proj3.out_features == 48
    feats, g, d = enc(torch.randn(1, 3, 64, 40))
    assert feats[2].shape == (1, 112, 4, 3)
    assert g.shape == (1, 1, 48) and d.shape == (1, 48, 4, 3)


@pytest.mark.parametrize('vfm,vlm', [
    ('vit_small_patch14_dinov2', 'eva02_large_patch14_clip_336'),
    ('vit_base_patch14_dinov2', 'vit_large_patch14_clip_quickgelu_336'),
    ('vit_large_patch14_dinov2', 'vit_large_patch16_siglip_384'),
])
def test_supported_pairs_build_tiny(vfm, vlm):
    enc = build(vfm=vfm, vlm=vlm)
    feats, g, d = enc(torch.randn(1, 3, 32, 32))
    assert len(feats) == 4 and g.shape[:2] == (1, 1) and d.shape[1] == enc.embed_dim


def test_clip_config_tower_blocks_compute_quickgelu():
    """The CLIP config's image tower computes its MLPs with QuickGELU, x * sigmoid(1.702 x),
    as OpenAI trained the weights: every block equals that computation by hand (pre-norm
    attention and MLP residuals) and differs from the same block with the exact GELU."""
    from mfuser.models.backbones import vit_tower as vt
    enc = from_config('clip').eval()
    x = torch.randn(2, 10, enc.vlm.embed_dim) * 2
    with torch.no_grad():
        for i, blk in enumerate(enc.vlm.blocks):
            y = x + blk.attn(blk.norm1(x))
            h = blk.mlp.fc1(blk.norm2(y))
            quick = y + blk.mlp.fc2(h * torch.sigmoid(1.702 * h))
            gelu = y + blk.mlp.fc2(nn.functional.gelu(h))
            out = vt.run_block(enc.vlm, i, x, None)
            torch.testing.assert_close(out, quick, rtol=1e-5, atol=1e-5)
            assert (out - gelu).abs().max() > 1e-3
            x = out


def test_siglip_global_and_dense_embeddings_share_the_map_head():
    """Dense SigLIP embeddings = the MAP head with each token attending only to itself."""
    enc = build(vlm='vit_large_patch16_siglip_384', img_size=32).eval()
    x = torch.randn(1, 3, 16, 16)  # one patch: attention over one token == value path
    with torch.no_grad():
        _, g, d = enc(x)
    torch.testing.assert_close(g[:, 0], d[:, :, 0, 0], atol=1e-5, rtol=1e-5)


def test_input_norm_conversion_follows_dtype():
    enc = build().to(torch.float64)
    feats, g, d = enc(torch.randn(1, 3, 28, 28, dtype=torch.float64))
    assert g.dtype == torch.float64
    assert enc.input_mean == pytest.approx([v * 255 for v in CLIP_MEAN.flatten().tolist()])


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match='depth'):
        FusedEncoder(vfm=tiny('vit_small_patch14_dinov2', depth=2),
                     vlm=tiny('eva02_large_patch14_clip_336', depth=3),
                     adapter=None, out_indices=(0, 1, 1, 1), img_size=28)
    with pytest.raises(ValueError, match='out_indices'):
        build(out_indices=(7, 11, 15, 23))
    with pytest.raises(ValueError, match='Unknown timm model'):
        FusedEncoder(vfm=dict(name='not_a_model'), vlm=tiny('eva02_large_patch14_clip_336'))
    with pytest.raises(ValueError, match='patch_size'):
        FusedEncoder(vfm=tiny('vit_small_patch14_dinov2', patch_size=16),
                     vlm=tiny('eva02_large_patch14_clip_336'), out_indices=(0, 1, 1, 1))
    with pytest.raises(ValueError, match='pretrained'):
        FusedEncoder(vfm=tiny('vit_small_patch14_dinov2', pretrained=True),
                     vlm=tiny('eva02_large_patch14_clip_336'), out_indices=(0, 1, 1, 1))
    with pytest.raises(ValueError, match='d_model'):
        FusedEncoder(vfm=tiny('vit_small_patch14_dinov2'),
                     vlm=tiny('eva02_large_patch14_clip_336'), out_indices=(0, 1, 1, 1),
                     adapter=dict(type=ScaledLinearAdapter, d_model=32))
    with pytest.raises(ValueError, match='grid_mode'):
        build(grid_mode='reflect')
    with pytest.raises(ValueError, match='name'):
        FusedEncoder(vfm=dict(depth=2), vlm=tiny('eva02_large_patch14_clip_336'))
    with pytest.raises(FileNotFoundError, match='vfm.checkpoint'):
        FusedEncoder(vfm=tiny('vit_small_patch14_dinov2', checkpoint='/nonexistent/d.pth'),
                     vlm=tiny('eva02_large_patch14_clip_336'), out_indices=(0, 1, 1, 1))
    enc = build()
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        enc(torch.randn(3, 28, 28))


def test_no_adapter_ablation_and_registry_build():
    from mmseg.registry import MODELS
    enc = MODELS.build(dict(type='FusedEncoder', vfm=tiny('vit_small_patch14_dinov2'),
                            vlm=tiny('eva02_large_patch14_clip_336'), adapter=None,
                            out_indices=(0, 1, 1, 1), img_size=28))
    assert enc.adapter is None
    feats, _, _ = enc(torch.randn(1, 3, 28, 28))
    assert feats[2].shape == (1, 128, 2, 2)


def test_neck_keys_match_released_checkpoint_names():
    import json
    import pathlib
    table = (pathlib.Path(__file__).resolve().parent / 'data' / 'checkpoint_keys' /
             'mfuser_eva_visual_additions.keys.json')
    keys = json.loads(table.read_text())
    from mfuser.models.backbones.fused_encoder import build_fpn_necks
    necks = nn.ModuleDict(dict(zip(['fpn1', 'fpn2', 'fpn3', 'fpn4'],
                                   build_fpn_necks(2048, dict(type='BN')))))
    ours = {k: list(v.shape) for k, v in necks.state_dict().items()}
    theirs = {k[len('visual.'):]: v for k, v in keys.items() if k.startswith('visual.fpn')}
    assert ours == theirs


def test_default_mvfuser_adapters_fuse_the_streams_as_specified():
    """With the default adapters (MVFuser, here at scale 0.5), after block i adapter i gets
    cat([VFM tokens, VLM tokens]) with n_first = the VFM length, and its output, split there,
    is added to the tokens block i + 1 of each tower receives (seen through forward hooks)."""
    from mfuser.models.mvfuser import MVFuser
    enc = FusedEncoder(vfm=tiny('vit_small_patch14_dinov2', depth=3),
                       vlm=tiny('eva02_large_patch14_clip_336', depth=3),
                       out_indices=(0, 1, 2, 2), img_size=28).eval()
    assert all(isinstance(a, MVFuser) for a in enc.adapter) and len(enc.adapter) == 3
    seen = {}

    def record(module, name):
        def before(mod, args, kwargs):
            seen[f'{name}_in'] = args[0], kwargs

        def after(mod, args, kwargs, output):
            seen[f'{name}_out'] = output
        module.register_forward_pre_hook(before, with_kwargs=True)
        module.register_forward_hook(after, with_kwargs=True)

    for i in range(3):
        record(enc.vfm.blocks[i], f'vfm{i}')
        record(enc.vlm.blocks[i], f'vlm{i}')
        record(enc.adapter[i], f'adapter{i}')
        enc.adapter[i].scale.data.fill_(0.5)
    with torch.no_grad():
        enc(torch.randn(1, 3, 28, 42))
    n_vfm = seen['vfm0_out'].shape[1]
    assert n_vfm == 1 + 2 * 3  # class token, 2x3 patches
    for i in range(3):
        tokens, kwargs = seen[f'adapter{i}_in']
        assert kwargs == {'n_first': n_vfm}
        torch.testing.assert_close(tokens, torch.cat([seen[f'vfm{i}_out'], seen[f'vlm{i}_out']],
                                                     1))
        delta = seen[f'adapter{i}_out']
        assert delta.abs().max() > 1e-3  # the adapter does contribute
        if i + 1 < 3:
            torch.testing.assert_close(seen[f'vfm{i + 1}_in'][0],
                                       seen[f'vfm{i}_out'] + delta[:, :n_vfm])
            torch.testing.assert_close(seen[f'vlm{i + 1}_in'][0],
                                       seen[f'vlm{i}_out'] + delta[:, n_vfm:])


@pytest.mark.slow
def test_full_size_default_pair_512_forward():
    """DINOv2-L/14 + EVA02-CLIP-L/14 with MVFusers at 512x512 in the default 'pad' grid mode
    (37x37 tokens; the release's 'floor' mode is covered by test_parity.py)."""
    enc = FusedEncoder(adapter=dict(type='MVFuser', d_state=16)).eval()
    assert enc.depth == 24 and enc.embed_dim == 768 and enc.out_channels == [2048] * 4
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        feats, g, d = enc(x)
    assert [tuple(f.shape) for f in feats] == [(1, 2048, 148, 148), (1, 2048, 74, 74),
                                               (1, 2048, 37, 37), (1, 2048, 18, 18)]
    assert g.shape == (1, 1, 768) and d.shape == (1, 768, 37, 37)

"""MTEnhancer layer and stack: released key names, the spec's data flow, shapes."""
import pytest
import torch
from mmseg.registry import MODELS

from mfuser.models.mtenhancer import MTEnhancer, MTEnhancerStack


def test_stack_key_names_follow_released_context_decoder():
    m = MTEnhancerStack(visual_dim=768, transformer_width=256, transformer_heads=4,
                        transformer_layers=1)
    keys = set(m.state_dict())
    for k in ['memory_proj.0.weight', 'memory_proj.1.weight', 'memory_proj.2.bias',
              'text_proj.0.weight', 'text_proj.1.bias', 'out_proj.0.weight',
              'out_proj.1.weight', 'decoder.0.self_attn.q_proj.weight',
              'decoder.0.self_attn.k_proj.weight', 'decoder.0.self_attn.v_proj.weight',
              'decoder.0.self_attn.proj.weight', 'decoder.0.self_attn.proj.bias',
              'decoder.0.cross_attn.in_proj.weight', 'decoder.0.cross_attn.A_log',
              'decoder.0.cross_attn.scale', 'decoder.0.norm1.weight', 'decoder.0.norm3.bias',
              'decoder.0.mlp.0.weight', 'decoder.0.mlp.3.weight']:
        assert k in keys, k
    assert 'decoder.0.self_attn.q_proj.bias' not in keys
    assert m.state_dict()['decoder.0.cross_attn.A_log'].shape == (128, 16)
    assert m.state_dict()['decoder.0.mlp.0.weight'].shape == (1024, 256)


def test_stack_forward_shape_and_registry():
    m = MODELS.build(dict(type='MTEnhancerStack', visual_dim=32, transformer_width=16,
                          transformer_heads=2, transformer_layers=2)).eval()
    text = torch.randn(2, 19, 32, requires_grad=True)
    visual = torch.randn(2, 1 + 6 * 6, 32)
    out = m(text, visual)
    assert out.shape == text.shape
    out.sum().backward()
    assert torch.isfinite(text.grad).all()
    with pytest.raises(ValueError, match='visual'):
        m(text, torch.randn(2, 5, 16))


def test_visual_tokens_reach_the_text_only_through_the_mvfuser():
    """(The layer's numerics are checked against the official model through the golden's
    context_decoder_out in test_parity.py.) With the MVFuser's output scale at 0 the image has
    no effect; with it on, it has."""
    layer = MTEnhancer(16, 2, dropout=0.0).eval()
    x, mem = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    with torch.no_grad():
        layer.cross_attn.scale.fill_(0.0)
        torch.testing.assert_close(layer(x, mem), layer(x, torch.randn(2, 7, 16)))
        layer.cross_attn.scale.fill_(1.0)
        assert not torch.allclose(layer(x, mem), layer(x, torch.randn(2, 7, 16)))


def test_second_text_copy_sees_the_whole_image():
    """The scan is one-directional: the leading text copy cannot see late image tokens,
    the trailing copy sees all of them."""
    layer = MTEnhancer(16, 2, dropout=0.0).eval()
    fuser = layer.cross_attn
    k, m = 3, 8
    t = torch.randn(1, k, 16)
    mem = torch.randn(1, m, 16)
    mem2 = mem.clone()
    mem2[:, -1] += 1.0
    s1 = fuser(torch.cat([t, mem, t], 1))
    s2 = fuser(torch.cat([t, mem2, t], 1))
    assert torch.equal(s1[:, :k], s2[:, :k])
    assert (s1[:, -k:] - s2[:, -k:]).abs().amax() > 0


def test_attention_without_qkv_bias_matches_manual():
    layer = MTEnhancer(8, 2, dropout=0.0).eval()
    a = layer.self_attn
    x = torch.randn(1, 4, 8)
    heads = lambda t: t.reshape(1, 4, 2, 4).transpose(1, 2)  # noqa: E731
    q, k, v = (heads(x @ w.weight.T) for w in (a.q_proj, a.k_proj, a.v_proj))
    att = (q @ k.transpose(-1, -2) * 4 ** -0.5).softmax(-1) @ v
    want = a.proj(att.transpose(1, 2).reshape(1, 4, 8))
    torch.testing.assert_close(a(x, x, x), want)

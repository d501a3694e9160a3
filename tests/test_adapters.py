"""Ablation adapters: parameter counts vs the paper, shared interface, stream separation."""
import pytest
import torch
from mmseg.registry import MODELS

from mfuser.models.adapters import ConcatAttentionAdapter, SeparateAttentionAdapter
from mfuser.models.mvfuser import MVFuser


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_paper_at_vit_l():
    assert round(_count(ConcatAttentionAdapter(1024)) / 1e6, 2) == 4.20
    assert round(_count(SeparateAttentionAdapter(1024)) / 1e6, 2) == 8.40
    assert round(_count(MVFuser(1024)) / 1e6, 2) == 1.67


@pytest.mark.parametrize('name', ['ConcatAttentionAdapter', 'SeparateAttentionAdapter',
                                  'MVFuser'])
def test_common_interface(name):
    m = MODELS.build(dict(type=name, d_model=32, **({} if name == 'MVFuser' else
                                                     dict(num_heads=4)))).eval()
    x = torch.randn(2, 11, 32, requires_grad=True)
    out = m(x, n_first=5)
    assert out.shape == x.shape
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # small initial scale: the adapter starts close to a zero contribution
    assert m.scale.item() == pytest.approx(1e-3)


def test_separate_attention_does_not_mix_streams():
    m = SeparateAttentionAdapter(16, num_heads=2).eval()
    x = torch.randn(1, 10, 16)
    x2 = x.clone()
    x2[:, 7] += 1.0                        # touch the second stream only
    d = (m(x, n_first=4) - m(x2, n_first=4)).abs().amax(-1)[0]
    assert torch.all(d[:4] == 0) and torch.all(d[4:] > 0)
    with pytest.raises(ValueError, match='n_first'):
        m(x)


def test_concat_attention_mixes_streams():
    m = ConcatAttentionAdapter(16, num_heads=2).eval()
    x = torch.randn(1, 10, 16)
    x2 = x.clone()
    x2[:, 7] += 1.0
    d = (m(x) - m(x2)).abs().amax(-1)[0]
    assert torch.all(d > 0)


def test_concat_attention_matches_manual_attention():
    m = ConcatAttentionAdapter(8, num_heads=2).eval()
    x = torch.randn(2, 5, 8)
    a = m.attn
    q, k, v = a.attn.qkv(a.norm(x)).chunk(3, dim=-1)
    heads = lambda t: t.reshape(2, 5, 2, 4).transpose(1, 2)  # noqa: E731
    att = (heads(q) @ heads(k).transpose(-1, -2) / 2.0).softmax(-1) @ heads(v)
    want = a.attn.proj(att.transpose(1, 2).reshape(2, 5, 8)) * m.scale
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-7)

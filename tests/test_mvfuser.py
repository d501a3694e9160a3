"""MVFuser: parameter layout of the released checkpoints, the spec's math, and behaviour."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from mfuser.models.mvfuser import GatedRMSNorm, MVFuser
from mfuser.ops import selective_scan_ref

KEYS = Path(__file__).parent / 'data' / 'checkpoint_keys' / 'mfuser_eva_visual_additions.keys.json'


def _adapter_shapes():
    table = json.loads(KEYS.read_text())
    prefix = 'visual.adapter.0.'
    return {k[len(prefix):]: list(v) for k, v in table.items() if k.startswith(prefix)}


def test_parameter_count_vit_l():
    m = MVFuser(1024)
    assert sum(p.numel() for p in m.parameters()) == 1_667_585
    assert m.dt_rank == 64 and m.d_half == 512


def test_names_and_shapes_match_released_checkpoint():
    expected = _adapter_shapes()
    got = {k: list(v.shape) for k, v in MVFuser(1024).state_dict().items()}
    assert got == expected
    # a released adapter loads strictly by name
    sd = {k: torch.randn(v) if v else torch.tensor(0.5) for k, v in expected.items()}
    MVFuser(1024).load_state_dict(sd, strict=True)


def test_initialisation():
    m = MVFuser(64, d_state=8)
    assert torch.allclose(m.A_log[3], torch.log(torch.arange(1, 9.0)))
    assert torch.all(m.D == 1) and m.scale.item() == pytest.approx(1e-3)
    dt = F.softplus(m.dt_proj.bias)  # inverse-softplus init: softplus(bias) in [dt_min, dt_max]
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert m.dt_proj.weight.abs().max() <= m.dt_rank ** -0.5
    assert m.no_weight_decay() == {'A_log', 'D'}


def _spec_forward(m: MVFuser, x):
    """Section 2 of the spec written out with functional ops and the sequential scan."""
    h = m.d_half
    xz = x @ m.in_proj.weight.T
    xs, z = xz[..., :h].transpose(1, 2), xz[..., h:].transpose(1, 2)
    xs = F.silu(F.conv1d(xs, m.conv1d_x.weight, padding=1, groups=h))
    z = F.silu(F.conv1d(z, m.conv1d_z.weight, padding=1, groups=h))
    dbl = xs.transpose(1, 2) @ m.x_proj.weight.T
    dt, B, C = dbl.split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    bias = m.dt_proj.bias
    delta = (dt @ m.dt_proj.weight.T + bias).transpose(1, 2)   # bias once here ...
    y = selective_scan_ref(xs, delta, -torch.exp(m.A_log), B.transpose(1, 2),
                           C.transpose(1, 2), m.D, delta_bias=bias,  # ... and again here
                           delta_softplus=True)
    y = y.transpose(1, 2)
    y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) * m.norm.weight * \
        F.silu(z.transpose(1, 2))
    return (y @ m.out_proj.weight.T) * m.scale


@pytest.mark.parametrize('seqlen', [1, 2, 37])
def test_forward_matches_spec(seqlen):
    # float32: this torch build's float64 depthwise conv1d is pathologically slow on the CPU
    m = MVFuser(48, d_state=16).eval()
    with torch.no_grad():
        m.scale.fill_(1.0)
    x = torch.randn(2, seqlen, 48)
    out = m(x, n_first=seqlen // 2)  # n_first accepted and ignored
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, _spec_forward(m, x), rtol=1e-4, atol=1e-6)


def test_double_dt_bias_flag():
    torch.manual_seed(1)
    a = MVFuser(32, double_dt_bias=True).eval()
    b = MVFuser(32, double_dt_bias=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 20, 32)
    assert not torch.allclose(a(x), b(x))
    with torch.no_grad():  # bias counted once with the flag off: doubling it must match
        b.dt_proj.bias.mul_(2)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-8)


def test_conv_is_non_causal():
    m = MVFuser(32).eval()
    x = torch.randn(1, 12, 32)
    x2 = x.clone()
    x2[:, -1] += 1.0
    diff = (m(x) - m(x2)).abs().amax(-1)[0]
    assert diff[-2] > 0          # the 'same' conv sees the next token
    assert torch.all(diff[:-2] == 0)  # the scan is causal


def test_backward_and_backends_agree():
    x = torch.randn(2, 40, 32, requires_grad=True)
    outs = []
    for backend in ('reference', 'cpp', 'chunked'):
        torch.manual_seed(3)
        m = MVFuser(32, scan_backend=backend).eval()
        y = m(x)
        gx, ga = torch.autograd.grad(y.square().sum(), [x, m.A_log])
        assert torch.isfinite(gx).all() and ga.abs().sum() > 0
        outs.append((y, gx, ga))
    for y, gx, ga in outs[1:]:
        torch.testing.assert_close(y, outs[0][0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(gx, outs[0][1], rtol=1e-3, atol=1e-7)
        torch.testing.assert_close(ga, outs[0][2], rtol=1e-3, atol=1e-9)


def test_half_precision_input():
    m = MVFuser(32).eval().to(torch.bfloat16)
    out = m(torch.randn(1, 9, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_gated_rmsnorm():
    n = GatedRMSNorm(8)
    with torch.no_grad():
        n.weight.copy_(torch.linspace(0.5, 2, 8))
    y, z = torch.randn(3, 8), torch.randn(3, 8)
    want = y / torch.sqrt((y * y).mean(-1, keepdim=True) + 1e-5) * n.weight * z * torch.sigmoid(z)
    torch.testing.assert_close(n(y, z), want)


def test_registry_and_errors():
    m = MODELS.build(dict(type='MVFuser', d_model=16, d_state=4))
    assert isinstance(m, MVFuser) and m.dt_rank == math.ceil(16 / 16)
    with pytest.raises(ValueError, match=r'\(B, L, 16\)'):
        m(torch.randn(2, 5, 8))

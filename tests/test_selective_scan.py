"""Selective scan: every backend against an independent scalar loop and against each other."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfuser.ops import selective_scan as ss
from mfuser.ops import selective_scan_fn, selective_scan_ref

FAST = ['cpp', 'chunked']


def _naive_numpy(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False):
    """Scalar triple loop in float64 numpy, written straight from the recurrence."""
    u, delta, A, B, C = (t.detach().double().numpy() for t in (u, delta, A, B, C))
    b_, d_, l_ = u.shape
    n_ = A.shape[1]
    y = np.zeros((b_, d_, l_))
    last = np.zeros((b_, d_, n_))
    for b in range(b_):
        for d in range(d_):
            h = np.zeros(n_)
            for t in range(l_):
                dt = delta[b, d, t] + (0.0 if delta_bias is None else float(delta_bias[d].detach()))
                if softplus:
                    dt = math.log1p(math.exp(dt))
                for n in range(n_):
                    h[n] = math.exp(dt * A[d, n]) * h[n] + dt * B[b, n, t] * u[b, d, t]
                y[b, d, t] = float(np.dot(C[b, :, t], h))
                if D is not None:
                    y[b, d, t] += float(D[d]) * u[b, d, t]
                if z is not None:
                    zz = float(z[b, d, t])
                    y[b, d, t] *= zz / (1.0 + math.exp(-zz))
            last[b, d] = h
    return torch.from_numpy(y), torch.from_numpy(last)


def _inputs(b, d, seqlen, n, dtype=torch.float64, with_d=True, with_z=True, with_bias=True):
    g = torch.Generator().manual_seed(b * 1000 + d * 100 + seqlen + n)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    args = dict(
        u=r(b, d, seqlen),
        delta=r(b, d, seqlen) * 0.5,
        A=-torch.rand(d, n, generator=g, dtype=dtype) * 2 - 0.05,
        B=r(b, n, seqlen),
        C=r(b, n, seqlen),
        D=r(d) if with_d else None,
        z=r(b, d, seqlen) if with_z else None,
        delta_bias=r(d) * 0.3 if with_bias else None,
    )
    return {k: (v.requires_grad_() if v is not None else None) for k, v in args.items()}


def _run(args, backend, softplus, last):
    out = selective_scan_fn(**args, delta_softplus=softplus, return_last_state=last,
                            backend=backend)
    y, h = out if last else (out, None)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    loss = (y * weights).sum() + (h.sum() * 0.7 if last else 0)
    leaves = [v for v in args.values() if v is not None]
    grads = torch.autograd.grad(loss, leaves)
    return y, h, grads


def test_reference_matches_scalar_loop():
    args = _inputs(2, 3, 9, 4)
    y, last = selective_scan_ref(**args, delta_softplus=True, return_last_state=True)
    y_np, last_np = _naive_numpy(**args, softplus=True)
    torch.testing.assert_close(y, y_np, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_np, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('backend', FAST)
@pytest.mark.parametrize('shape,opts', [
    ((1, 3, 1, 4), dict()),                                      # L = 1
    ((2, 4, 37, 16), dict()),                                     # odd L, default N
    ((2, 3, 130, 1), dict(with_z=False)),                         # N = 1, two chunks + tail
    ((1, 5, 64, 8), dict(with_d=False, with_bias=False)),         # D None, no bias
    ((2, 2, 129, 16), dict(with_z=False, with_d=False)),
])
@pytest.mark.parametrize('softplus', [True, False])
def test_backend_matches_reference(backend, shape, opts, softplus):
    args = _inputs(*shape, **opts)
    if not softplus:  # delta must stay positive without the softplus
        args['delta'] = args['delta'].detach().abs().requires_grad_()
    last = shape[2] != 64  # exercise both return conventions
    y_ref, h_ref, g_ref = _run(args, 'reference', softplus, last)
    y, h, g = _run(args, backend, softplus, last)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    if last:
        torch.testing.assert_close(h, h_ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize('backend', FAST)
def test_float32_close_to_float64(backend):
    args = _inputs(2, 6, 300, 16)
    y64, h64, g64 = _run(args, 'reference', True, True)
    args32 = {k: (v.detach().float().requires_grad_() if v is not None else None)
              for k, v in args.items()}
    y, h, g = _run(args32, backend, True, True)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h.double(), h64, rtol=1e-4, atol=1e-4)
    for a, b in zip(g, g64):
        scale = b.abs().max().item() + 1e-6
        assert (a.double() - b).abs().max().item() / scale < 1e-4


@pytest.mark.parametrize('backend', ['cpp', 'chunked'])
def test_gradcheck_float64(backend):
    args = _inputs(1, 2, 5, 3)
    keys = list(args)

    def fn(*tensors):
        kw = dict(zip(keys, tensors))
        y, h = selective_scan_fn(**kw, delta_softplus=True, return_last_state=True,
                                 backend=backend)
        return y, h

    assert torch.autograd.gradcheck(fn, tuple(args[k] for k in keys), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize('backend', FAST)
def test_long_sequence_strong_decay_is_stable(backend):
    """L = 16384 with delta*|A| up to ~1e3: finite values and gradients, and the state
    forgets, so the tail matches a scan started fresh on the tail alone."""
    b, d, seqlen, n = 1, 4, 16384, 16
    g = torch.Generator().manual_seed(0)
    u = torch.randn(b, d, seqlen, generator=g)
    delta = (torch.randn(b, d, seqlen, generator=g) * 3 + 2).requires_grad_()
    A = (-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * 20).requires_grad_()
    B = torch.randn(b, n, seqlen, generator=g).requires_grad_()
    C = torch.randn(b, n, seqlen, generator=g)
    y, last = selective_scan_fn(u, delta, A, B, C, delta_softplus=True,
                                return_last_state=True, backend=backend)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    y.square().mean().backward()
    for t in (delta, A, B):
        assert torch.isfinite(t.grad).all()
    tail = 256
    y_tail = selective_scan_fn(u[..., -tail:], delta[..., -tail:].detach(), A.detach(),
                               B[..., -tail:].detach(), C[..., -tail:], delta_softplus=True,
                               backend='reference')
    torch.testing.assert_close(y[..., -tail // 2:].detach(), y_tail[..., -tail // 2:],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('backend', FAST)
def test_half_precision_round_trip(dtype, backend):
    args = _inputs(2, 4, 50, 16, dtype=torch.float32)
    half = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None)
            for k, v in args.items()}
    y = selective_scan_fn(**half, delta_softplus=True, backend=backend)
    assert y.dtype == dtype
    y.float().sum().backward()
    assert half['u'].grad.dtype == dtype and half['A'].grad.dtype == dtype
    ref = selective_scan_fn(**{k: (v.detach().to(dtype).float() if v is not None else None)
                               for k, v in args.items()},
                            delta_softplus=True, backend='reference')
    tol = 2e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(y.float(), ref.to(dtype).float(), rtol=tol, atol=tol)


def test_softplus_and_bias_semantics():
    """delta_bias is added before the softplus (mamba-ssm semantics)."""
    args = _inputs(1, 3, 11, 4, with_z=False, with_d=False, with_bias=True)
    bias = args.pop('delta_bias').detach()
    y1 = selective_scan_fn(**args, delta_bias=bias, delta_softplus=True)
    args['delta'] = F.softplus(args['delta'].detach() + bias[:, None])
    y2 = selective_scan_fn(**args, backend='reference')
    torch.testing.assert_close(y1, y2)


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------
def test_auto_backend_on_cpu_is_cpp(monkeypatch):
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    assert ss.active_backend('cpu') == 'cpp'
    assert 'cpp' in ss.available_backends() and 'reference' in ss.available_backends()


def test_env_var_and_argument_force_backend(monkeypatch):
    monkeypatch.setenv(ss.ENV_VAR, 'chunked')
    assert ss.active_backend('cpu') == 'chunked'
    assert ss.active_backend('cpu', backend='reference') == 'reference'  # argument wins
    monkeypatch.setenv(ss.ENV_VAR, 'auto')
    assert ss.active_backend('cpu') == 'cpp'


def test_unknown_backend_is_rejected(monkeypatch):
    monkeypatch.setenv(ss.ENV_VAR, 'tritonn')
    with pytest.raises(ValueError, match='unknown selective-scan backend'):
        ss.active_backend('cpu')


def test_forced_mamba_ssm_needs_cuda_tensors(monkeypatch):
    monkeypatch.setattr(ss, '_mamba_fn', lambda *a, **k: None)
    with pytest.raises(RuntimeError, match='needs CUDA tensors'):
        ss.active_backend('cpu', backend='mamba_ssm')


def test_cpu_fallback_without_compiler_warns_once(monkeypatch):
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    monkeypatch.setattr(ss, '_cpp_available', lambda: False)
    monkeypatch.setattr(ss, '_ext_error', 'could not build (test)')
    monkeypatch.setattr(ss, '_warned_fallback', False)
    with pytest.warns(RuntimeWarning, match='Falling back'):
        assert ss.active_backend('cpu') == 'reference'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert ss.active_backend('cpu') == 'reference'
    with pytest.raises(RuntimeError, match='"cpp" was requested'):
        ss.active_backend('cpu', backend='cpp')


def test_bad_shapes_are_reported():
    args = _inputs(1, 2, 4, 3)
    args['B'] = args['B'].detach()[:, None]  # grouped layout (b, g, n, l)
    with pytest.raises(ValueError, match='B must be'):
        selective_scan_fn(**args)


@pytest.mark.cuda
def test_mamba_ssm_matches_cpp_on_cuda():
    pytest.importorskip('mamba_ssm')
    if ss._load_mamba() is None:
        pytest.skip(f'mamba_ssm not importable: {ss._mamba_error}')
    args = _inputs(2, 8, 300, 16, dtype=torch.float32)
    y_cpu, h_cpu, g_cpu = _run(args, 'cpp', True, True)
    cuda_args = {k: (v.detach().cuda().requires_grad_() if v is not None else None)
                 for k, v in args.items()}
    y, h, g = _run(cuda_args, 'mamba_ssm', True, True)
    torch.testing.assert_close(y.cpu(), y_cpu, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(h.cpu(), h_cpu, rtol=1e-3, atol=1e-3)
    for a, b in zip(g, g_cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=5e-3, atol=5e-3)


@pytest.mark.cuda
def test_chunked_runs_on_cuda():
    args = _inputs(2, 4, 70, 16, dtype=torch.float32)
    y_cpu = selective_scan_fn(**args, delta_softplus=True, backend='reference')
    cuda_args = {k: (v.detach().cuda() if v is not None else None) for k, v in args.items()}
    y = selective_scan_fn(**cuda_args, delta_softplus=True, backend='chunked')
    torch.testing.assert_close(y.cpu(), y_cpu.detach(), rtol=1e-4, atol=1e-4)

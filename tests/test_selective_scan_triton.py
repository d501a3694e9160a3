"""The Triton selective scan against the float64 reference loop, in Triton's interpreter.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set by conftest.py
before Triton is first imported). The interpreter executes every program in Python, so the
shapes are small and the kernels are launched with small blocks (chunks of 8 steps, 4 channels
per program) to cover several chunks, chunk tails and partial channel blocks. On a GPU machine
the same tests run the compiled kernels on CUDA tensors.
"""
import pytest
import torch

from mfuser.models.mvfuser import MVFuser
from mfuser.ops import selective_scan as ss
from mfuser.ops import selective_scan_fn

sst = pytest.importorskip('mfuser.ops.selective_scan_triton',
                          reason='Triton is not installed with this torch')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
if DEVICE == 'cpu' and not sst.INTERPRETED:
    pytest.skip('no CUDA device and Triton not in interpreter mode (TRITON_INTERPRET=1)',
                allow_module_level=True)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(sst, 'BLOCK_T', 8)
    monkeypatch.setattr(sst, 'BLOCK_D', 4)


def _inputs(b, d, seqlen, n, z=True, D=True, bias=True, seed=0):
    """float64 leaves (reference) with moderately strong decays."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    args = dict(u=r(b, d, seqlen), delta=r(b, d, seqlen) * 0.5,
                A=-torch.rand(d, n, generator=g, dtype=torch.float64) * 2 - 0.05,
                B=r(b, n, seqlen), C=r(b, n, seqlen), D=r(d) if D else None,
                z=r(b, d, seqlen) if z else None, delta_bias=r(d) * 0.3 if bias else None)
    return args


def _run(args, backend, softplus, dtype=None):
    """y, last state and the gradient of every given input for a fixed random loss."""
    leaves = {}
    for k, v in args.items():
        if v is None:
            continue
        # mamba-ssm's contract: A, D and delta_bias stay float32 when the rest is half
        keep32 = dtype in (torch.float16, torch.bfloat16) and k in ('A', 'D', 'delta_bias')
        t = v.detach()
        if dtype is not None:
            t = t.to(torch.float32 if keep32 else dtype)
        leaves[k] = t.to(DEVICE if backend == 'triton' else 'cpu').requires_grad_()
    y, last = selective_scan_fn(**leaves, delta_softplus=softplus, return_last_state=True,
                                backend=backend)
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device)
    wl = torch.randn(last.shape, generator=g, dtype=torch.float64).to(y.device)
    loss = (y.double() * wy).sum() + (last.double() * wl).sum()
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    return y, last, grads, leaves


def _rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).abs().max() /
            (b.double().abs().max().cpu() + 1e-12)).item()


@pytest.mark.parametrize('shape,opts,softplus', [
    ((2, 5, 37, 3), dict(), True),                          # L % chunk != 0, D % block != 0
    ((1, 3, 1, 1), dict(z=False), True),                    # L = 1, N = 1
    ((3, 4, 20, 16), dict(D=False, bias=False), False),     # b = 3, N = 16, no D / bias
    ((1, 2, 19, 64), dict(D=False, bias=False), True),      # N = 64, only z
    ((2, 6, 24, 4), dict(z=False, D=False, bias=False), True),  # L a multiple of the chunk
])
def test_float32_matches_float64_reference(shape, opts, softplus):
    args = _inputs(*shape, **opts)
    if not softplus:  # delta must stay positive without the softplus
        args['delta'] = args['delta'].abs()
    y_ref, last_ref, g_ref, _ = _run(args, 'reference', softplus)
    y, last, g, leaves = _run(args, 'triton', softplus, dtype=torch.float32)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    # float32 states and sums against float64: ~1e-7 relative error per operation
    assert _rel(y, y_ref) < 1e-5
    assert _rel(last, last_ref) < 1e-5
    assert set(g) == set(g_ref)
    for k in g_ref:
        assert g[k].dtype == leaves[k].dtype, k
        assert _rel(g[k], g_ref[k]) < 1e-5, (k, _rel(g[k], g_ref[k]))


@pytest.mark.parametrize('dtype,tol', [
    # inputs rounded to the half dtype on both sides; the kernel accumulates in float32 and
    # rounds each result once: fp16 has 11 significant bits (2^-11 ~ 4.9e-4), bf16 8 (3.9e-3);
    # a gradient summed in float32 and rounded once stays within about two of those steps
    (torch.float16, 2e-3),
    (torch.bfloat16, 1.6e-2),
])
def test_half_precision_inputs(dtype, tol):
    args = _inputs(2, 4, 30, 8)
    rounded = {k: (v.to(torch.float32 if k in ('A', 'D', 'delta_bias') else dtype).double()
                   if v is not None else None) for k, v in args.items()}
    y_ref, last_ref, g_ref, _ = _run(rounded, 'reference', True)
    y, last, g, leaves = _run(args, 'triton', True, dtype=dtype)
    assert y.dtype == dtype and last.dtype == torch.float32
    assert _rel(y, y_ref) < tol
    assert _rel(last, last_ref) < 1e-5  # the state is float32 throughout
    for k in g_ref:
        # mamba-ssm's gradient dtypes: each input's own (A, D, delta_bias float32)
        assert g[k].dtype == leaves[k].dtype, k
        assert _rel(g[k], g_ref[k]) < tol, (k, _rel(g[k], g_ref[k]))


def test_strong_decay_and_long_chunks_stay_finite():
    """delta*|A| up to ~1e3 (decays underflow to 0): values and gradients finite and equal
    to the reference (no division by a decay, no exponentiated cumulative sum)."""
    args = _inputs(1, 2, 40, 4, z=False)
    args['delta'] = args['delta'] * 6 + 4
    args['A'] = args['A'] * 100
    y_ref, last_ref, g_ref, _ = _run(args, 'reference', True)
    y, last, g, _ = _run(args, 'triton', True, dtype=torch.float32)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in g.values())
    assert _rel(y, y_ref) < 1e-5
    for k in g_ref:
        assert _rel(g[k], g_ref[k]) < 1e-5, k


def test_saves_no_per_state_tensor_for_the_backward():
    """Memory O(b*D*L): the backward keeps the inputs and chunk-start states only, nothing of
    size b*D*L*N (the reference keeps several)."""
    b, d, seqlen, n = 1, 4, 64, 16
    args = _inputs(b, d, seqlen, n, z=False)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _run(args, 'triton', True, dtype=torch.float32)
    assert max(sizes) < b * d * seqlen * n
    assert sum(sizes) < b * d * seqlen * n  # all saved tensors together


def test_mvfuser_with_triton_equals_cpp():
    x = torch.randn(2, 21, 16)
    results = []
    for backend in ('cpp', 'triton'):
        torch.manual_seed(3)
        m = MVFuser(16, d_state=4, scan_backend=backend).eval().to(
            'cpu' if backend == 'cpp' else DEVICE)
        xi = x.to(next(m.parameters()).device).requires_grad_()
        y = m(xi)
        params = [m.A_log, m.D, m.dt_proj.bias, m.x_proj.weight]
        grads = torch.autograd.grad(y.square().sum(), [xi] + params)
        results.append([y] + list(grads))
    for a, b in zip(results[1], results[0]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('context', ['no_grad', 'inference_mode', 'meta_default_device'])
def test_the_backend_test_call_works_whatever_the_callers_mode(monkeypatch, context):
    """The first scan (which runs the one-off test call of a backend) may come from inside
    torch.no_grad() (validation, inference_model) or a meta-device block (the converter's
    shape check): the test call must still pass for a working backend, not demote it."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a: None)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'test device')
    monkeypatch.setattr(ss, '_PROBE_DEVICE', DEVICE)  # the interpreter's CPU tensors
    monkeypatch.setattr(ss, '_probe_results', {})
    ctx = {'no_grad': torch.no_grad, 'inference_mode': torch.inference_mode,
           'meta_default_device': lambda: torch.device('meta')}[context]
    with ctx():
        assert ss._probe_cuda('triton') is None


def test_selection_and_errors(monkeypatch):
    monkeypatch.setenv(ss.ENV_VAR, 'triton')
    assert ss.active_backend(DEVICE) == 'triton'
    with pytest.raises(ValueError, match='power of two'):
        sst.selective_scan_triton(*(torch.zeros(1, 1, 4) for _ in range(2)),
                                  -torch.ones(1, 2), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4),
                                  block_t=6)


@pytest.mark.parametrize('arch', [90, 80])
def test_kernels_compile_for_cuda_without_a_gpu(arch):
    """The interpreter does not compile; Triton's compiler does, ahead of time and without a
    GPU: every kernel variant (dtypes, flags, passes) builds to a cubin for Hopper and Ampere,
    and ptxas (shipped with Triton) reports no register spills. In a fresh process: Triton
    cannot compile once its interpreter is on."""
    import json
    import os
    import subprocess
    import sys
    code = ('import json, sys; from mfuser.ops.selective_scan_triton import compile_for_arch; '
            f'print(json.dumps(compile_for_arch({arch})))')
    env = dict(os.environ, TRITON_INTERPRET='0')
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kernels = json.loads(proc.stdout.strip().splitlines()[-1])
    dtypes = 3 if arch >= 80 else 2
    assert len(kernels) == dtypes * 2 * 4 + 2  # dtypes x flag sets x (fwd, bwd) x 2 passes
    for k in kernels:
        assert k['cubin_bytes'] > 0, k
        assert k['spill_bytes'] in (0, None), k

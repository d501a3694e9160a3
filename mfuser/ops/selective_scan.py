"""Selective scan (the Mamba S6 recurrence) with interchangeable backends.

For batch ``b``, channel ``d``, state ``n`` and position ``t``::

    delta[b, d, t] = softplus(delta[b, d, t] + delta_bias[d])        (if delta_softplus)
    h[b, d, n, t]  = exp(delta * A[d, n]) * h[b, d, n, t-1] + delta * B[b, n, t] * u[b, d, t]
    y[b, d, t]     = sum_n C[b, n, t] * h[b, d, n, t] + D[d] * u[b, d, t]
    y              = y * silu(z)                                      (if z is given)

:func:`selective_scan_fn` has mamba-ssm's signature and semantics. Backends:

``'mamba_ssm'``
    mamba-ssm's CUDA kernel (CUDA tensors), when its compiled kernel really works here: a
    test call decides, so a broken or kernel-less install is passed over with its reason.
``'triton'``
    the project's Triton kernels (:mod:`mfuser.ops.selective_scan_triton`): CUDA tensors,
    nothing to compile (Triton ships with torch's CUDA builds); parallel over time, keeps
    only chunk-boundary states. On CPU tensors only under Triton's interpreter (tests).
``'cpp'``
    the project's C++ CPU kernel (``csrc/selective_scan_cpu.cpp``): fused forward, hand-written
    backward that recomputes states chunk by chunk, threads over channels. Compiled once with
    ``torch.utils.cpp_extension`` (cached in the torch extensions directory); see
    :func:`build_cpu_extension`.
``'chunked'``
    pure PyTorch, any device: a two-level sequential scan (~2*sqrt(L) steps over full-size
    (b, D, L, N) tensors); the last resort on CUDA (with a warning).
``'reference'``
    a plain sequential loop (:func:`selective_scan_ref`), for tests and benchmarks; also the
    CPU fallback (with one warning) when the C++ kernel cannot be compiled: on the CPU its
    cache-sized steps beat the memory-bound chunked scan (measured ~5x faster here).

The backend is picked per call from the input device: on CUDA ``mamba_ssm`` when usable, else
``triton``, else ``chunked`` (warned once); on the CPU ``cpp``, ``reference`` if it cannot be
compiled. :func:`describe_cuda_choice` says which and why (``python -m mfuser.env``). Force one
with the ``backend=`` argument or the ``MFUSER_SCAN_BACKEND`` environment variable.

All backends but ``mamba_ssm`` compute in float32 (float64 stays float64 except in ``triton``)
whatever autocast is active, and return the input dtype. Decay factors are products of terms
in (0, 1] for A < 0; no cumulative sum is ever exponentiated, so long sequences and large
``delta * |A|`` cannot overflow.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    'BACKENDS',
    'ENV_VAR',
    'active_backend',
    'available_backends',
    'build_cpu_extension',
    'cuda_backend_status',
    'describe_cuda_choice',
    'log_backend_choice',
    'selective_scan_fn',
    'selective_scan_ref',
]

BACKENDS = ('mamba_ssm', 'triton', 'cpp', 'chunked', 'reference')  # CUDA preference order first
ENV_VAR = 'MFUSER_SCAN_BACKEND'
_CSRC = Path(__file__).parent / 'csrc' / 'selective_scan_cpu.cpp'
_EXT_NAME = 'mfuser_selective_scan_cpu'
_CPP_CHUNK = 64          # states kept every this many steps by the C++ forward

_lock = threading.Lock()
_ext = None              # the compiled module once built
_ext_error: str | None = None
_mamba_fn = None
_mamba_error: str | None = None
_triton_fn = None
_triton_error: str | None = None
_probe_results: dict[str, str | None] = {}
MAMBA_INSTALL = ('install its kernel with `MAMBA_KEEP_CUDA_BUILD=TRUE pip install mamba-ssm '
                 '--no-build-isolation` (versions after 2.3.2.post1 skip the kernel without '
                 'MAMBA_KEEP_CUDA_BUILD), or use the Triton backend that needs no build')


# ----------------------------------------------------------------------------------------------
# Backend discovery
# ----------------------------------------------------------------------------------------------
def build_cpu_extension(verbose: bool = False):
    """Compile (or load from the cache) the C++ CPU kernel and return the module.

    The build goes to torch's extensions directory (``$TORCH_EXTENSIONS_DIR``, default
    ``~/.cache/torch_extensions``); later calls and later processes reuse it. Raises
    ``RuntimeError`` with the compiler's message when the build fails.
    """
    global _ext, _ext_error
    with _lock:
        if _ext is not None:
            return _ext
        if _ext_error is not None:
            raise RuntimeError(_ext_error)
        try:
            from torch.utils.cpp_extension import load
            _ext = load(
                name=_EXT_NAME,
                sources=[str(_CSRC)],
                extra_cflags=['-O3', '-fopenmp', '-fno-trapping-math'],
                verbose=verbose,
            )
        except Exception as exc:  # compiler missing, headers missing, ...
            _ext_error = (
                f'could not build the C++ selective-scan kernel ({type(exc).__name__}: {exc}). '
                'Install a C++ compiler (e.g. `apt-get install g++`) and ninja '
                '(`pip install ninja`), or use backend="reference" or "chunked".'
            )
            raise RuntimeError(_ext_error) from exc
        return _ext


def _cpp_available() -> bool:
    try:
        build_cpu_extension()
        return True
    except RuntimeError:
        return False


def _load_mamba():
    """mamba-ssm's ``selective_scan_fn`` when its CUDA kernel is really there, else None (the
    reason in ``_mamba_error``). Two broken installs are common: releases up to 2.3.2.post1
    import the compiled ``selective_scan_cuda`` unguarded, so the import fails when the kernel
    is missing or built for another torch (``undefined symbol``); newer versions import fine
    with ``selective_scan_cuda = None`` (a plain ``pip install`` skips the kernel) and raise at
    the first call."""
    global _mamba_fn, _mamba_error
    if _mamba_fn is None and _mamba_error is None:
        try:
            from mamba_ssm.ops import selective_scan_interface as interface
        except Exception as exc:  # ImportError, or an OSError from a broken CUDA build
            text = f'{type(exc).__name__}: {exc}'.splitlines()[0]
            if isinstance(exc, ModuleNotFoundError) and exc.name == 'mamba_ssm':
                _mamba_error = 'mamba-ssm is not installed (optional; ' + MAMBA_INSTALL + ')'
            else:
                _mamba_error = (f'mamba-ssm is installed but cannot be imported ({text}); its '
                                'CUDA kernel is missing or was built for another torch: '
                                f'rebuild it against this torch: {MAMBA_INSTALL}')
            return None
        if getattr(interface, 'selective_scan_cuda', True) is None:
            version = getattr(sys.modules.get('mamba_ssm'), '__version__', '(unknown version)')
            _mamba_error = (f'mamba-ssm {version} is installed without its CUDA '
                            f'selective-scan kernel (selective_scan_cuda is None): '
                            f'{MAMBA_INSTALL}')
            return None
        _mamba_fn = interface.selective_scan_fn
    return _mamba_fn


def _load_triton():
    """:func:`mfuser.ops.selective_scan_triton.selective_scan_triton`, or None (the reason in
    ``_triton_error``) when Triton cannot be imported (CPU-only torch builds, macOS)."""
    global _triton_fn, _triton_error
    if _triton_fn is None and _triton_error is None:
        try:
            import triton
            major = int(triton.__version__.split('.')[0])
            if major < 3:  # tuple scans in reverse: Triton 3.0 (torch >= 2.4)
                _triton_error = (f'Triton {triton.__version__} is too old: the kernels need '
                                 'Triton >= 3.0, which comes with torch >= 2.4')
                return None
            from .selective_scan_triton import selective_scan_triton
            _triton_fn = selective_scan_triton
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken Triton install
            _triton_error = (f'Triton cannot be imported ({type(exc).__name__}: {exc}; it ships '
                             'with the CUDA builds of torch on Linux)').splitlines()[0]
    return _triton_fn


_PROBE_DEVICE = 'cuda'


def _probe_cuda(name: str) -> str | None:
    """Run backend ``name`` once on a small CUDA problem (forward and backward) against the
    chunked scan; None when it works, else why not. Only on a real CUDA device, once each,
    whatever the caller's grad / inference / autocast / default-device state (the first call
    may come from inside ``torch.no_grad()`` or a ``torch.device('meta')`` block)."""
    if name in _probe_results:
        return _probe_results[name]
    if not torch.cuda.is_available():
        return None
    _probe_results[name] = None  # the probe's own call must not probe again
    why = None
    try:
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.autocast('cuda', enabled=False):
            g = torch.Generator().manual_seed(0)
            u, delta, B, C = (torch.randn(1, 4, 33, generator=g, device='cpu').to(
                _PROBE_DEVICE) for _ in range(4))
            A = (-torch.rand(4, 4, generator=g, device='cpu') - 0.5).to(_PROBE_DEVICE)
            u.requires_grad_()
            y = selective_scan_fn(u, delta, A, B, C, delta_softplus=True, backend=name)
            y.sum().backward()
            ref = selective_scan_fn(u.detach(), delta, A, B, C, delta_softplus=True,
                                    backend='chunked')
            torch.cuda.synchronize()
            if u.grad is None or not torch.isfinite(u.grad).all():
                why = 'gave no finite gradient in a test call'
            elif not torch.allclose(y.float(), ref.float(), rtol=1e-3, atol=1e-3):
                why = 'gave wrong values in a test call'
    except Exception as exc:  # noqa: BLE001 - no kernel image for this GPU, ...
        why = f'failed a test call on {torch.cuda.get_device_name()}: ' + \
            f'{type(exc).__name__}: {exc}'.splitlines()[0]
    _probe_results[name] = why
    return why


def cuda_backend_status() -> dict[str, str | None]:
    """For each fast CUDA backend, None when usable, else the reason it is not (checked by a
    test call when a CUDA device is present)."""
    status = {}
    status['mamba_ssm'] = _mamba_error if _load_mamba() is None else _probe_cuda('mamba_ssm')
    status['triton'] = _triton_error if _load_triton() is None else _probe_cuda('triton')
    return status


def available_backends() -> list[str]:
    """Backends usable in this process (``mamba_ssm``/``triton`` need a CUDA device, or for
    ``triton`` Triton's interpreter; ``cpp`` triggers the one-time compilation)."""
    names = []
    status = cuda_backend_status()
    if torch.cuda.is_available():
        names += [n for n in ('mamba_ssm', 'triton') if status[n] is None]
    elif _load_triton() is not None and _triton_interpreted():
        names.append('triton')
    if _cpp_available():
        names.append('cpp')
    names += ['chunked', 'reference']
    return names


def _triton_interpreted() -> bool:
    from . import selective_scan_triton
    return selective_scan_triton.INTERPRETED


def describe_cuda_choice() -> str:
    """The backend CUDA tensors get in auto mode and why the faster ones were passed over,
    in one line (for ``python -m mfuser.env``, the training preflight and the build log)."""
    status = cuda_backend_status()
    name = _auto_cuda(warn=False)
    passed = [f'{n} not usable: {why}' for n, why in status.items()
              if why is not None and BACKENDS.index(n) < BACKENDS.index(name)]
    text = name + (f' ({"; ".join(passed)})' if passed else '')
    if name == 'chunked':
        text += ('. WARNING: the pure-PyTorch chunked scan is slow and keeps ~7 (b, D, L, N) '
                 'float32 tensors per call (~14 GiB per image for MFuser at 512x512)')
    return text


def _auto_cuda(warn: bool = True) -> str:
    global _warned_chunked
    status = cuda_backend_status()
    for name in ('mamba_ssm', 'triton'):
        if status[name] is None:
            return name
    if warn and not _warned_chunked:
        _warned_chunked = True
        warnings.warn('selective scan on CUDA falls back to the slow, memory-hungry "chunked" '
                      f'backend: mamba_ssm not usable ({status["mamba_ssm"]}); triton not '
                      f'usable ({status["triton"]})', RuntimeWarning, stacklevel=4)
    return 'chunked'


_warned_fallback = False
_warned_chunked = False
_logged_choice = False


def log_backend_choice() -> None:
    """Log, once per process, which backend CPU and CUDA tensors will use and why the faster
    CUDA backends were not taken (called when an MVFuser is built)."""
    global _logged_choice
    if _logged_choice or os.environ.get(ENV_VAR, 'auto').strip().lower() not in ('', 'auto'):
        return
    _logged_choice = True
    from mmengine.logging import print_log
    cuda = describe_cuda_choice()
    where = '' if torch.cuda.is_available() else ' (no CUDA device in this process)'
    print_log(f'selective scan: CPU tensors use {active_backend("cpu")}; CUDA tensors use '
              f'{cuda}{where}', logger='current')


def active_backend(device: torch.device | str = 'cpu', backend: str | None = None) -> str:
    """The backend :func:`selective_scan_fn` will use for tensors on ``device``.

    ``backend`` (or ``$MFUSER_SCAN_BACKEND`` when it is None/'auto') forces a choice; a forced
    backend that cannot run raises ``RuntimeError`` naming what to install.
    """
    global _warned_fallback
    device = torch.device(device)
    name = backend if backend not in (None, '', 'auto') else os.environ.get(ENV_VAR, 'auto')
    name = name.strip().lower()
    if name in ('', 'auto'):
        if device.type == 'cuda':
            return _auto_cuda()
        if device.type == 'cpu':
            if _cpp_available():
                return 'cpp'
            if not _warned_fallback:
                _warned_fallback = True
                warnings.warn(f'{_ext_error} Falling back to the slower pure-PyTorch '
                              'sequential selective scan.', RuntimeWarning, stacklevel=3)
            # On the CPU the step loop touches cache-sized slices and beats the chunked scan,
            # whose full-size intermediates are memory-bound (measured ~5x slower here).
            return 'reference'
        return 'chunked'
    if name not in BACKENDS:
        raise ValueError(f'unknown selective-scan backend {name!r}; choose one of '
                         f"{', '.join(BACKENDS)} or 'auto' (argument backend= or ${ENV_VAR})")
    if name == 'mamba_ssm':
        if _load_mamba() is None:
            raise RuntimeError(f'selective-scan backend "mamba_ssm" was requested but '
                               f'{_mamba_error}; or choose another backend / unset ${ENV_VAR}.')
        if device.type != 'cuda':
            raise RuntimeError('selective-scan backend "mamba_ssm" needs CUDA tensors, got '
                               f'{device}; use backend="cpp" or "chunked" for the CPU.')
        why = _probe_cuda('mamba_ssm')
        if why:
            raise RuntimeError(f'selective-scan backend "mamba_ssm" {why}. Rebuild it for '
                               f'this GPU and torch: {MAMBA_INSTALL}; or use "triton".')
    if name == 'triton':
        if _load_triton() is None:
            raise RuntimeError(f'selective-scan backend "triton" was requested but '
                               f'{_triton_error}; use "mamba_ssm" or "chunked" on CUDA.')
        if device.type != 'cuda' and not _triton_interpreted():
            raise RuntimeError(f'selective-scan backend "triton" needs CUDA tensors, got '
                               f'{device} (on the CPU only in Triton\'s interpreter: set '
                               'TRITON_INTERPRET=1 before starting Python); use "cpp" here.')
        why = _probe_cuda('triton') if device.type == 'cuda' else None
        if why:
            raise RuntimeError(f'selective-scan backend "triton" {why}; use "mamba_ssm" or '
                               '"chunked".')
    if name == 'cpp':
        if device.type != 'cpu':
            raise RuntimeError(f'selective-scan backend "cpp" runs on the CPU only, got {device}; '
                               'use "triton", "mamba_ssm" or "chunked" for CUDA tensors.')
        if not _cpp_available():
            raise RuntimeError(f'selective-scan backend "cpp" was requested but {_ext_error}')
    return name


# ----------------------------------------------------------------------------------------------
# Core scans: (u, delta) (b, d, l) with the bias/softplus already applied; A (d, n);
# B, C (b, n, l). Return y (b, d, l) without the D skip and gate, and the last state (b, d, n).
# ----------------------------------------------------------------------------------------------
def _scan_reference(u, delta, A, B, C):
    """Sequential loop: precompute decays and inputs, step through time with ``unbind``."""
    dA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))                         # (b, d, l, n)
    dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)             # (b, d, l, n)
    Cs = C.transpose(1, 2).unsqueeze(1).unbind(2)                               # l x (b, 1, n)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for a_t, x_t, c_t in zip(dA.unbind(2), dBu.unbind(2), Cs):
        h = a_t * h + x_t
        ys.append((h * c_t).sum(-1))
    return torch.stack(ys, dim=-1), h


def _scan_chunked(u, delta, A, B, C, chunk: int | None = None):
    """Two-level sequential scan in pure PyTorch (any device, autograd through it).

    The sequence is cut into ``n_chunks`` chunks of ``k`` steps (k ~ sqrt(L)). Pass 1 steps
    through the k positions of all chunks at once (local states from a zero start, and the
    running product of decays); pass 2 carries the state across the chunk boundaries; then
    h = local + decay_product * chunk_start. About 2*sqrt(L) small steps instead of L, only
    products of decay factors (no division, no exponentiated sums).
    """
    b, d, seqlen = u.shape
    n = A.shape[1]
    k = chunk or max(8, int(round(seqlen ** 0.5)))
    k = min(k, seqlen)
    n_chunks = -(-seqlen // k)
    pad = n_chunks * k - seqlen
    dA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))                         # (b, d, l, n)
    x = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)               # (b, d, l, n)
    if pad:
        dA = F.pad(dA, (0, 0, 0, pad), value=1.0)
        x = F.pad(x, (0, 0, 0, pad), value=0.0)
    # step-major copies so every step reads contiguous (b, d, n_chunks, n) slices
    a_steps = dA.reshape(b, d, n_chunks, k, n).permute(3, 0, 1, 2, 4).contiguous().unbind(0)
    x_steps = x.reshape(b, d, n_chunks, k, n).permute(3, 0, 1, 2, 4).contiguous().unbind(0)
    h = x_steps[0]
    p = a_steps[0]
    local, prods = [h], [p]
    for a_t, x_t in zip(a_steps[1:], x_steps[1:]):
        h = a_t * h + x_t
        p = p * a_t
        local.append(h)
        prods.append(p)
    carry = u.new_zeros(b, d, n)
    starts = []
    for a_end, x_end in zip(prods[-1].unbind(2), local[-1].unbind(2)):
        starts.append(carry)
        carry = a_end * carry + x_end
    starts = torch.stack(starts, dim=2)                                         # (b,d,nc,n)
    h_all = torch.stack(local, dim=3) + torch.stack(prods, dim=3) * starts.unsqueeze(3)
    h_all = h_all.reshape(b, d, n_chunks * k, n)[:, :, :seqlen]
    y = torch.einsum('bdln,bnl->bdl', h_all, C)
    return y, carry


class _CppScan(torch.autograd.Function):
    """Autograd wrapper of the C++ kernel (delta bias, softplus and the D skip fused).
    Saves the inputs and the chunk-boundary states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus):
        ext = build_cpu_extension()
        empty = u.new_empty(0)
        Bt = B.transpose(1, 2).contiguous()
        Ct = C.transpose(1, 2).contiguous()
        u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
        D = empty if D is None else D.contiguous()
        delta_bias = empty if delta_bias is None else delta_bias.contiguous()
        y, states, last = ext.fwd(u, delta, A, Bt, Ct, D, delta_bias, softplus, _CPP_CHUNK)
        ctx.softplus = softplus
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, delta_bias, states)
        return y, last

    @staticmethod
    def backward(ctx, gy, glast):
        u, delta, A, Bt, Ct, D, delta_bias, states = ctx.saved_tensors
        ext = build_cpu_extension()
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        glast = u.new_empty(0) if glast is None else glast.contiguous()
        gu, gdelta, gA, gBt, gCt, gD, gbias = ext.bwd(
            u, delta, A, Bt, Ct, D, delta_bias, ctx.softplus, states, gy, glast, _CPP_CHUNK)
        return (gu, gdelta, gA, gBt.transpose(1, 2), gCt.transpose(1, 2),
                gD if D.numel() else None, gbias if delta_bias.numel() else None, None)


_CORES = {'chunked': _scan_chunked, 'reference': _scan_reference}


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f'u must be (batch, dim, L), got shape {tuple(u.shape)}')
    batch, dim, seqlen = u.shape
    if delta.shape != u.shape:
        raise ValueError(f'delta must have the shape of u {tuple(u.shape)}, got '
                         f'{tuple(delta.shape)}')
    if A.dim() != 2 or A.shape[0] != dim or A.is_complex():
        raise ValueError(f'A must be real (dim={dim}, N), got {tuple(A.shape)} {A.dtype}')
    n = A.shape[1]
    for name, t in (('B', B), ('C', C)):
        if t.shape != (batch, n, seqlen):
            raise ValueError(
                f'{name} must be (batch, N, L) = {(batch, n, seqlen)}, got {tuple(t.shape)} '
                '(grouped or input-independent B/C are not supported by this implementation)')
    if D is not None and D.shape != (dim,):
        raise ValueError(f'D must be ({dim},), got {tuple(D.shape)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape)}')
    if delta_bias is not None and delta_bias.shape != (dim,):
        raise ValueError(f'delta_bias must be ({dim},), got {tuple(delta_bias.shape)}')


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      delta_softplus=False, return_last_state=False, backend=None):
    """mamba-ssm compatible selective scan.

    Args:
        u, delta: (batch, dim, L). A: (dim, N), real (negative for a decaying state).
        B, C: (batch, N, L). D: (dim,) skip, optional. z: (batch, dim, L) gate, optional.
        delta_bias: (dim,) added to delta before the optional softplus.
        backend: None/'auto', 'mamba_ssm', 'triton', 'cpp', 'chunked' or 'reference'
            (default from ``$MFUSER_SCAN_BACKEND``).

    Returns:
        y (batch, dim, L) in u's dtype, and with ``return_last_state`` also the final state
        (batch, dim, N) (float32, or float64 for float64 inputs with the PyTorch/C++ backends).

    Autocast does not reach inside: every backend but ``mamba_ssm`` (which has its own
    contract) computes in float32 whatever autocast is active.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    name = active_backend(u.device, backend)
    if name == 'mamba_ssm':
        return _mamba_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                         delta_softplus=delta_softplus, return_last_state=return_last_state)
    # autocast would lower the chunked scan's einsum (a bmm) to fp16/bf16: keep float32
    with (torch.autocast(u.device.type, enabled=False) if u.device.type in ('cuda', 'cpu')
          else contextlib.nullcontext()):
        y, last = _scan(name, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y


def _scan(name, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    cast = lambda t: None if t is None else t.to(compute)  # noqa: E731
    if name == 'triton':
        # the kernels read every dtype and accumulate in float32 themselves
        y, last = _triton_fn(u, delta, A, B, C, D, delta_bias, bool(delta_softplus))
        if z is not None:
            y = (y.to(compute) * F.silu(z.to(compute))).to(dtype_in)
        return y, last
    u_c, delta_c = cast(u), cast(delta)
    if name == 'cpp':
        y, last = _CppScan.apply(u_c, delta_c, cast(A), cast(B), cast(C), cast(D),
                                 cast(delta_bias), bool(delta_softplus))
    else:
        if delta_bias is not None:
            delta_c = delta_c + cast(delta_bias).unsqueeze(-1)
        if delta_softplus:
            delta_c = F.softplus(delta_c)
        y, last = _CORES[name](u_c, delta_c, cast(A), cast(B), cast(C))
        if D is not None:
            y = y + u_c * cast(D).unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(dtype_in), last


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """The sequential reference loop (same arguments as :func:`selective_scan_fn`)."""
    return selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                             delta_softplus=delta_softplus, return_last_state=return_last_state,
                             backend='reference')

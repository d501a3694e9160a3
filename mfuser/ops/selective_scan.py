"""Selective scan (the Mamba S6 recurrence) with interchangeable backends.

For batch ``b``, channel ``d``, state ``n`` and position ``t``::

    delta[b, d, t] = softplus(delta[b, d, t] + delta_bias[d])        (if delta_softplus)
    h[b, d, n, t]  = exp(delta * A[d, n]) * h[b, d, n, t-1] + delta * B[b, n, t] * u[b, d, t]
    y[b, d, t]     = sum_n C[b, n, t] * h[b, d, n, t] + D[d] * u[b, d, t]
    y              = y * silu(z)                                      (if z is given)

:func:`selective_scan_fn` has mamba-ssm's signature and semantics. Backends:

``'mamba_ssm'``
    mamba-ssm's CUDA kernel (CUDA tensors; ``pip install mamba-ssm`` on a CUDA machine).
``'cpp'``
    the project's C++ CPU kernel (``csrc/selective_scan_cpu.cpp``): fused forward, hand-written
    backward that recomputes states chunk by chunk, threads over channels. Compiled once with
    ``torch.utils.cpp_extension`` (cached in the torch extensions directory); see
    :func:`build_cpu_extension`.
``'chunked'``
    pure PyTorch, any device: a two-level sequential scan (~2*sqrt(L) steps over full-size
    tensors); the default for CUDA tensors without mamba-ssm.
``'reference'``
    a plain sequential loop (:func:`selective_scan_ref`), for tests and benchmarks; also the
    CPU fallback (with one warning) when the C++ kernel cannot be compiled: on the CPU its
    cache-sized steps beat the memory-bound chunked scan (measured ~5x faster here).

The backend is picked per call from the input device (``mamba_ssm`` on CUDA when importable,
otherwise ``chunked``; ``cpp`` on the CPU, ``reference`` if it cannot be compiled). Force one with
the ``backend=`` argument or the ``MFUSER_SCAN_BACKEND`` environment variable.

All backends but ``mamba_ssm`` compute in float32 (float64 stays float64) and return the input
dtype. Decay factors are products of terms in (0, 1] for A < 0; no cumulative sum is ever
exponentiated, so long sequences and large ``delta * |A|`` cannot overflow.
"""
from __future__ import annotations

import os
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
    'selective_scan_fn',
    'selective_scan_ref',
]

BACKENDS = ('mamba_ssm', 'cpp', 'chunked', 'reference')
ENV_VAR = 'MFUSER_SCAN_BACKEND'
_CSRC = Path(__file__).parent / 'csrc' / 'selective_scan_cpu.cpp'
_EXT_NAME = 'mfuser_selective_scan_cpu'
_CPP_CHUNK = 64          # states kept every this many steps by the C++ forward

_lock = threading.Lock()
_ext = None              # the compiled module once built
_ext_error: str | None = None
_mamba_fn = None
_mamba_error: str | None = None


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
    """mamba-ssm's ``selective_scan_fn`` or None. Its module imports the compiled CUDA
    extension unguarded, so the import itself fails on machines without it."""
    global _mamba_fn, _mamba_error
    if _mamba_fn is None and _mamba_error is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as fn
            _mamba_fn = fn
        except Exception as exc:  # ImportError, or an OSError from a broken CUDA build
            _mamba_error = f'{type(exc).__name__}: {exc}'
    return _mamba_fn


def available_backends() -> list[str]:
    """Backends usable in this process (``mamba_ssm`` needs mamba-ssm and a CUDA device;
    ``cpp`` triggers the one-time compilation)."""
    names = []
    if _load_mamba() is not None and torch.cuda.is_available():
        names.append('mamba_ssm')
    if _cpp_available():
        names.append('cpp')
    names += ['chunked', 'reference']
    return names


_warned_fallback = False


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
            return 'mamba_ssm' if _load_mamba() is not None else 'chunked'
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
            raise RuntimeError(
                'selective-scan backend "mamba_ssm" was requested but mamba-ssm cannot be '
                f'imported ({_mamba_error}). Install it on a CUDA machine with '
                '`pip install mamba-ssm causal-conv1d` (or `pip install "mfuser[cuda]"`), '
                f'or choose another backend / unset ${ENV_VAR}.')
        if device.type != 'cuda':
            raise RuntimeError('selective-scan backend "mamba_ssm" needs CUDA tensors, got '
                               f'{device}; use backend="cpp" or "chunked" for the CPU.')
    if name == 'cpp':
        if device.type != 'cpu':
            raise RuntimeError(f'selective-scan backend "cpp" runs on the CPU only, got {device}; '
                               'use "mamba_ssm" or "chunked" for CUDA tensors.')
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
        backend: None/'auto', 'mamba_ssm', 'cpp', 'chunked' or 'reference'
            (default from ``$MFUSER_SCAN_BACKEND``).

    Returns:
        y (batch, dim, L) in u's dtype, and with ``return_last_state`` also the final state
        (batch, dim, N) (float32, or float64 for float64 inputs).
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    name = active_backend(u.device, backend)
    if name == 'mamba_ssm':
        return _mamba_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                         delta_softplus=delta_softplus, return_last_state=return_last_state)
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    cast = lambda t: None if t is None else t.to(compute)  # noqa: E731
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
    y = y.to(dtype_in)
    return (y, last) if return_last_state else y


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """The sequential reference loop (same arguments as :func:`selective_scan_fn`)."""
    return selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                             delta_softplus=delta_softplus, return_last_state=return_last_state,
                             backend='reference')

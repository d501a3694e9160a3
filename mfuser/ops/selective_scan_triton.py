"""Selective scan in Triton: forward and backward kernels, parallel over time.

The recurrence (see :mod:`mfuser.ops.selective_scan`) ``h_t = a_t * h_{t-1} + x_t`` with
``a_t = exp(delta_t * A)`` and ``x_t = delta_t * u_t * B_t`` is linear, so it is solved as a
two-level scan, the layout of mamba-ssm's CUDA kernel made parallel over time as well:

1. every program takes one chunk of ``BLOCK_T`` time steps for ``BLOCK_D`` channels of one batch
   row and scans it from a zero state with ``tl.associative_scan`` over ``(a, x)`` pairs
   (combine ``(a1, x1), (a2, x2) -> (a1 * a2, x1 * a2 + x2)``); it keeps only the chunk's total
   decay and end state, (b, D, n_chunks, N);
2. one small sequential pass per (batch, channel) carries the state across chunk boundaries and
   leaves the state at the START of every chunk in place of the end states (the only states
   saved for the backward: O(b * D * L * N / BLOCK_T), like the C++ kernel's chunk states);
3. every chunk is scanned again from its start state and ``y = C . h + D * u`` is written.

The backward runs the same three passes in reverse time for the state gradient
``g_t = a_{t+1} * g_{t+1} + C_t * dy_t`` (``reverse=True`` scans, the last state's gradient
entering at the end), recomputes ``h`` inside each chunk from its saved start state and forms
every gradient there. ``a_t * h_{t-1}`` is taken as ``h_t - x_t`` (no division by a decay that
may underflow). Gradients of B and C (summed over channels) and of A, D and delta_bias (summed
over batch and time) are accumulated in float32 with atomic adds, once per program.

Numerics follow the other backends and mamba-ssm: inputs in float32 / float16 / bfloat16
(float64 is computed in float32), states and accumulations in float32, outputs and gradients in
the dtype of the tensor they belong to, softplus with mamba's threshold 20 (``x`` above it), no
exponentiated cumulative sum (decays are products of factors in (0, 1] for A < 0).

Set ``TRITON_INTERPRET=1`` before the first import of this module to run the kernels on CPU
tensors with Triton's interpreter (how the tests run them without a GPU).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ['INTERPRETED', 'compile_for_arch', 'selective_scan_triton']

#: whether the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1`` when this
#: module was first imported); compiled kernels need CUDA tensors.
INTERPRETED = os.environ.get('TRITON_INTERPRET', '0') == '1'

BLOCK_T = 64        # time steps per chunk (one program's scan length)
BLOCK_D = 16        # channels per program (they share one load of the B / C tile)
SOFTPLUS_THRESHOLD = 20.0


@triton.jit
def _linear_recurrence(a1, x1, a2, x2):
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _log1p(x):
    # log(1 + x) to full precision for small x (Goldberg's trick), without libdevice.
    w = 1.0 + x
    return tl.where(w == 1.0, x, tl.log(w) * x / (w - 1.0))


@triton.jit
def _delta(delta_ptr, bias_ptr, row, d, t, mask, HAS_BIAS: tl.constexpr,
           SOFTPLUS: tl.constexpr):
    """delta (+ bias, softplus) at positions ``t`` of one channel; 0 where masked (decay 1,
    input 0: padded steps carry the state unchanged). Returns (delta, raw delta)."""
    raw = tl.load(delta_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + d + t * 0, mask=mask, other=0.0).to(tl.float32)
    dt = raw
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, _log1p(tl.exp(raw)), raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _chunk_tile(dim, seqlen, dstate, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """This program's chunk index, batch row b and first channel d0; its time steps t (T,) and
    states n (N,) with their masks; the offsets of its (T, N) tile of B / C and that tile's
    mask."""
    chunk = tl.program_id(0)
    n_dblocks = tl.cdiv(dim, BLOCK_D)
    b = tl.program_id(1) // n_dblocks
    d0 = (tl.program_id(1) % n_dblocks) * BLOCK_D
    t = chunk * BLOCK_T + tl.arange(0, BLOCK_T)
    n = tl.arange(0, BLOCK_N)
    t_ok = t < seqlen
    n_ok = n < dstate
    bc = b * dstate * seqlen + n[None, :] * seqlen + t[:, None]
    tn_ok = t_ok[:, None] & n_ok[None, :]
    return chunk, b, d0, t, n, t_ok, n_ok, bc, tn_ok


@triton.jit
def _scan_chunk(u_ptr, delta_ptr, bias_ptr, Ad, Bt, h0, row, d, t, m,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FROM_STATE: tl.constexpr,
                BLOCK_T: tl.constexpr):
    """One channel's recurrence over the chunk: decays a = exp(delta * A) and inputs
    x = delta * u * B (T, N), scanned from the state h0 (N,) before the chunk (FROM_STATE) or
    from zero. Returns u, delta, raw delta (T,), x, the running decay product P and the
    states H (T, N)."""
    u = tl.load(u_ptr + row + t, mask=m, other=0.0).to(tl.float32)
    dt, raw = _delta(delta_ptr, bias_ptr, row, d, t, m, HAS_BIAS, SOFTPLUS)
    a = tl.exp(dt[:, None] * Ad[None, :])                                      # (T, N)
    x = (dt * u)[:, None] * Bt
    x0 = x
    if FROM_STATE:
        x0 = tl.where((tl.arange(0, BLOCK_T) == 0)[:, None], x + a * h0[None, :], x)
    P, H = tl.associative_scan((a, x0), 0, _linear_recurrence)
    return u, dt, raw, x, P, H


@triton.jit
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr,
                decay_ptr, state_ptr, dim, seqlen, dstate, n_chunks,
                HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                OUTPUT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """Pass 1 (OUTPUT=False): per chunk, total decay and end state from a zero start.
    Pass 3 (OUTPUT=True): per chunk, the scan from the saved start state, and y."""
    chunk, b, d0, t, n, t_ok, n_ok, bc, tn_ok = _chunk_tile(dim, seqlen, dstate, BLOCK_T,
                                                            BLOCK_N, BLOCK_D)
    Bt = tl.load(B_ptr + bc, mask=tn_ok, other=0.0).to(tl.float32)          # (T, N)
    if OUTPUT:
        Ct = tl.load(C_ptr + bc, mask=tn_ok, other=0.0).to(tl.float32)
    for i in range(BLOCK_D):
        d = d0 + i
        d_ok = d < dim
        row = (b * dim + d) * seqlen
        m = t_ok & d_ok
        s_off = ((b * dim + d) * n_chunks + chunk) * dstate + n
        s_ok = n_ok & d_ok
        Ad = tl.load(A_ptr + d * dstate + n, mask=s_ok, other=0.0).to(tl.float32)
        if OUTPUT:
            h0 = tl.load(state_ptr + s_off, mask=s_ok, other=0.0)
        else:
            h0 = tl.zeros_like(Ad)
        u, _, _, _, P, H = _scan_chunk(u_ptr, delta_ptr, bias_ptr, Ad, Bt, h0, row, d, t, m,
                                       HAS_BIAS, SOFTPLUS, OUTPUT, BLOCK_T)
        if OUTPUT:
            y = tl.sum(H * Ct, axis=1)
            if HAS_D:
                y += tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32) * u
            tl.store(y_ptr + row + t, y.to(y_ptr.dtype.element_ty), mask=m)
        else:
            end = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
            tl.store(decay_ptr + s_off, tl.sum(tl.where(end, P, 0.0), axis=0), mask=s_ok)
            tl.store(state_ptr + s_off, tl.sum(tl.where(end, H, 0.0), axis=0), mask=s_ok)


@triton.jit
def _carry_kernel(decay_ptr, state_ptr, init_ptr, final_ptr, n_rows, n_chunks, dstate,
                  HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    """Pass 2: for each (batch, channel) row, walk the chunks in order (or in reverse) and
    replace each chunk's local end state by the state entering it; write the final carry."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    n = tl.arange(0, BLOCK_N)
    mask = (r < n_rows)[:, None] & (n < dstate)[None, :]
    base = r[:, None] * n_chunks * dstate + n[None, :]
    fin = r[:, None] * dstate + n[None, :]
    if HAS_INIT:
        carry = tl.load(init_ptr + fin, mask=mask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
    for i in range(n_chunks):
        if REVERSE:
            c = n_chunks - 1 - i
        else:
            c = i
        off = base + c * dstate
        a = tl.load(decay_ptr + off, mask=mask, other=1.0)
        h = tl.load(state_ptr + off, mask=mask, other=0.0)
        tl.store(state_ptr + off, carry, mask=mask)
        carry = a * carry + h
    tl.store(final_ptr + fin, carry, mask=mask)


@triton.jit
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, gy_ptr,
                state_ptr, gdecay_ptr, gstate_ptr,
                gu_ptr, gdelta_ptr, gA_ptr, gB_ptr, gC_ptr, gD_ptr, gbias_ptr,
                dim, seqlen, dstate, n_chunks,
                HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                GRADS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """Pass 1 (GRADS=False): per chunk, total decay and start value of the reverse scan of the
    state gradient from a zero end. Pass 3 (GRADS=True): the reverse scan from the gradient
    entering the chunk's end, the forward scan from the saved start state, every gradient."""
    chunk, b, d0, t, n, t_ok, n_ok, bc, tn_ok = _chunk_tile(dim, seqlen, dstate, BLOCK_T,
                                                            BLOCK_N, BLOCK_D)
    rows = tl.arange(0, BLOCK_T)
    t1_ok = (t + 1) < seqlen
    Ct = tl.load(C_ptr + bc, mask=tn_ok, other=0.0).to(tl.float32)           # (T, N)
    if GRADS:
        Bt = tl.load(B_ptr + bc, mask=tn_ok, other=0.0).to(tl.float32)
        gB_acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
        gC_acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for i in range(BLOCK_D):
        d = d0 + i
        d_ok = d < dim
        row = (b * dim + d) * seqlen
        m = t_ok & d_ok
        s_ok = n_ok & d_ok
        s_off = ((b * dim + d) * n_chunks + chunk) * dstate + n
        Ad = tl.load(A_ptr + d * dstate + n, mask=s_ok, other=0.0).to(tl.float32)
        gy = tl.load(gy_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        # decay of the NEXT step: g_t = a_{t+1} g_{t+1} + C_t dy_t (a = 1 past the end)
        dt_next, _ = _delta(delta_ptr, bias_ptr, row, d, t + 1, t1_ok & d_ok, HAS_BIAS,
                            SOFTPLUS)
        a_next = tl.exp(dt_next[:, None] * Ad[None, :])
        xg = gy[:, None] * Ct
        if GRADS:
            g_in = tl.load(gstate_ptr + s_off, mask=s_ok, other=0.0)
            xg = tl.where(rows[:, None] == BLOCK_T - 1, xg + a_next * g_in[None, :], xg)
        Q, G = tl.associative_scan((a_next, xg), 0, _linear_recurrence, reverse=True)
        if GRADS:
            h0 = tl.load(state_ptr + s_off, mask=s_ok, other=0.0)
            u, dt, raw, x, _, H = _scan_chunk(u_ptr, delta_ptr, bias_ptr, Ad, Bt, h0, row, d,
                                              t, m, HAS_BIAS, SOFTPLUS, True, BLOCK_T)
            gB_acc += G * (dt * u)[:, None]
            gC_acc += gy[:, None] * H
            GB = tl.sum(G * Bt, axis=1)
            R = G * (H - x)                                  # g_t * a_t * h_{t-1}
            gu = GB * dt
            if HAS_D:
                Dd = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
                gu += gy * Dd
                tl.atomic_add(gD_ptr + d, tl.sum(gy * u, axis=0), mask=d_ok)
            gdt = GB * u + tl.sum(R * Ad[None, :], axis=1)
            tl.atomic_add(gA_ptr + d * dstate + n, tl.sum(R * dt[:, None], axis=0), mask=s_ok)
            if SOFTPLUS:
                gdt = tl.where(raw <= 20.0, gdt / (1.0 + tl.exp(-raw)), gdt)
            gdt = tl.where(m, gdt, 0.0)
            if HAS_BIAS:
                tl.atomic_add(gbias_ptr + d, tl.sum(gdt, axis=0), mask=d_ok)
            tl.store(gu_ptr + row + t, gu.to(gu_ptr.dtype.element_ty), mask=m)
            tl.store(gdelta_ptr + row + t, gdt.to(gdelta_ptr.dtype.element_ty), mask=m)
        else:
            start = rows[:, None] == 0
            tl.store(gdecay_ptr + s_off, tl.sum(tl.where(start, Q, 0.0), axis=0), mask=s_ok)
            tl.store(gstate_ptr + s_off, tl.sum(tl.where(start, G, 0.0), axis=0), mask=s_ok)
    if GRADS:
        tl.atomic_add(gB_ptr + bc, gB_acc, mask=tn_ok)
        tl.atomic_add(gC_ptr + bc, gC_acc, mask=tn_ok)


def _block_n(dstate: int) -> int:
    return max(4, triton.next_power_of_2(dstate))


def _carry(decay, state, init, final, reverse):
    """Run pass 2 over (rows, n_chunks, N) buffers in place."""
    n_rows, n_chunks, dstate = state.shape[0] * state.shape[1], state.shape[2], state.shape[3]
    block_r = 16
    _carry_kernel[(triton.cdiv(n_rows, block_r),)](
        decay, state, init if init is not None else final, final, n_rows, n_chunks, dstate,
        HAS_INIT=init is not None, REVERSE=reverse, BLOCK_R=block_r, BLOCK_N=_block_n(dstate))


class _TritonScan(torch.autograd.Function):
    """Autograd wrapper: saves the inputs and the chunk start states (float32)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus, block_t, block_d):
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
        D = D.contiguous() if D is not None else None
        delta_bias = delta_bias.contiguous() if delta_bias is not None else None
        n_chunks = triton.cdiv(seqlen, block_t)
        f32 = dict(device=u.device, dtype=torch.float32)
        decay = torch.empty(batch, dim, n_chunks, dstate, **f32)
        states = torch.empty(batch, dim, n_chunks, dstate, **f32)
        last = torch.empty(batch, dim, dstate, **f32)
        y = torch.empty_like(u)
        grid = (n_chunks, batch * triton.cdiv(dim, block_d))
        kw = dict(HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                  BLOCK_T=block_t, BLOCK_N=_block_n(dstate), BLOCK_D=block_d)
        args = (u, delta, A, B, C, D if D is not None else u, delta_bias
                if delta_bias is not None else u, y, decay, states, dim, seqlen, dstate,
                n_chunks)
        _fwd_kernel[grid](*args, OUTPUT=False, **kw)
        _carry(decay, states, None, last, reverse=False)
        del decay
        _fwd_kernel[grid](*args, OUTPUT=True, **kw)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        ctx.meta = (softplus, block_t, block_d)
        return y, last

    @staticmethod
    def backward(ctx, gy, glast):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        softplus, block_t, block_d = ctx.meta
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        n_chunks = states.shape[2]
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        f32 = dict(device=u.device, dtype=torch.float32)
        gdecay = torch.empty(batch, dim, n_chunks, dstate, **f32)
        gstate = torch.empty(batch, dim, n_chunks, dstate, **f32)
        g_first = torch.empty(batch, dim, dstate, **f32)
        gu = torch.empty_like(u)
        gdelta = torch.empty_like(delta)
        gA = torch.zeros(dim, dstate, **f32)
        gB = torch.zeros(batch, dstate, seqlen, **f32)
        gC = torch.zeros(batch, dstate, seqlen, **f32)
        gD = torch.zeros(dim, **f32)
        gbias = torch.zeros(dim, **f32)
        grid = (n_chunks, batch * triton.cdiv(dim, block_d))
        kw = dict(HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                  BLOCK_T=block_t, BLOCK_N=_block_n(dstate), BLOCK_D=block_d)
        args = (u, delta, A, B, C, D if D is not None else u,
                delta_bias if delta_bias is not None else u, gy, states, gdecay, gstate,
                gu, gdelta, gA, gB, gC, gD, gbias, dim, seqlen, dstate, n_chunks)
        _bwd_kernel[grid](*args, GRADS=False, **kw)
        init = glast.contiguous().float() if glast is not None else None
        _carry(gdecay, gstate, init, g_first, reverse=True)
        del gdecay
        _bwd_kernel[grid](*args, GRADS=True, **kw)
        return (gu, gdelta, gA.to(A.dtype), gB.to(B.dtype), gC.to(C.dtype),
                gD.to(D.dtype) if D is not None else None,
                gbias.to(delta_bias.dtype) if delta_bias is not None else None,
                None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False,
                          block_t: int | None = None, block_d: int | None = None):
    """The selective scan without the ``z`` gate: y (b, D, L) in u's dtype and the last state
    (b, D, N) in float32. Shapes as :func:`mfuser.ops.selective_scan_fn` (checked there).

    ``block_t`` (a power of two) is the chunk length each program scans; ``block_d`` the
    channels one program handles (defaults: the module's ``BLOCK_T`` and ``BLOCK_D``).
    """
    block_t = BLOCK_T if block_t is None else block_t
    block_d = BLOCK_D if block_d is None else block_d
    if block_t < 2 or block_t & (block_t - 1):
        raise ValueError(f'block_t must be a power of two >= 2, got {block_t}')
    if not INTERPRETED and u.device.type != 'cuda':
        raise RuntimeError(
            f'the Triton selective scan needs CUDA tensors (got {u.device}); on the CPU it runs '
            'only in Triton\'s interpreter (set TRITON_INTERPRET=1 before importing mfuser)')
    return _TritonScan.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus),
                             int(block_t), int(block_d))


def compile_for_arch(arch: int = 90) -> list[dict]:
    """Compile every kernel variant ahead of time for NVIDIA compute capability ``arch`` (90:
    Hopper, 80: Ampere) without a GPU, and report each cubin's size and the register spills
    ptxas (shipped with Triton) finds. Raises Triton's ``CompilationError`` on a kernel that
    does not compile. Needs compiled (not interpreted) kernels: ``TRITON_INTERPRET`` unset."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if INTERPRETED:
        raise RuntimeError('compile_for_arch needs TRITON_INTERPRET unset (compiled kernels)')
    target = GPUTarget('cuda', arch, 32)
    ptxas = Path(triton.__file__).parent / 'backends' / 'nvidia' / 'bin' / 'ptxas'
    ints = {k: 'i32' for k in ('dim', 'seqlen', 'dstate', 'n_chunks', 'n_rows')}
    report = []

    def build(fn, types, consts):
        signature = {n: 'constexpr' if n in consts else types.get(n, '*fp32')
                     for n in fn.arg_names}
        kernel = triton.compile(ASTSource(fn, signature, constexprs=consts), target=target)
        spill = None
        if ptxas.exists():
            ptx = kernel.asm['ptx']
            sm = re.search(r'\.target (sm_\w+)', ptx).group(1)
            with tempfile.NamedTemporaryFile('w', suffix='.ptx') as f:
                f.write(ptx)
                f.flush()
                info = subprocess.run([str(ptxas), '-v', f'-arch={sm}', f.name, '-o',
                                       '/dev/null'], capture_output=True, text=True).stderr
            spill = sum(int(n) for n in re.findall(r'(\d+) bytes spill', info))
        report.append(dict(kernel=fn.fn.__name__, consts={k: v for k, v in consts.items()
                                                          if not k.startswith('BLOCK')},
                           types=types.get('u_ptr', ''), cubin_bytes=len(kernel.asm['cubin']),
                           spill_bytes=spill))

    for dtype in ('fp32', 'fp16', 'bf16') if arch >= 80 else ('fp32', 'fp16'):
        io = {k: f'*{dtype}' for k in ('u_ptr', 'delta_ptr', 'B_ptr', 'C_ptr', 'y_ptr',
                                       'gy_ptr', 'gu_ptr', 'gdelta_ptr')}
        for flag in (True, False):
            blocks = dict(HAS_D=flag, HAS_BIAS=flag, SOFTPLUS=flag, BLOCK_T=BLOCK_T,
                          BLOCK_N=16, BLOCK_D=BLOCK_D)
            for last in (False, True):
                build(_fwd_kernel, {**ints, **io}, dict(OUTPUT=last, **blocks))
                build(_bwd_kernel, {**ints, **io}, dict(GRADS=last, **blocks))
    for reverse in (False, True):
        build(_carry_kernel, ints, dict(HAS_INIT=reverse, REVERSE=reverse, BLOCK_R=16,
                                        BLOCK_N=16))
    return report

"""Benchmark the selective-scan backends (forward + backward), on the CPU or a GPU.

CPU baseline: a well-written sequential PyTorch loop (``mfuser.ops.selective_scan_ref``:
precompute exp(delta*A) and delta*B*u, step with ``unbind``, autograd through it). Every backend
runs in this process on the same inputs; the table gives the median of ``--repeats`` runs after
one warm-up and the speed-up over the loop. mamba-ssm's own ``selective_scan_ref`` (per-step
indexing, backward quadratic in L) is timed at ``--mamba-ref-length`` when importable.

On a GPU (``--device cuda``) the backends are timed side by side with CUDA synchronisation,
with the peak memory each allocates beyond its inputs, and compared with the first one listed.

    python tools/analysis/benchmark_selective_scan.py                    # B2 D512 L2594 N16
    python tools/analysis/benchmark_selective_scan.py --length 1024 --repeats 2
    python tools/analysis/benchmark_selective_scan.py --backends cpp reference chunked
    python tools/analysis/benchmark_selective_scan.py --device cuda \\
        --backends triton mamba_ssm chunked [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mfuser.ops import selective_scan as ss
from mfuser_tools.table import print_table


def make_inputs(batch, dim, length, state, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.randn(batch, dim, length, generator=g) * 0.5
    A = -torch.arange(1, state + 1, dtype=torch.float32).repeat(dim, 1)
    A = A * torch.rand(dim, 1, generator=g).add(0.5)
    B = torch.randn(batch, state, length, generator=g)
    C = torch.randn(batch, state, length, generator=g)
    D = torch.ones(dim)
    bias = torch.randn(dim, generator=g) * 0.1
    leaves = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, delta_bias=bias)
    return {k: v.requires_grad_() for k, v in leaves.items()}


def _sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def time_fwd_bwd(fn, inputs, repeats):
    """Median forward and backward seconds of ``fn(**inputs)`` (one warm-up run first)."""
    device = next(iter(inputs.values())).device
    fwd, bwd = [], []
    for i in range(repeats + 1):
        for v in inputs.values():
            v.grad = None
        _sync(device)
        t0 = time.perf_counter()
        y = fn(**inputs)
        _sync(device)
        t1 = time.perf_counter()
        y.float().square().mean().backward()
        _sync(device)
        t2 = time.perf_counter()
        if i:  # skip the warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return statistics.median(fwd), statistics.median(bwd)


def cast_inputs(inputs, device, dtype):
    """Leaves on ``device``; u, delta, B, C in ``dtype`` (A, D, delta_bias stay float32, the
    contract of mamba-ssm's kernel)."""
    out = {}
    for k, v in inputs.items():
        t = v.detach().to(device)
        if k in ('u', 'delta', 'B', 'C'):
            t = t.to(dtype)
        out[k] = t.requires_grad_()
    return out


def measure(name, inputs, repeats):
    """Forward / backward / total seconds of backend ``name`` and, on CUDA, the peak memory
    it allocates beyond its inputs (MiB), as a dict."""
    device = next(iter(inputs.values())).device
    peak = None
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    fwd, bwd = time_fwd_bwd(backend_fn(name), inputs, repeats)
    if device.type == 'cuda':
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return dict(backend=name, forward_s=fwd, backward_s=bwd, total_s=fwd + bwd, peak_mib=peak)


def gpu_rows(backends, shape, dtype, repeats, device='cuda'):
    """One row per backend (dicts of :func:`measure`, or an ``error``) at ``shape`` = (batch,
    dim, length, state), all on the same inputs."""
    base = make_inputs(*shape)
    rows = []
    for name in backends:
        inputs = cast_inputs(base, device, dtype)
        try:
            ss.active_backend(device, name)
            rows.append(measure(name, inputs, repeats))
        except Exception as exc:  # noqa: BLE001 - report it in the table, go on
            rows.append(dict(backend=name, error=f'{type(exc).__name__}: {exc}'.splitlines()[0]))
        del inputs
    return rows


def print_gpu_rows(title, rows):
    """The rows of :func:`gpu_rows` as a Markdown table (peak memory 'n/a' off CUDA)."""
    first = next((r for r in rows if 'error' not in r), None)
    table = []
    for r in rows:
        if 'error' in r:
            table.append((r['backend'], '-', '-', '-', '-', r['error'][:90]))
            continue
        table.append((r['backend'], f"{r['forward_s'] * 1e3:.2f}", f"{r['backward_s'] * 1e3:.2f}",
                      f"{r['total_s'] * 1e3:.2f}",
                      'n/a' if r['peak_mib'] is None else f"{r['peak_mib']:.0f}",
                      f"{r['total_s'] / first['total_s']:.2f}x {first['backend']}"))
    print_table(title, ['backend', 'forward ms', 'backward ms', 'total ms', 'peak MiB',
                        'time vs first'], table)


def backend_fn(name):
    def fn(**kw):
        return ss.selective_scan_fn(**kw, delta_softplus=True, backend=name)
    return fn


def mamba_ref_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except Exception as exc:  # its module imports the compiled CUDA extension unguarded
        return None, f'{type(exc).__name__}: {exc}'.splitlines()[0]

    def fn(**kw):
        return selective_scan_ref(kw['u'], kw['delta'], kw['A'], kw['B'], kw['C'], kw['D'],
                                  delta_bias=kw['delta_bias'], delta_softplus=True)
    return fn, None


def indexing_loop_fn(**kw):
    """mamba-ssm's ``selective_scan_ref`` pattern, re-stated for machines without mamba-ssm:
    precompute exp(delta*A) and delta*B*u as (B, D, L, N) tensors and index them per step
    (``deltaA[:, :, i]``); autograd then scatters into the full tensor at every step, which
    makes the backward pass quadratic in L."""
    u, A, B, C, D = kw['u'], kw['A'], kw['B'], kw['C'], kw['D']
    delta = torch.nn.functional.softplus(kw['delta'] + kw['delta_bias'][..., None])
    delta_a = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    delta_b_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
    x = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        x = delta_a[:, :, i] * x + delta_b_u[:, :, i]
        ys.append(torch.einsum('bdn,bn->bd', x, C[:, :, i]))
    return torch.stack(ys, dim=2) + u * D[:, None]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--dim', type=int, default=512)
    p.add_argument('--length', type=int, default=2594)
    p.add_argument('--state', type=int, default=16)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--dtype', choices=['float32', 'float16', 'bfloat16'], default='float32',
                   help='dtype of u, delta, B, C (GPU runs)')
    p.add_argument('--backends', nargs='+', default=None,
                   help="backends to compare (CPU default: cpp, against the loop; CUDA default: "
                   "triton mamba_ssm chunked)")
    p.add_argument('--mamba-ref-length', type=int, default=256,
                   help="L for mamba-ssm's selective_scan_ref (0: skip)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda':
        backends = args.backends or ['triton', 'mamba_ssm', 'chunked']
        shape = (args.batch, args.dim, args.length, args.state)
        print(f'torch {torch.__version__}, {torch.cuda.get_device_name()}; B={shape[0]} '
              f'D={shape[1]} L={shape[2]} N={shape[3]}; {args.dtype}; median of '
              f'{args.repeats} after a warm-up')
        rows = gpu_rows(backends, shape, getattr(torch, args.dtype), args.repeats)
        print_gpu_rows('fwd+bwd on CUDA', rows)
        return rows
    args.backends = args.backends or ['cpp']
    ss.build_cpu_extension()  # compile (or load) outside the timings

    shape = f'B={args.batch} D={args.dim} L={args.length} N={args.state}'
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; {shape}; fp32; '
          f'median of {args.repeats} after a warm-up')
    inputs = make_inputs(args.batch, args.dim, args.length, args.state)
    base = time_fwd_bwd(backend_fn('reference'), inputs, args.repeats)
    rows = [('loop (reference)', f'{base[0]:.3f}', f'{base[1]:.3f}', f'{sum(base):.3f}', '1.0x')]
    y_ref = ss.selective_scan_fn(**{k: v.detach() for k, v in inputs.items()},
                                 delta_softplus=True, backend='reference')
    for name in args.backends:
        t = time_fwd_bwd(backend_fn(name), inputs, args.repeats)
        y = ss.selective_scan_fn(**{k: v.detach() for k, v in inputs.items()},
                                 delta_softplus=True, backend=name)
        err = (y - y_ref).abs().max().item()
        rows.append((f'{name} (max |dy| {err:.1e})', f'{t[0]:.3f}', f'{t[1]:.3f}',
                     f'{sum(t):.3f}', f'{sum(base) / sum(t):.1f}x'))
    print_table(f'fwd+bwd seconds, {shape}',
                ['implementation', 'forward s', 'backward s', 'total s', 'speed-up vs loop'], rows)

    if args.mamba_ref_length:
        fn, err = mamba_ref_fn()
        small_len = args.mamba_ref_length
        label = 'mamba-ssm selective_scan_ref'
        if fn is None:
            print(f"\nmamba-ssm's selective_scan_ref: not importable here ({err}); timing "
                  'the same per-step indexing pattern re-stated in this script instead.')
            fn, label = indexing_loop_fn, 'per-step indexing (selective_scan_ref pattern)'
        inputs = make_inputs(args.batch, args.dim, small_len, args.state)
        rows = []
        for name, f in (('loop (reference)', backend_fn('reference')), (label, fn),
                        ('cpp', backend_fn('cpp'))):
            t = time_fwd_bwd(f, inputs, max(1, args.repeats - 1))
            rows.append((name, f'{t[0]:.3f}', f'{t[1]:.3f}', f'{sum(t):.3f}'))
        print_table(f'fwd+bwd seconds at L={small_len}',
                    ['implementation', 'forward s', 'backward s', 'total s'], rows)


if __name__ == '__main__':
    main()

"""Cost of one co-adapter at ViT-L scale: parameters, FLOPs, CPU time and peak memory.

Part 1 (the paper's ablation table): parameters and FLOPs of one adapter at d_model 1024 on
batch 2 x (1297 VFM + 1297 VLM) tokens, next to the paper's numbers. FLOPs = 2 x MACs, counted
by ``torch.utils.flop_counter`` over one forward pass (matmuls, convolutions, attention). The
selective scan is a custom kernel that no counter sees; its cost (~9*B*L*D*N, mamba-ssm's
formula) is shown separately.

Part 2 (scaling): measured CPU time of forward + backward and peak resident memory above the
pre-run level as the token count grows (2.6k -> 16k), batch 1, fp32. Attention is quadratic in
tokens; the MVFuser is linear.

    python tools/analysis/adapter_complexity.py                       # both parts, ~3-4 min
    python tools/analysis/adapter_complexity.py --tokens 2594 5188    # shorter scaling run
    python tools/analysis/adapter_complexity.py --skip-scaling
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from mfuser.models.adapters import ConcatAttentionAdapter, SeparateAttentionAdapter
from mfuser.models.mvfuser import MVFuser
from mfuser.ops import build_cpu_extension
from mfuser_tools.table import print_table

PAPER = {  # per adapter at ViT-L, batch 2 at 512x512 (2 x 1297 tokens): params M, GFLOPs
    'ConcatAttentionAdapter': (4.20, 98.64),
    'SeparateAttentionAdapter': (8.40, 71.08),
    'MVFuser': (1.67, 17.21),
}
LABELS = {
    'ConcatAttentionAdapter': 'self-attn over concat',
    'SeparateAttentionAdapter': 'separate self-attn',
    'MVFuser': 'MVFuser (Mamba)',
}


def build(name, d_model):
    cls = {'ConcatAttentionAdapter': ConcatAttentionAdapter,
           'SeparateAttentionAdapter': SeparateAttentionAdapter, 'MVFuser': MVFuser}[name]
    return cls(d_model).eval()


def scan_flops(m, batch, tokens):
    """mamba-ssm's selective-scan FLOP estimate, 9 * B * L * D * N (not seen by counters)."""
    if not isinstance(m, MVFuser):
        return 0
    return 9 * batch * tokens * m.d_half * m.d_state


def _math_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    """Plain matmul attention: the CPU's fused SDPA kernel has no FLOP formula registered."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return ((q @ k.transpose(-2, -1)) * scale).softmax(-1) @ v


def count_flops(m, batch, n_first, n_second, d_model):
    x = torch.randn(batch, n_first + n_second, d_model)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, \
            mock.patch.object(torch.nn.functional, 'scaled_dot_product_attention', _math_sdpa):
        m(x, n_first=n_first)
    return counter.get_total_flops()


# ---- peak memory: sample this process's RSS while the work runs -----------------------------
def _rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _trim():
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)  # hand freed heap back, for a clean baseline
    except OSError:
        pass


def measure(fn):
    """Run fn(); return (seconds, peak RSS increase in bytes)."""
    _trim()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    done.set()
    th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return dt, peak[0] - base


def train_step(m, tokens, d_model, batch):
    def fn():
        x = torch.randn(batch, tokens, d_model, requires_grad=True)
        m(x, n_first=tokens // 2).square().mean().backward()
    return fn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--d-model', type=int, default=1024)
    p.add_argument('--tokens-per-stream', type=int, default=1297)
    p.add_argument('--batch', type=int, default=2, help='batch of the FLOP count (part 1)')
    p.add_argument('--tokens', type=int, nargs='+', default=[2594, 5188, 10376, 16384],
                   help='total token counts of the scaling run (part 2)')
    p.add_argument('--scaling-batch', type=int, default=1)
    p.add_argument('--adapters', nargs='+', default=list(PAPER))
    p.add_argument('--skip-scaling', action='store_true')
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    build_cpu_extension()
    torch.manual_seed(0)

    n = args.tokens_per_stream
    rows = []
    for name in args.adapters:
        m = build(name, args.d_model)
        params = sum(p.numel() for p in m.parameters())
        flops = count_flops(m, args.batch, n, n, args.d_model)
        sflops = scan_flops(m, args.batch, 2 * n)
        paper_p, paper_f = PAPER.get(name, (float('nan'), float('nan')))
        rows.append((LABELS.get(name, name), f'{params:,}', f'{params / 1e6:.2f}',
                     f'{paper_p:.2f}', f'{flops / 1e9:.2f}', f'{paper_f:.2f}',
                     f'{sflops / 1e9:.2f}' if sflops else '-'))
    print_table(
        f'Per-adapter cost, d_model={args.d_model}, batch {args.batch} x (2 x {n}) tokens '
        f'(FLOPs = 2 x MACs, one forward)',
        ['adapter', 'params', 'M', 'paper M', 'GFLOPs', 'paper GFLOPs', '+ scan GFLOPs'],
        rows)

    if args.skip_scaling:
        return
    print(f'\nScaling: forward+backward, batch {args.scaling_batch}, fp32, '
          f'{torch.get_num_threads()} CPU threads (one run each after a small warm-up)')
    rows = []
    for name in args.adapters:
        m = build(name, args.d_model).train()
        train_step(m, 64, args.d_model, 1)()  # warm-up (allocator, kernels)
        m.zero_grad(set_to_none=True)
        for tokens in args.tokens:
            dt, mem = measure(train_step(m, tokens, args.d_model, args.scaling_batch))
            m.zero_grad(set_to_none=True)
            rows.append((LABELS.get(name, name), tokens, f'{dt:.2f}', f'{mem / 2**20:.0f}'))
            print(f'  {name:<26} tokens={tokens:<6} {dt:7.2f} s  {mem / 2**20:7.0f} MiB',
                  flush=True)
    print_table('CPU time and peak memory (RSS above the pre-run level) vs tokens',
                ['adapter', 'tokens', 'fwd+bwd s', 'peak MiB'], rows)


if __name__ == '__main__':
    main()

"""Does MFuser work on this GPU, and how fast? One command, every number, a Markdown table.

    python tools/analysis/gpu_check.py                    # on a CUDA machine, ~5-8 minutes
    python tools/analysis/gpu_check.py --smoke            # the same code on the CPU, tiny sizes

Sections (each reports its own error and the run goes on):

1. environment: torch, CUDA, GPU, Triton; which selective-scan backends are usable and which
   one CUDA runs take (and why the others are not); whether mmcv has its CUDA kernels;
2. every usable scan backend against the float64 reference loop (computed on the CPU): fp32,
   fp16 and bf16 inputs, the output and every gradient (max relative error);
3. the scan backends at MVFuser's real size (b=2, D=512, L=2594, N=16): fwd+bwd time and peak
   memory, side by side (``benchmark_selective_scan.py``'s code), and the Triton kernels' block
   sizes swept at that size (to tune the defaults);
4. a full-size EVA02 MFuser training iteration (random weights, batch 2, 512x512) through
   mmengine's ``train_step`` with ``OptimWrapper`` / ``AmpOptimWrapper`` in fp32, fp16 and bf16
   AMP, and again with ``with_cp=True``: ms per iteration and peak memory;
5. slide inference of one 2048x1024 frame (``test_step``): seconds and peak memory;
6. mmcv's CUDA deformable attention (when mmcv was built with it) against the PyTorch path:
   agreement and time.

The results are also written as JSON (``--out``). ``--smoke`` runs the same sections on the
CPU with the demo model (configs/mfuser_tiny_synthetic.py) at tiny sizes; AMP rows need CUDA
and say so. See README, "GPU check", for preparing a machine without a package registry.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
from benchmark_selective_scan import (  # noqa: E402 (tools/analysis)
    gpu_rows,
    make_inputs,
    print_gpu_rows,
)

from mfuser_tools.table import print_table  # noqa: E402

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def _err(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'.splitlines()[0][:200]


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def _reset_peak(device):
    if device == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device):
    return torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else None


def _fmt(value, spec, missing='n/a'):
    return missing if value is None else format(value, spec)


# ----------------------------------------------------------------------------------------------
def section_environment(device):
    import mfuser  # noqa: F401
    from mfuser.models.heads.deform_attn import mmcv_has_cuda_ops
    from mfuser.ops import selective_scan as ss
    env = {'python': platform.python_version(), 'torch': torch.__version__,
           'cuda (torch build)': str(torch.version.cuda),
           'device': torch.cuda.get_device_name() if device == 'cuda' else platform.processor()
           or 'cpu'}
    try:
        import triton
        env['triton'] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        env['triton'] = f'not importable ({_err(exc)})'
    for name, why in ss.cuda_backend_status().items():
        env[f'scan {name}'] = 'usable' if why is None else f'not usable: {why}'
    env['scan on CUDA (auto)'] = ss.describe_cuda_choice()
    env['scan backends usable here'] = ', '.join(ss.available_backends())
    env['mmcv CUDA deform-attn kernel'] = 'yes' if mmcv_has_cuda_ops() else \
        'no (the PyTorch path runs on the GPU)'
    print_table('Environment', ['item', 'value'], list(env.items()))
    return env


def _scan_candidates(device):
    from mfuser.ops import selective_scan as ss
    usable = ss.available_backends()
    order = ('mamba_ssm', 'triton', 'chunked') if device == 'cuda' else \
        ('triton', 'cpp', 'chunked')
    return [n for n in order if n in usable]


def section_scan_accuracy(device, smoke):
    """Max relative error (max |x - ref| / max |ref|) of y, the last state and every gradient
    against the float64 reference loop on the CPU."""
    from mfuser.ops import selective_scan_fn
    shape = (1, 4, 20, 4) if smoke else (2, 64, 300, 16)
    base = make_inputs(*shape)
    base['delta'] = base['delta'].detach().requires_grad_()
    base64 = {k: v.detach().double().requires_grad_() for k, v in base.items()}
    g = torch.Generator().manual_seed(1)
    y_ref, h_ref = selective_scan_fn(**base64, delta_softplus=True, return_last_state=True,
                                     backend='reference')
    wy = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
    loss = (y_ref * wy).sum() + h_ref.sum()
    g_ref = dict(zip(base64, torch.autograd.grad(loss, list(base64.values()))))
    rows, out = [], []
    for name in _scan_candidates(device):
        for dname, dtype in DTYPES.items():
            try:
                leaves = {k: (v.detach().to(dtype if k in ('u', 'delta', 'B', 'C') else
                                            torch.float32)).to(device).requires_grad_()
                          for k, v in base.items()}
                y, h = selective_scan_fn(**leaves, delta_softplus=True, return_last_state=True,
                                         backend=name)
                loss = (y.double() * wy.to(device)).sum() + h.double().sum()
                grads = torch.autograd.grad(loss, list(leaves.values()))
                rel = lambda a, b: ((a.double().cpu() - b).abs().max() /  # noqa: E731
                                    b.abs().max()).item()
                errs = {k: rel(gr, g_ref[k]) for k, gr in zip(leaves, grads)}
                worst = max(errs, key=errs.get)
                rec = dict(backend=name, dtype=dname, y=rel(y, y_ref), last_state=rel(h, h_ref),
                           grads=errs, ok=bool(y.dtype == dtype))
                rows.append((name, dname, f"{rec['y']:.1e}", f"{rec['last_state']:.1e}",
                             f'{errs[worst]:.1e} (d{worst})', str(y.dtype).split('.')[-1]))
            except Exception as exc:  # noqa: BLE001
                rec = dict(backend=name, dtype=dname, error=_err(exc))
                rows.append((name, dname, '-', '-', '-', rec['error'][:80]))
            out.append(rec)
    print_table(f'Selective scan vs the float64 loop, B,D,L,N={shape} (max relative error)',
                ['backend', 'inputs', 'y', 'last state', 'worst gradient', 'y dtype'], rows)
    return out


def section_scan_speed(device, smoke):
    from mfuser.ops import selective_scan as ss
    shape = (1, 8, 64, 4) if smoke else (2, 512, 2594, 16)
    backends = _scan_candidates(device)
    if device == 'cpu':
        ss.build_cpu_extension()
    results = {}
    for dname in ('fp32', 'bf16'):
        rows = gpu_rows(backends, shape, DTYPES[dname], 1 if smoke else 5, device=device)
        results[dname] = rows
        print_gpu_rows(f'Selective scan fwd+bwd at B,D,L,N={shape}, {dname} inputs', rows)
    return results


def section_triton_blocks(device, smoke):
    """The Triton scan's chunk length (BLOCK_T) and channels per program (BLOCK_D) at
    MVFuser's size: fwd+bwd time for each, to tune the defaults on this GPU."""
    from benchmark_selective_scan import cast_inputs, time_fwd_bwd

    from mfuser.ops import selective_scan as ss
    if 'triton' not in ss.available_backends():
        print_table('Triton block sizes', ['check', 'result'],
                    [('sweep', 'skipped: the triton backend is not usable here')])
        return dict(skipped='triton not usable')
    from mfuser.ops.selective_scan_triton import BLOCK_D, BLOCK_T, selective_scan_triton
    shape = (1, 8, 64, 4) if smoke else (2, 512, 2594, 16)
    grid = [(16, 4)] if smoke else [(32, 16), (64, 4), (64, 16), (64, 32), (128, 16)]
    inputs = cast_inputs(make_inputs(*shape), device, torch.bfloat16)
    rows, out = [], []
    for bt, bd in grid:
        def fn(u, delta, A, B, C, D, delta_bias, bt=bt, bd=bd):
            return selective_scan_triton(u, delta, A, B, C, D, delta_bias, True, bt, bd)[0]
        try:
            fwd, bwd = time_fwd_bwd(fn, inputs, 1 if smoke else 5)
            rec = dict(block_t=bt, block_d=bd, forward_ms=fwd * 1e3, backward_ms=bwd * 1e3)
            rows.append((bt, bd, f'{fwd * 1e3:.2f}', f'{bwd * 1e3:.2f}',
                         f'{(fwd + bwd) * 1e3:.2f}', '(default)' if (bt, bd) == (
                             BLOCK_T, BLOCK_D) else ''))
        except Exception as exc:  # noqa: BLE001
            rec = dict(block_t=bt, block_d=bd, error=_err(exc))
            rows.append((bt, bd, '-', '-', '-', rec['error'][:80]))
        out.append(rec)
    print_table(f'Triton scan block sizes at B,D,L,N={shape}, bf16 inputs',
                ['BLOCK_T', 'BLOCK_D', 'forward ms', 'backward ms', 'total ms', ''], rows)
    return out


# ----------------------------------------------------------------------------------------------
def _build_model(config, device):
    from mfuser.engine import build_model_without_pretrained
    model = build_model_without_pretrained(config)
    return model.to(device)


def _batch(model, size, batch, device, num_classes):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, h, w), generator=g)
        label[:, : h // 8] = 255
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def section_training(model, device, smoke, iters):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    size = (56, 56) if smoke else (512, 512)
    num_classes = model.decode_head.num_classes
    data = _batch(model, size, 2, device, num_classes)
    params = [p for p in model.parameters() if p.requires_grad]
    rows, out = [], []
    for with_cp in (False, True):
        for dname in ('fp32', 'fp16', 'bf16'):
            key = f"{dname}{' + with_cp' if with_cp else ''}"
            if dname != 'fp32' and device != 'cuda':
                rows.append((key, '-', '-', 'AMP needs CUDA'))
                out.append(dict(mode=key, skipped='AMP needs CUDA'))
                continue
            try:
                model.backbone.with_cp = with_cp
                model.train()
                optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
                wrapper = OptimWrapper(optim) if dname == 'fp32' else \
                    AmpOptimWrapper(optimizer=optim, dtype=DTYPES[dname], loss_scale='dynamic')
                for _ in range(2):  # warm-up: kernels compiled, allocator settled
                    model.train_step(data, wrapper)
                _sync(device)
                _reset_peak(device)
                times, losses = [], []
                for _ in range(iters):
                    t0 = time.perf_counter()
                    log = model.train_step(data, wrapper)
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                    losses.append(float(torch.as_tensor(log['loss']).detach()))
                ms = statistics.median(times) * 1e3
                rec = dict(mode=key, ms_per_iter=ms, peak_gib=_peak_gib(device),
                           loss=losses[-1], finite=all(map(lambda v: v == v, losses)))
                rows.append((key, f'{ms:.0f}', _fmt(rec['peak_gib'], '.1f'),
                             f"{rec['loss']:.3f}"))
                del optim, wrapper
            except Exception as exc:  # noqa: BLE001
                rec = dict(mode=key, error=_err(exc), trace=traceback.format_exc()[-2000:])
                rows.append((key, '-', '-', rec['error'][:90]))
                if device == 'cuda':
                    torch.cuda.empty_cache()
            out.append(rec)
    model.backbone.with_cp = False
    print_table(f'Training iteration (train_step, batch 2, {size[0]}x{size[1]}, AdamW, '
                f'median of {iters})', ['precision', 'ms / iter', 'peak GiB', 'last loss'], rows)
    return out


def section_slide(model, device, smoke):
    size = (64, 128) if smoke else (1024, 2048)
    if smoke:  # the demo config infers whole images; slide as the full-size configs do
        model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(21, 21))
    data = _batch(model, size, 1, device, model.decode_head.num_classes)
    model.eval()
    try:
        with torch.no_grad():
            model.test_step(data)  # warm-up
            _sync(device)
            _reset_peak(device)
            t0 = time.perf_counter()
            result = model.test_step(data)
            _sync(device)
            seconds = time.perf_counter() - t0
        shape = tuple(result[0].pred_sem_seg.data.shape[-2:])
        rec = dict(seconds=seconds, peak_gib=_peak_gib(device), pred_shape=shape,
                   test_cfg=dict(model.test_cfg))
        rows = [(f'{size[1]}x{size[0]}', str(dict(model.test_cfg)), f'{seconds:.2f}',
                 _fmt(rec['peak_gib'], '.1f'), str(shape))]
    except Exception as exc:  # noqa: BLE001
        rec = dict(error=_err(exc), trace=traceback.format_exc()[-2000:])
        rows = [(f'{size[1]}x{size[0]}', '-', '-', '-', rec['error'][:90])]
    print_table('Slide inference (test_step, one frame)',
                ['frame', 'test_cfg', 'seconds', 'peak GiB', 'prediction'], rows)
    return rec


def section_deform_attn(device, smoke):
    from mmcv.ops.multi_scale_deform_attn import (
        MultiScaleDeformableAttnFunction,
        multi_scale_deformable_attn_pytorch,
    )

    from mfuser.models.heads.deform_attn import mmcv_has_cuda_ops
    if device != 'cuda' or not mmcv_has_cuda_ops():
        why = 'no CUDA device' if device != 'cuda' else 'mmcv built without CUDA ops'
        print_table('mmcv CUDA deformable attention', ['check', 'result'],
                    [('kernel vs PyTorch path', f'skipped: {why}')])
        return dict(skipped=why)
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[64, 64], [32, 32], [16, 16]], dtype=torch.long)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    nv, bs, heads, ch, nq, pts = int((shapes[:, 0] * shapes[:, 1]).sum()), 2, 8, 32, 5376, 4
    value = torch.randn(bs, nv, heads, ch, generator=g)
    loc = torch.rand(bs, nq, heads, 3, pts, 2, generator=g)
    w = torch.rand(bs, nq, heads, 3, pts, generator=g).softmax(-1)
    rows, out = [], {}
    for dname in ('fp32', 'fp16'):
        dt = DTYPES[dname]
        args = [t.cuda() for t in (value.to(dt), shapes, starts, loc.to(dt), w.to(dt))]
        ref = multi_scale_deformable_attn_pytorch(args[0].float(), args[1], args[3].float(),
                                                  args[4].float())
        timings = {}
        for label, fn in (
                ('kernel', lambda a=args: MultiScaleDeformableAttnFunction.apply(*a, 64)),
                ('pytorch', lambda a=args: multi_scale_deformable_attn_pytorch(
                    a[0], a[1], a[3], a[4]))):
            res = fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                res = fn()
            torch.cuda.synchronize()
            timings[label] = (time.perf_counter() - t0) / 10 * 1e3
            if label == 'kernel':
                err = ((res.float() - ref).abs().max() / ref.abs().max()).item()
        out[dname] = dict(rel_err=err, **{f'{k}_ms': v for k, v in timings.items()})
        rows.append((dname, f'{err:.1e}', f"{timings['kernel']:.2f}", f"{timings['pytorch']:.2f}"))
    print_table('mmcv CUDA deformable attention vs the PyTorch path',
                ['inputs', 'max rel. error', 'kernel ms', 'pytorch ms'], rows)
    return out


# ----------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--smoke', action='store_true',
                   help='run every section on the CPU at tiny sizes (the demo model)')
    p.add_argument('--config', default=None,
                   help='model config (default: configs/mfuser_eva02_gta.py, smoke: the demo)')
    p.add_argument('--iters', type=int, default=None, help='timed training iterations')
    p.add_argument('--out', default=None, help='JSON results (default work_dirs/gpu_check.json)')
    p.add_argument('--skip', nargs='*', default=[],
                   choices=['scan-accuracy', 'scan-speed', 'triton-blocks', 'train', 'slide',
                            'deform-attn'])
    args = p.parse_args(argv)
    device = 'cpu' if args.smoke else 'cuda'
    if device == 'cuda' and not torch.cuda.is_available():
        sys.exit('error: no CUDA device here; run with --smoke for the CPU rehearsal')
    config = args.config or osp.join(
        REPO, 'configs', 'mfuser_tiny_synthetic.py' if args.smoke else 'mfuser_eva02_gta.py')
    iters = args.iters or (1 if args.smoke else 3)
    out_path = args.out or osp.join(REPO, 'work_dirs',
                                    'gpu_check_smoke.json' if args.smoke else 'gpu_check.json')
    t_start = time.perf_counter()
    results = dict(smoke=args.smoke, config=osp.relpath(config, REPO))

    def run(name, fn, *a):
        if name in args.skip:
            return
        t0 = time.perf_counter()
        try:
            results[name] = fn(*a)
        except Exception as exc:  # noqa: BLE001 - a broken section must not hide the others
            results[name] = dict(error=_err(exc), trace=traceback.format_exc()[-3000:])
            print(f'\n[{name}] FAILED: {_err(exc)}')
        results.setdefault('seconds', {})[name] = round(time.perf_counter() - t0, 1)

    run('environment', section_environment, device)
    run('scan-accuracy', section_scan_accuracy, device, args.smoke)
    run('scan-speed', section_scan_speed, device, args.smoke)
    run('triton-blocks', section_triton_blocks, device, args.smoke)
    if not {'train', 'slide'} <= set(args.skip):
        t0 = time.perf_counter()
        try:
            model = _build_model(config, device)
            results['model_build_s'] = round(time.perf_counter() - t0, 1)
            run('train', section_training, model, device, args.smoke, iters)
            run('slide', section_slide, model, device, args.smoke)
            del model
        except Exception as exc:  # noqa: BLE001
            results['model'] = dict(error=_err(exc), trace=traceback.format_exc()[-3000:])
            print(f'\n[model] FAILED: {_err(exc)}')
    run('deform-attn', section_deform_attn, device, args.smoke)
    results['total_s'] = round(time.perf_counter() - t_start, 1)
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    tmp = out_path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(tmp, out_path)
    print(f'\nall sections in {results["total_s"]:.0f} s; results: {out_path}')
    failed = [k for k, v in results.items() if isinstance(v, dict) and 'error' in v]
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

"""CPU time of the full-size fused encoder against its two towers alone, and model sizes.

Builds (random weights, nothing downloaded) DINOv2-L/14 and EVA02-CLIP-L/14-336 as the fused
encoder uses them, then times one no-grad forward at a 512x512 crop of

* the VFM tower alone, the VLM tower alone (timm ``forward_features`` at the same grid),
* the fused encoder (both towers in lock-step + 24 MVFusers + necks + embeddings),
* the whole MFuser model of configs/mfuser_eva02_gta.py (text encoder, MTEnhancer, head),

and prints parameter counts (total / trainable) per part.

    python tools/analysis/benchmark_encoder.py                 # 512x512, median of 2 runs
    python tools/analysis/benchmark_encoder.py --size 256 --repeats 1
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import time

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--config', default=osp.join(REPO, 'configs', 'mfuser_eva02_gta.py'))
    args = p.parse_args(argv)

    from mfuser.engine import build_model_without_pretrained
    torch.manual_seed(0)
    model = build_model_without_pretrained(args.config).eval()
    enc = model.backbone
    x = torch.randn(1, 3, args.size, args.size)
    pad = enc._prepare(x)
    p = enc.patch_size
    H, W = pad.shape[-2:]
    padded = torch.nn.functional.pad(pad, (0, (-W) % p, 0, (-H) % p))

    rows = []
    with torch.no_grad():
        rows.append(('VFM tower alone (' + enc.vfm_name + ')',
                     timed(lambda: enc.vfm.forward_features(padded), args.repeats),
                     count(enc.vfm), 0))
        rows.append(('VLM tower alone (' + enc.vlm_name + ')',
                     timed(lambda: enc.vlm.forward_features(padded), args.repeats),
                     count(enc.vlm), 0))
        adapters = count(enc.adapter) if enc.adapter is not None else 0
        n_adapters = len(enc.adapter) if enc.adapter is not None else 0
        kind = type(enc.adapter[0]).__name__ if n_adapters else 'adapter'
        rows.append((f'fused encoder (towers + {n_adapters} {kind}s + necks)',
                     timed(lambda: enc(x), args.repeats), count(enc), count(enc, True)))
        rows.append(('whole MFuser (+ text, MTEnhancer, head)',
                     timed(lambda: model.encode_decode(x, [dict(img_shape=x.shape[-2:])]),
                           args.repeats), count(model), count(model, True)))
    alone = rows[0][1] + rows[1][1]
    print(f'\nCPU forward, batch 1, {args.size}x{args.size} (token grid '
          f'{padded.shape[-2] // p}x{padded.shape[-1] // p}), fp32, '
          f'{torch.get_num_threads()} threads, median of {args.repeats} after a warm-up')
    print('| part | seconds | vs both towers alone | parameters | trainable |')
    print('|---|---|---|---|---|')
    for name, sec, n, t in rows:
        print(f'| {name} | {sec:.2f} | {sec / alone:.2f}x | {n / 1e6:.1f} M | {t / 1e6:.2f} M |')
    print(f'\nadapters: {adapters / 1e6:.2f} M ({adapters // max(n_adapters, 1):,} each); '
          f'head: {count(model.decode_head) / 1e6:.2f} M; MTEnhancer stack: '
          f'{count(model.context_decoder) / 1e6:.2f} M; text encoder: '
          f'{count(model.text_encoder) / 1e6:.1f} M (frozen)')


if __name__ == '__main__':
    main()

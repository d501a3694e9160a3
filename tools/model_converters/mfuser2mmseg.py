"""Convert an official MFuser checkpoint (github devinxzhang/MFuser) into this project's format.

    python tools/model_converters/mfuser2mmseg.py SRC.pth DST.pth [--config CONFIG] [--force]

SRC is a released file (an mmcv 1.x checkpoint: ``meta`` + ``state_dict``, possibly an
``optimizer``). The variant (EVA02-CLIP, CLIP or SigLIP) is detected from its keys; every key is
renamed to the names of the model that the matching config builds
(``configs/mfuser_{eva02,clip,siglip}_gta.py``, or ``--config``); what is dropped is listed with
the reason; every shape is checked against that model (built on the 'meta' device: no memory,
no weight files needed). DST then loads strictly with ``tools/test.py CONFIG DST``.

SRC is opened without executing arbitrary pickles (``torch.load(weights_only=True)`` with the
allow-list of mfuser.engine.checkpoint). DST is never overwritten unless ``--force``; it is
written under a temporary name and renamed (complete or absent), with the umask's mode.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='official MFuser checkpoint -> mmseg 1.x')
    parser.add_argument('src', help='the official checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--config', help='the config whose model the weights must fit '
                        '(default: configs/mfuser_<variant>_gta.py)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    return parser.parse_args(argv)


def model_shapes(config: str) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """State-dict shapes of the config's model, built on the 'meta' device."""
    from mfuser.engine import build_model_without_pretrained
    model = build_model_without_pretrained(config, device='meta', placeholder_tokens=True)
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def shape_problems(state: dict, shapes: dict) -> list[str]:
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    reshaped = [f'{k}: {tuple(state[k].shape)} vs {tuple(shapes[k][0])} in the model'
                for k in state if k in shapes and state[k].shape != shapes[k][0]]
    problems = []
    for what, names in (('missing', missing), ('unexpected', unexpected),
                        ('shape mismatch', reshaped)):
        if names:
            problems.append(f'{len(names)} {what}: ' + ', '.join(names[:6]) +
                            (' ...' if len(names) > 6 else ''))
    return problems


def main(argv=None) -> int:
    args = parse_args(argv)
    from mfuser.engine.checkpoint import load_trusted_local, official_dataset_meta
    from mfuser.models.official_release import VARIANTS, convert_official_state_dict

    if not osp.isfile(args.src):
        sys.exit(f'error: {args.src!r} does not exist')
    if osp.exists(args.dst) and not args.force:
        sys.exit(f'error: {args.dst!r} exists; pass --force to overwrite it')
    ckpt = load_trusted_local(args.src, map_location='cpu', mmap=True)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        sys.exit(f'error: {args.src}: no model weights in it (expected an mmcv checkpoint with '
                 "'state_dict')")
    try:
        converted, dropped, variant = convert_official_state_dict(state)
    except ValueError as exc:
        sys.exit(f'error: {args.src}: {exc}')
    config = args.config or osp.join(REPO, VARIANTS[variant])
    print(f'{args.src}: official MFuser checkpoint, variant {variant!r}, {len(state)} tensors')
    extra = sorted(k for k in ckpt if k not in ('state_dict', 'meta')) \
        if isinstance(ckpt, dict) and 'state_dict' in ckpt else []
    for key in extra:
        print(f'  dropped {key!r}: training state of the official run (not model weights)')
    for key, why in sorted(dropped.items()):
        print(f'  dropped {key}: {why}')
    problems = shape_problems(converted, model_shapes(config))
    if problems:
        sys.exit(f'error: the converted weights do not fit the model of {config}:\n  ' +
                 '\n  '.join(problems))
    meta = dict(ckpt.get('meta') or {}) if isinstance(ckpt, dict) else {}
    out = dict(
        meta=dict(converted_from=osp.abspath(args.src), official_variant=variant,
                  config=osp.relpath(config, REPO) if config.startswith(REPO) else config,
                  dataset_meta=official_dataset_meta(meta),
                  official_meta={k: v for k, v in meta.items()
                                 if isinstance(v, (str, int, float))}),
        state_dict=converted)
    from mfuser.engine.atomic import atomic_open
    with atomic_open(args.dst) as f:  # complete or absent; mode 0666 minus the umask
        torch.save(out, f)
    print(f'wrote {args.dst}: {len(converted)} tensors in the names of {config}; test it with\n'
          f'  python tools/test.py {osp.relpath(config, os.getcwd())} {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

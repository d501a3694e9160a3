"""Segment images and save coloured overlays (Cityscapes palette).

    python tools/infer.py CONFIG CHECKPOINT IMG_OR_DIR [...] --out-dir DIR [--device cpu]

For each image, writes ``<name>_overlay.png`` (image blended with the colour-coded
prediction) and ``<name>_pred.png`` (the label map in train IDs) into ``--out-dir``.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
from PIL import Image

IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='MFuser inference: images -> overlays')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('inputs', nargs='+', help='image files or directories')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--opacity', type=float, default=0.5)
    parser.add_argument('--limit', type=int, default=0,
                        help='at most this many images from each directory')
    return parser.parse_args(argv)


def list_images(inputs, limit=0):
    """Image files of every input (a file, or a directory searched recursively); with
    ``limit``, at most that many from each directory."""
    images = []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(osp.join(root, f) for root, _, files in os.walk(item)
                           for f in files if f.lower().endswith(IMG_EXTS))
            images += found[:limit] if limit else found
        elif osp.isfile(item):
            images.append(item)
        else:
            sys.exit(f'error: {item!r} is neither an image nor a directory')
    return images


def colorize(label: np.ndarray, palette) -> np.ndarray:
    """(H, W) train IDs -> (H, W, 3) uint8 colours; ignore (255) stays black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[label.astype(np.uint8)]


def inference_config(path):
    """The config with a ``test_pipeline`` for mmseg's ``inference_model``: the config's own,
    else the test data set's pipeline (the first target of a multi-domain set) without label
    loading."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if 'test_pipeline' not in cfg:
        dataset = cfg.test_dataloader.dataset
        while 'pipeline' not in dataset:
            dataset = dataset['datasets'][0] if 'datasets' in dataset else dataset['dataset']
        cfg.test_pipeline = [t for t in dataset['pipeline'] if t['type'] != 'LoadAnnotations']
    return cfg


def main(argv=None):
    args = parse_args(argv)
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            sys.exit(f'error: {path!r} not found')
    images = list_images(args.inputs, args.limit)
    if not images:
        sys.exit('error: no images found in ' + ', '.join(args.inputs))
    from mmengine.runner import load_checkpoint
    from mmseg.apis import inference_model, init_model
    from mmseg.datasets import CityscapesDataset

    import mfuser  # noqa: F401  registers modules and the safe checkpoint loader
    from mfuser.engine import CheckpointError, require_matching_checkpoint, skip_pretrained_held_by
    from mfuser.engine.preflight import ConfigCheckError, check_config
    cfg = inference_config(args.config)
    try:
        for key in skip_pretrained_held_by(cfg, args.checkpoint):
            print(f'{key}: not needed, {args.checkpoint} holds these weights', flush=True)
        check_config(cfg, 'infer')
        model = init_model(cfg, None, device='cpu')
        require_matching_checkpoint(model, args.checkpoint)
    except (CheckpointError, ConfigCheckError) as exc:
        sys.exit(f'error: {exc}')
    ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    meta = (ckpt.get('meta') or {}).get('dataset_meta') or {}
    model.dataset_meta = dict(classes=meta.get('classes', CityscapesDataset.METAINFO['classes']),
                              palette=meta.get('palette', CityscapesDataset.METAINFO['palette']))
    model.to(args.device).eval()
    palette = model.dataset_meta['palette']
    os.makedirs(args.out_dir, exist_ok=True)
    for i, path in enumerate(images, 1):
        result = inference_model(model, path)
        pred = result.pred_sem_seg.data[0].cpu().numpy()
        rgb = np.asarray(Image.open(path).convert('RGB'))
        color = colorize(pred, palette)
        overlay = (rgb * (1 - args.opacity) + color * args.opacity).astype(np.uint8)
        stem = osp.splitext(osp.basename(path))[0]
        Image.fromarray(overlay).save(osp.join(args.out_dir, f'{stem}_overlay.png'))
        Image.fromarray(pred.astype(np.uint8)).save(osp.join(args.out_dir, f'{stem}_pred.png'))
        print(f'[{i}/{len(images)}] {path} -> {args.out_dir}/{stem}_overlay.png', flush=True)


if __name__ == '__main__':
    main()

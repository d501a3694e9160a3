"""Segment images and save coloured overlays (Cityscapes palette).

    python tools/infer.py CONFIG CHECKPOINT IMG_OR_DIR [...] --out-dir DIR [--device cpu]

For each image, writes ``<name>_overlay.png`` (image blended with the colour-coded
prediction) and ``<name>_pred.png`` (the label map in train IDs) into ``--out-dir``, under the
image's sub-folder relative to the inputs (``a/0001.png`` and ``b/0001.png`` give
``a/0001_*.png`` and ``b/0001_*.png``). Existing results are never replaced unless
``--overwrite`` is given (``--skip-existing`` keeps them and does the rest). An image that
cannot be read or segmented is reported and skipped; the others are still processed and the
exit code is 1 when anything was skipped.
"""
import argparse
import hashlib
import io
import os
import os.path as osp
import sys

import numpy as np
from mmseg.apis import inference_model
from mmseg.visualization import SegLocalVisualizer
from PIL import Image

from mfuser.apis import ConfigCheckError, init_segmentor, reported

IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='MFuser inference: images -> overlays')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('inputs', nargs='+', help='image files or directories')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--opacity', type=opacity, default=0.5,
                        help='weight of the colour map in the overlay, 0-1 (default 0.5)')
    exist = parser.add_mutually_exclusive_group()
    exist.add_argument('--overwrite', action='store_true',
                       help='replace results that already exist in --out-dir')
    exist.add_argument('--skip-existing', action='store_true',
                       help='leave images whose results exist alone, process the others')
    parser.add_argument('--limit', type=int, default=0,
                        help='at most this many images from each directory')
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error that otherwise ends in one line')
    return parser.parse_args(argv)


def opacity(text):
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'{text} is outside [0, 1] (0: image only, 1: colour '
                                         'map only)')
    return value


def output_names(images, inputs):
    """Output path stem (relative to ``--out-dir``) of every image, one per image: its path
    relative to the common folder of the inputs, without extension, so sub-folders are kept
    and equal names in different folders do not collide. Where stems still coincide (compared
    case-insensitively, as some file systems do), the extension is added (``x.png`` and
    ``x.jpg`` give ``x_png`` and ``x_jpg``), and where that coincides too (``a.png`` /
    ``a.PNG``, or ``x.png`` / ``x_png.png``) a short hash of the relative path as well."""
    bases = [osp.abspath(i) if osp.isdir(i) else osp.dirname(osp.abspath(i)) for i in inputs]
    base = osp.commonpath(bases) if bases else ''
    rels = [osp.relpath(osp.abspath(p), base) for p in images]

    def candidates(rel):
        stem, ext = osp.splitext(rel)
        digest = hashlib.sha1(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:8]
        return [stem, f'{stem}_{ext[1:].lower()}', f'{stem}_{ext[1:]}_{digest}']

    options = [candidates(r) for r in rels]
    level = [0] * len(rels)
    while True:  # raise the level of every name that coincides with another, until none does
        groups = {}
        for i, opts in enumerate(options):
            groups.setdefault(opts[level[i]].casefold(), []).append(i)
        clashes = [i for group in groups.values() if len(group) > 1 for i in group
                   if level[i] < 2]
        if not clashes:
            break
        for i in clashes:
            level[i] += 1
    names = [opts[lv] for opts, lv in zip(options, level)]
    if len({n.casefold() for n in names}) != len(names):  # two paths with one sha1 prefix
        raise RuntimeError(f'output names collide: {names}')
    return names


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
            raise ConfigCheckError(f'{item!r} is neither an image nor a directory')
    seen = set()
    return [p for p in images if not (osp.abspath(p) in seen or seen.add(osp.abspath(p)))]


def main(argv=None):
    args = parse_args(argv)
    with reported(args.debug):  # a user's mistake ends in one line, not a traceback
        out_root = osp.join(osp.abspath(args.out_dir), '')
        images = [p for p in list_images(args.inputs, args.limit)
                  if not osp.abspath(p).startswith(out_root)]  # earlier results are no inputs
        if not images:
            raise ConfigCheckError('no images found in ' + ', '.join(args.inputs))
        outputs = [osp.join(args.out_dir, name) for name in output_names(images, args.inputs)]
        existing = [o + suffix for o in outputs for suffix in ('_overlay.png', '_pred.png')
                    if osp.exists(o + suffix)]
        if existing and not (args.overwrite or args.skip_existing):
            raise ConfigCheckError(
                f'{len(existing)} result file(s) already exist in {args.out_dir}, e.g. '
                f'{existing[0]}; pass --overwrite to replace them, --skip-existing to keep '
                'them, or choose another --out-dir')
        model = init_segmentor(args.config, args.checkpoint, device=args.device)
    painter = SegLocalVisualizer(name='mfuser_infer', alpha=args.opacity)
    painter.dataset_meta = model.dataset_meta
    load = dict(model.cfg.test_pipeline[0])  # how the test pipeline reads an image
    skipped = []
    for i, (path, out) in enumerate(zip(images, outputs), 1):
        overlay_path, pred_path = out + '_overlay.png', out + '_pred.png'
        if args.skip_existing and osp.exists(overlay_path) and osp.exists(pred_path):
            print(f'[{i}/{len(images)}] {path}: results exist, kept', flush=True)
            continue
        try:
            bgr = read_image(path, load)  # one decode for the prediction and the overlay
            result = inference_model(model, bgr)
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            pred = result.pred_sem_seg.data[0].cpu().numpy()
            painter.add_datasample(osp.basename(path), rgb, result, draw_gt=False,
                                   with_labels=False)  # mmseg's overlay: rgb*(1-a)+colour*a
            overlay = painter.get_image()
            os.makedirs(osp.dirname(out) or '.', exist_ok=True)
            _save(Image.fromarray(overlay), overlay_path)
            _save(Image.fromarray(pred.astype(np.uint8)), pred_path)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
            text = str(exc).strip()
            reason = type(exc).__name__ + (f': {text.splitlines()[0]}' if text else '')
            skipped.append((path, reason))
            print(f'[{i}/{len(images)}] {path}: SKIPPED ({reason})', file=sys.stderr, flush=True)
            continue
        print(f'[{i}/{len(images)}] {path} -> {overlay_path}', flush=True)
    if skipped:
        print(f'{len(skipped)} of {len(images)} image(s) skipped:\n' +
              '\n'.join(f'  {p}: {r}' for p, r in skipped), file=sys.stderr, flush=True)
        return 1
    return 0


def read_image(path, load: dict | None = None):
    """The image as the test pipeline's loading step ``load`` decodes it (mmcv's
    ``imfrombytes`` with its ``color_type`` and ``imdecode_backend``; BGR; an EXIF orientation
    is applied, as phone photos need), or an error for a file that cannot be read or is cut
    off (Pillow checks that; OpenCV would decode half an image)."""
    import mmcv
    load = load or {}
    with open(path, 'rb') as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
    return mmcv.imfrombytes(data, flag=load.get('color_type', 'color'), channel_order='bgr',
                            backend=load.get('imdecode_backend', 'cv2'))


def _save(image, path):
    """Write a PNG atomically (temporary name, then rename)."""
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        image.save(tmp, format='PNG')
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


if __name__ == '__main__':
    sys.exit(main())

"""Label converters for GTAV, Cityscapes, Mapillary Vistas and SYNTHIA (importable core).

The command-line front ends live in ``tools/dataset_converters/``. Every converter:

* finds its source label files, plans one job per output file and runs the jobs in a
  ``multiprocessing`` pool with a progress bar;
* is idempotent: outputs that already exist are skipped (outputs are written to a temporary
  name and renamed, so an interrupted run never leaves a half-written file behind);
* never writes over a source file (outputs have their own names or folders);
* collects unreadable / failing files and reports them at the end instead of stopping.

Outputs (all 8-bit PNGs with the 19 Cityscapes train IDs, 255 = ignore):

* GTAV: ``labels/XXXXX.png`` (Cityscapes label IDs) -> ``labels/XXXXX_labelTrainIds.png``.
* Cityscapes: ``gtFine/*/*/*_gtFine_labelIds.png`` -> ``..._gtFine_labelTrainIds.png``.
* Mapillary: ``{training,validation}/v1.2/labels/*.png`` (66 classes) ->
  ``cityscapes_trainIdLabel/{train,val}/label/*.png``; with ``--half-res`` also
  ``half/{train,val}_img/*.jpg`` and ``half/{train,val}_label/*.png``.
* SYNTHIA: ``GT/LABELS/*.png`` (16-bit, class ID in R) -> ``GT/LABELS/*_labelTrainIds.png``.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import sys
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from .label_maps import cityscapes_lut, mapillary_lut, synthia_lut

TRAIN_ID_SUFFIX = '_labelTrainIds.png'
MAPILLARY_SPLITS = {'training': 'train', 'validation': 'val'}


@dataclass
class ConversionReport:
    """What a converter did: counts plus the files it could not convert."""
    name: str
    converted: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # [(source path, error message)]

    @property
    def total(self) -> int:
        return self.converted + self.skipped + len(self.failed)

    def summary(self) -> str:
        lines = [f'[{self.name}] {self.total} files: {self.converted} converted, '
                 f'{self.skipped} skipped (output exists), {len(self.failed)} failed']
        for path, msg in self.failed:
            lines.append(f'[{self.name}]   FAILED {path}: {msg}')
        return '\n'.join(lines)


def _mp_context():
    """'fork' where available (workers inherit the imported modules), else 'spawn'."""
    import multiprocessing as mp
    return mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else 'spawn')


@cache
def _lut(kind: str) -> np.ndarray:
    return {'cityscapes': cityscapes_lut, 'mapillary': mapillary_lut,
            'synthia': synthia_lut}[kind]()


def _read_label(path: str, kind: str) -> np.ndarray:
    if kind == 'synthia':
        import cv2
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise OSError('unreadable image')
        return raw[..., 2] if raw.ndim == 3 else raw  # BGR order: R (class ID) is last
    from PIL import Image
    with Image.open(path) as im:
        if im.mode not in ('P', 'L', 'I', 'I;16'):
            raise ValueError(f'expected a single-channel label image, got mode {im.mode}')
        return np.asarray(im)


def _save_atomic(arr: np.ndarray, dst: str, resize: tuple | None = None,
                 resample: str = 'nearest') -> None:
    from PIL import Image
    os.makedirs(osp.dirname(dst) or '.', exist_ok=True)
    im = Image.fromarray(arr)
    if resize is not None:
        im = im.resize(resize, Image.NEAREST if resample == 'nearest' else Image.BICUBIC)
    ext = osp.splitext(dst)[1].lower()
    fmt = 'JPEG' if ext in ('.jpg', '.jpeg') else 'PNG'
    tmp = f'{dst}.tmp{os.getpid()}'
    try:
        im.save(tmp, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def convert_label(src: str, dst: str, kind: str, half: bool = False) -> np.ndarray:
    """Convert one label file of ``kind`` ('cityscapes'|'mapillary'|'synthia') to train IDs.

    ``kind='cityscapes'`` is also right for GTAV. ``half=True`` also halves the resolution
    (nearest neighbour). Returns the train-ID array written (before resizing).
    """
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError(f'refusing to overwrite the source file {src}')
    ids = _read_label(src, kind)
    train = _lut(kind)[ids]
    size = (max(1, ids.shape[1] // 2), max(1, ids.shape[0] // 2)) if half else None
    _save_atomic(train, dst, resize=size)
    return train


def half_image(src: str, dst: str) -> None:
    """Write a half-resolution (bicubic) copy of an image."""
    from PIL import Image
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError(f'refusing to overwrite the source file {src}')
    with Image.open(src) as im:
        arr = np.asarray(im.convert('RGB'))
    _save_atomic(arr, dst, resize=(max(1, arr.shape[1] // 2), max(1, arr.shape[0] // 2)),
                 resample='bicubic')


def _run_job(job: tuple) -> tuple[str, str, str]:
    op, src, dst = job[:3]
    if osp.exists(dst):
        return 'skipped', src, ''
    try:
        if op == 'image_half':
            half_image(src, dst)
        else:
            convert_label(src, dst, op, half=bool(job[3]) if len(job) > 3 else False)
    except Exception as e:  # noqa: BLE001 - report every failure at the end
        return 'failed', src, f'{type(e).__name__}: {e}'
    return 'converted', src, ''


def run_jobs(name: str, jobs: list[tuple], nproc: int = 1, progress: bool = True
             ) -> ConversionReport:
    """Run conversion jobs ``(op, src, dst[, half])`` in a worker pool, with a progress bar."""
    report = ConversionReport(name)
    if not jobs:
        return report
    nproc = max(1, min(nproc, len(jobs)))
    if nproc > 1:
        pool = _mp_context().Pool(nproc)
        chunk = max(1, min(32, len(jobs) // (8 * nproc)))
        it = pool.imap_unordered(_run_job, jobs, chunksize=chunk)
    else:
        pool, it = None, map(_run_job, jobs)
    try:
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(jobs), desc=name, unit='file', file=sys.stdout,
                      dynamic_ncols=True, mininterval=0.5)
        for status, src, msg in it:
            if status == 'converted':
                report.converted += 1
            elif status == 'skipped':
                report.skipped += 1
            else:
                report.failed.append((src, msg))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    report.failed.sort()
    return report


def _require_dir(path: str, what: str) -> None:
    if not osp.isdir(path):
        raise FileNotFoundError(f'{what} not found: {path!r} (see data/README.md for the layout)')


def _sorted_glob(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern, recursive=True))


# ----------------------------------------------------------------------------- per data set
def gta_jobs(root: str) -> list[tuple]:
    """GTAV: ``labels/*.png`` (label IDs) -> ``labels/*_labelTrainIds.png``."""
    _require_dir(osp.join(root, 'labels'), 'GTAV labels folder')
    srcs = [p for p in _sorted_glob(osp.join(root, 'labels', '*.png'))
            if not p.endswith(TRAIN_ID_SUFFIX)]
    return [('cityscapes', p, p[:-4] + TRAIN_ID_SUFFIX) for p in srcs]


def cityscapes_jobs(root: str) -> list[tuple]:
    """Cityscapes: ``gtFine/*/*/*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png``."""
    _require_dir(osp.join(root, 'gtFine'), 'Cityscapes gtFine folder')
    srcs = _sorted_glob(osp.join(root, 'gtFine', '**', '*_gtFine_labelIds.png'))
    return [('cityscapes', p, p.replace('_gtFine_labelIds.png', '_gtFine' + TRAIN_ID_SUFFIX))
            for p in srcs]


def mapillary_jobs(root: str, labels_subdir: str = 'v1.2/labels', half_res: bool = False,
                   out_dir: str = 'cityscapes_trainIdLabel',
                   splits: tuple = ('training', 'validation')) -> list[tuple]:
    """Mapillary v1.2 (66 classes) -> 19 train IDs, optionally with half-resolution copies."""
    jobs = []
    for split in splits:
        short = MAPILLARY_SPLITS.get(split, split)
        lab_dir = osp.join(root, split, labels_subdir)
        if not osp.isdir(lab_dir):
            continue
        for p in _sorted_glob(osp.join(lab_dir, '*.png')):
            name = osp.basename(p)
            jobs.append(('mapillary', p, osp.join(root, out_dir, short, 'label', name)))
            if half_res:
                jobs.append(('mapillary', p, osp.join(root, 'half', f'{short}_label', name), True))
        if half_res:
            for p in _sorted_glob(osp.join(root, split, 'images', '*.jpg')):
                jobs.append(('image_half', p,
                             osp.join(root, 'half', f'{short}_img', osp.basename(p))))
    if not jobs:
        raise FileNotFoundError(
            f'no Mapillary label folders {[osp.join(root, s, labels_subdir) for s in splits]} '
            'found (see data/README.md for the layout)')
    return jobs


def synthia_jobs(root: str) -> list[tuple]:
    """SYNTHIA: ``GT/LABELS/*.png`` (16-bit) -> ``GT/LABELS/*_labelTrainIds.png``."""
    _require_dir(osp.join(root, 'GT', 'LABELS'), 'SYNTHIA GT/LABELS folder')
    srcs = [p for p in _sorted_glob(osp.join(root, 'GT', 'LABELS', '*.png'))
            if not p.endswith(TRAIN_ID_SUFFIX)]
    return [('synthia', p, p[:-4] + TRAIN_ID_SUFFIX) for p in srcs]


def convert_gta(root: str, nproc: int = 1, progress: bool = True) -> ConversionReport:
    return run_jobs('gta', gta_jobs(root), nproc, progress)


def convert_cityscapes(root: str, nproc: int = 1, progress: bool = True) -> ConversionReport:
    return run_jobs('cityscapes', cityscapes_jobs(root), nproc, progress)


def convert_mapillary(root: str, nproc: int = 1, progress: bool = True, half_res: bool = False,
                      labels_subdir: str = 'v1.2/labels',
                      out_dir: str = 'cityscapes_trainIdLabel') -> ConversionReport:
    return run_jobs('mapillary', mapillary_jobs(root, labels_subdir, half_res, out_dir), nproc,
                    progress)


def convert_synthia(root: str, nproc: int = 1, progress: bool = True) -> ConversionReport:
    return run_jobs('synthia', synthia_jobs(root), nproc, progress)


CONVERTERS = {'gta': convert_gta, 'cityscapes': convert_cityscapes,
              'mapillary': convert_mapillary, 'synthia': convert_synthia}


def cli(name: str, argv: list[str] | None = None) -> int:
    """Shared command line of ``tools/dataset_converters/<name>.py``; returns the exit code."""
    import argparse
    doc = {'gta': 'GTAV label IDs -> 19 Cityscapes train IDs (labels/*_labelTrainIds.png).',
           'cityscapes': 'Cityscapes *_gtFine_labelIds.png -> *_gtFine_labelTrainIds.png '
                         '(cityscapesscripts label table).',
           'mapillary': 'Mapillary Vistas v1.2 (66 classes) -> 19 Cityscapes train IDs '
                        '(cityscapes_trainIdLabel/{train,val}/label/*.png), optionally with '
                        'half-resolution copies (half/{train,val}_{img,label}).',
           'synthia': 'SYNTHIA RAND-CITYSCAPES 16-bit GT/LABELS -> *_labelTrainIds.png.'}[name]
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument('root', help=f'the {name} data root (e.g. data/{name})')
    parser.add_argument('--nproc', type=int, default=max(1, min(8, os.cpu_count() or 1)),
                        help='worker processes (default: number of cores, at most 8)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    if name == 'mapillary':
        parser.add_argument('--half-res', action='store_true',
                            help='also write half-resolution images and labels under half/')
        parser.add_argument('--labels-subdir', default='v1.2/labels',
                            help="label folder inside training/ and validation/ "
                                 "(default v1.2/labels; 'labels' for the v1.0/1.1 releases)")
        parser.add_argument('--out-dir', default='cityscapes_trainIdLabel',
                            help='output folder under root (default cityscapes_trainIdLabel)')
    args = parser.parse_args(argv)
    kw = dict(nproc=args.nproc, progress=not args.no_progress)
    if name == 'mapillary':
        kw.update(half_res=args.half_res, labels_subdir=args.labels_subdir, out_dir=args.out_dir)
    print(f'[{name}] converting labels under {osp.abspath(args.root)} with {args.nproc} '
          'worker(s)', flush=True)
    try:
        report = CONVERTERS[name](args.root, **kw)
    except FileNotFoundError as e:
        print(f'[{name}] ERROR: {e}', file=sys.stderr)
        return 2
    print(report.summary(), flush=True)
    return 1 if report.failed else 0

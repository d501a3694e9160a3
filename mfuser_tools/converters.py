"""Label converters for GTAV, Cityscapes, Mapillary Vistas and SYNTHIA (the tools' library).

The command-line front ends live in ``tools/dataset_converters/``. Every converter:

* finds its source label files, plans one job per output file and runs the jobs in a
  ``multiprocessing`` pool with a progress bar;
* is idempotent: complete outputs that already exist are skipped, empty or cut-off ones are
  redone, ``--force`` redoes everything (outputs are written to a temporary name and renamed,
  so an interrupted run never leaves a half-written file behind);
* never writes over a source file (outputs have their own names or folders);
* collects unreadable / failing files and reports them at the end instead of stopping;
* refuses inputs it cannot convert exactly (no input files at all, SYNTHIA colour ground
  truth in place of the 16-bit labels, Mapillary v2.0 labels for the v1.2 table);
* stops within seconds on Ctrl-C, removing the files it was writing.

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
import io
import os
import os.path as osp
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from mfuser.datasets.file_checks import incomplete_reason, is_complete_output
from mfuser.datasets.label_maps import (
    MAPILLARY_V12_CLASSES,
    cityscapes_lut,
    mapillary_lut,
    synthia_lut,
)

TRAIN_ID_SUFFIX = '_labelTrainIds.png'
MAPILLARY_SPLITS = {'training': 'train', 'validation': 'val'}
# First palette entries of the official Mapillary Vistas label PNGs (config_v1.2.json /
# config_v2.0.json): v1.2 'animal--bird', 'animal--ground-animal', 'construction--barrier--curb',
# 'construction--barrier--fence'; v2.0 'animal--bird', 'animal--ground-animal',
# 'construction--barrier--ambiguous', 'construction--barrier--concrete-block'.
MAPILLARY_V12_PALETTE_HEAD = [165, 42, 42, 0, 192, 0, 196, 196, 196, 190, 153, 153]
MAPILLARY_V20_PALETTE_HEAD = [165, 42, 42, 0, 192, 0, 250, 170, 31, 250, 170, 32]


class ConversionError(ValueError):
    """Input that the converter cannot convert correctly (stops before any output)."""


class ConversionInterrupted(KeyboardInterrupt):
    """Ctrl-C during a conversion; carries the report of what was finished."""

    def __init__(self, report: ConversionReport):
        super().__init__(report.name)
        self.report = report


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


def _read_bytes(path: str) -> bytes:
    with open(path, 'rb') as f:
        data = f.read()
    reason = incomplete_reason(data)
    if reason:
        raise OSError(reason)
    return data


def _mapillary_version_problem(palette: list | None, ids: np.ndarray) -> str | None:
    """Why a Mapillary label is not a v1.2 (66-class) label, or None."""
    v20 = palette is not None and palette[:12] == MAPILLARY_V20_PALETTE_HEAD
    top = int(ids.max()) if ids.size else 0
    if not v20 and top < len(MAPILLARY_V12_CLASSES):
        return None
    why = 'its palette is the v2.0 one' if v20 else \
        f'it has class index {top} (v1.2 has {len(MAPILLARY_V12_CLASSES)} classes, 0-65)'
    return (f'a Mapillary Vistas v2.0 label (124 classes; {why}); the 66-class v1.2 table '
            'would mislabel it. Convert the v1.2 labels of the same release instead '
            '({training,validation}/v1.2/labels, the default --labels-subdir)')


def _read_label(path: str, kind: str) -> np.ndarray:
    data = _read_bytes(path)
    if kind == 'synthia':
        import cv2
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise OSError('unreadable image')
        if raw.dtype != np.uint16:
            channels = 1 if raw.ndim == 2 else raw.shape[2]
            raise ConversionError(
                f'an {raw.dtype} image with {channels} channel(s), not a SYNTHIA label: '
                'GT/LABELS files are 16-bit PNGs with the class id in the first (R) channel. '
                'This looks like the colour ground truth (GT/COLOR), which cannot be '
                'converted exactly; use the GT/LABELS files of the release')
        return raw[..., 2] if raw.ndim == 3 else raw  # BGR order: R (class ID) is last
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ('P', 'L', 'I', 'I;16'):
            raise ValueError(f'expected a single-channel label image, got mode {im.mode}')
        palette = im.getpalette() if im.mode == 'P' else None
        ids = np.asarray(im)
    if kind == 'mapillary':
        problem = _mapillary_version_problem(palette, ids)
        if problem:
            raise ConversionError(problem)
    elif int(ids.max(initial=0)) > 255:
        raise ValueError(f'label values up to {int(ids.max())}; label ids are 0-255')
    return ids


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


def _run_job(job: tuple, force: bool = False) -> tuple[str, str, str]:
    op, src, dst = job[:3]
    if not force and is_complete_output(dst):
        return 'skipped', src, ''
    try:
        if op == 'image_half':
            half_image(src, dst)
        else:
            convert_label(src, dst, op, half=bool(job[3]) if len(job) > 3 else False)
    except Exception as e:  # noqa: BLE001 - report every failure at the end
        return 'failed', src, f'{type(e).__name__}: {e}'
    return 'converted', src, ''


def _run_job_forced(job: tuple) -> tuple[str, str, str]:
    return _run_job(job, force=True)


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C is handled by the parent, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _remove_partial_outputs(jobs: list[tuple]) -> int:
    """Delete temporary files (``<output>.tmp<pid>``) left by workers stopped mid-write."""
    by_dir: dict[str, set] = {}
    for job in jobs:
        by_dir.setdefault(osp.dirname(job[2]) or '.', set()).add(osp.basename(job[2]))
    removed = 0
    for folder, names in by_dir.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            m = re.fullmatch(r'(.+)\.tmp\d+', entry)
            if m and m.group(1) in names:
                try:
                    os.remove(osp.join(folder, entry))
                    removed += 1
                except OSError:
                    pass
    return removed


def run_jobs(name: str, jobs: list[tuple], nproc: int = 1, progress: bool = True,
             force: bool = False) -> ConversionReport:
    """Run conversion jobs ``(op, src, dst[, half])`` in a worker pool, with a progress bar.

    ``force`` redoes outputs that exist. Ctrl-C stops the workers at once, removes the files
    they were writing and raises :class:`ConversionInterrupted` (finished outputs are kept).
    """
    report = ConversionReport(name)
    if not jobs:
        return report
    nproc = max(1, min(nproc, len(jobs)))
    job_fn = _run_job_forced if force else _run_job
    pool = None
    try:
        if nproc > 1:
            # workers ignore SIGINT from the start (also between fork and their initializer)
            main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
            try:
                pool = _mp_context().Pool(nproc, initializer=_ignore_sigint)
            finally:
                if main_thread:
                    signal.signal(signal.SIGINT, previous)
            chunk = max(1, min(32, len(jobs) // (8 * nproc)))
            it = pool.imap_unordered(job_fn, jobs, chunksize=chunk)
        else:
            it = map(job_fn, jobs)
        bar = None
        if progress:
            from tqdm import tqdm
            it = bar = tqdm(it, total=len(jobs), desc=name, unit='file', file=sys.stdout,
                            dynamic_ncols=True, mininterval=0.5)
        try:
            for status, src, msg in it:
                if status == 'converted':
                    report.converted += 1
                elif status == 'skipped':
                    report.skipped += 1
                else:
                    report.failed.append((src, msg))
        finally:
            if bar is not None:
                bar.close()
    except KeyboardInterrupt:
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        _remove_partial_outputs(jobs)
        raise ConversionInterrupted(report) from None
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


def _none_found(what: str, pattern: str, root: str) -> FileNotFoundError:
    return FileNotFoundError(f'no {what} found: searched for {pattern} under {osp.abspath(root)!r} '
                             '(see data/README.md for the layout)')


# ----------------------------------------------------------------------------- per data set
def gta_jobs(root: str) -> list[tuple]:
    """GTAV: ``labels/*.png`` (label IDs) -> ``labels/*_labelTrainIds.png``."""
    _require_dir(osp.join(root, 'labels'), 'GTAV labels folder')
    srcs = [p for p in _sorted_glob(osp.join(root, 'labels', '*.png'))
            if not p.endswith(TRAIN_ID_SUFFIX)]
    if not srcs:
        raise _none_found('GTAV label files', f'labels/*.png (not *{TRAIN_ID_SUFFIX})', root)
    return [('cityscapes', p, p[:-4] + TRAIN_ID_SUFFIX) for p in srcs]


def cityscapes_jobs(root: str) -> list[tuple]:
    """Cityscapes: ``gtFine/*/*/*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png``."""
    _require_dir(osp.join(root, 'gtFine'), 'Cityscapes gtFine folder')
    srcs = _sorted_glob(osp.join(root, 'gtFine', '**', '*_gtFine_labelIds.png'))
    if not srcs:
        raise _none_found('Cityscapes label files', 'gtFine/**/*_gtFine_labelIds.png', root)
    return [('cityscapes', p, p.replace('_gtFine_labelIds.png', '_gtFine' + TRAIN_ID_SUFFIX))
            for p in srcs]


def _check_mapillary_labels(labels_subdir: str, first_label: str) -> None:
    """Refuse v2.0 labels before converting anything (each file is checked again)."""
    if 'v2.0' in labels_subdir.replace('\\', '/').split('/'):
        raise ConversionError(
            f'--labels-subdir {labels_subdir!r} holds Mapillary Vistas v2.0 labels (124 '
            'classes); this converter maps the 66 v1.2 classes to the Cityscapes ones. Use '
            'the v1.2 labels of the same release (the default, v1.2/labels)')
    try:
        _read_label(first_label, 'mapillary')
    except ConversionError as exc:
        raise ConversionError(f'{first_label}: {exc}') from None
    except Exception:  # noqa: BLE001 - an unreadable file is reported with the others
        pass


def mapillary_jobs(root: str, labels_subdir: str = 'v1.2/labels', half_res: bool = False,
                   out_dir: str = 'cityscapes_trainIdLabel',
                   splits: tuple = ('training', 'validation')) -> list[tuple]:
    """Mapillary v1.2 (66 classes) -> 19 train IDs, optionally with half-resolution copies."""
    jobs, searched = [], []
    for split in splits:
        short = MAPILLARY_SPLITS.get(split, split)
        lab_dir = osp.join(root, split, labels_subdir)
        searched.append(osp.join(split, labels_subdir, '*.png'))
        if not osp.isdir(lab_dir):
            continue
        labels = _sorted_glob(osp.join(lab_dir, '*.png'))
        if not labels:
            continue
        _check_mapillary_labels(labels_subdir, labels[0])
        for p in labels:
            name = osp.basename(p)
            jobs.append(('mapillary', p, osp.join(root, out_dir, short, 'label', name)))
            if half_res:
                jobs.append(('mapillary', p, osp.join(root, 'half', f'{short}_label', name), True))
        if half_res:
            for p in _sorted_glob(osp.join(root, split, 'images', '*.jpg')):
                jobs.append(('image_half', p,
                             osp.join(root, 'half', f'{short}_img', osp.basename(p))))
    if not jobs:
        raise _none_found('Mapillary label files', ' and '.join(searched), root)
    return jobs


def synthia_jobs(root: str) -> list[tuple]:
    """SYNTHIA: ``GT/LABELS/*.png`` (16-bit) -> ``GT/LABELS/*_labelTrainIds.png``."""
    _require_dir(osp.join(root, 'GT', 'LABELS'), 'SYNTHIA GT/LABELS folder')
    srcs = [p for p in _sorted_glob(osp.join(root, 'GT', 'LABELS', '*.png'))
            if not p.endswith(TRAIN_ID_SUFFIX)]
    if not srcs:
        raise _none_found('SYNTHIA label files', f'GT/LABELS/*.png (not *{TRAIN_ID_SUFFIX})',
                          root)
    return [('synthia', p, p[:-4] + TRAIN_ID_SUFFIX) for p in srcs]


def convert_gta(root: str, nproc: int = 1, progress: bool = True,
                force: bool = False) -> ConversionReport:
    return run_jobs('gta', gta_jobs(root), nproc, progress, force)


def convert_cityscapes(root: str, nproc: int = 1, progress: bool = True,
                       force: bool = False) -> ConversionReport:
    return run_jobs('cityscapes', cityscapes_jobs(root), nproc, progress, force)


def convert_mapillary(root: str, nproc: int = 1, progress: bool = True, half_res: bool = False,
                      labels_subdir: str = 'v1.2/labels',
                      out_dir: str = 'cityscapes_trainIdLabel',
                      force: bool = False) -> ConversionReport:
    return run_jobs('mapillary', mapillary_jobs(root, labels_subdir, half_res, out_dir), nproc,
                    progress, force)


def convert_synthia(root: str, nproc: int = 1, progress: bool = True,
                    force: bool = False) -> ConversionReport:
    return run_jobs('synthia', synthia_jobs(root), nproc, progress, force)


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
    parser.add_argument('--force', action='store_true',
                        help='convert again outputs that already exist (by default complete '
                        'outputs are kept; empty or cut-off ones are always redone)')
    if name == 'mapillary':
        parser.add_argument('--half-res', action='store_true',
                            help='also write half-resolution images and labels under half/')
        parser.add_argument('--labels-subdir', default='v1.2/labels',
                            help="label folder inside training/ and validation/ "
                                 "(default v1.2/labels; 'labels' for the v1.0/1.1 releases)")
        parser.add_argument('--out-dir', default='cityscapes_trainIdLabel',
                            help='output folder under root (default cityscapes_trainIdLabel)')
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error(f'--nproc must be at least 1, got {args.nproc}')
    kw = dict(nproc=args.nproc, progress=not args.no_progress, force=args.force)
    if name == 'mapillary':
        kw.update(half_res=args.half_res, labels_subdir=args.labels_subdir, out_dir=args.out_dir)
    print(f'[{name}] converting labels under {osp.abspath(args.root)} with {args.nproc} '
          'worker(s)', flush=True)
    try:
        report = CONVERTERS[name](args.root, **kw)
    except (FileNotFoundError, ConversionError) as e:
        print(f'[{name}] ERROR: {e}', file=sys.stderr)
        return 2
    except ConversionInterrupted as e:
        print(f'\n[{name}] interrupted: {e.report.converted} file(s) converted before Ctrl-C, '
              'no partial files left; run the same command again to finish (finished '
              'outputs are kept)', file=sys.stderr, flush=True)
        return 130
    print(report.summary(), flush=True)
    return 1 if report.failed else 0

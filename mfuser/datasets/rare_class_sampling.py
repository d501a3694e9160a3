"""Rare-class sampling (RCS, Hoyer et al., DAFormer 2022) as a data set wrapper."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import os.path as osp

import numpy as np
from mmseg.registry import DATASETS


def rcs_class_probabilities(class_pixels: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax((1 - f) / T)`` over classes, ``f`` = each class's share of labelled pixels.

    Args:
        class_pixels: (K,) pixel counts per class over the whole data set.
        temperature: ``T`` > 0; small values favour rare classes strongly.

    Returns:
        (K,) probabilities; classes with zero pixels get probability 0.
    """
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    counts = np.asarray(class_pixels, np.float64)
    present = counts > 0
    probs = np.zeros_like(counts)
    if not present.any():
        return probs
    freq = counts[present] / counts[present].sum()
    logits = (1 - freq) / temperature
    e = np.exp(logits - logits.max())
    probs[present] = e / e.sum()
    return probs


def _count_classes(job) -> list[int]:
    path, num_classes, label_map = job
    from PIL import Image
    try:
        with Image.open(path) as im:
            lab = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        from .transforms import DataFileError
        raise DataFileError(f'rare-class sampling: cannot read label {path}: '
                            f'{type(exc).__name__}: {exc}') from None
    if lab.ndim == 3:
        lab = lab[..., 0]
    if label_map:
        lut = np.arange(max(256, int(lab.max()) + 1), dtype=np.int64)
        for k, v in label_map.items():
            lut[int(k)] = v
        lab = lut[lab]
    return np.bincount(lab.ravel().astype(np.int64), minlength=256)[:num_classes].tolist()


def _mp_context():
    """'fork' where available (workers inherit the imported modules), else 'spawn'."""
    import multiprocessing as mp
    return mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else 'spawn')


def _stamps(paths: list[str]) -> list[list[int]]:
    """(size, mtime in ns) of every file: what the statistics cache is checked against."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([st.st_size, st.st_mtime_ns])
    return out


def default_cache_dir() -> str:
    """Where the statistics go unless ``cache_file`` says otherwise: ``$MFUSER_RCS_CACHE``,
    else ``$XDG_CACHE_HOME/mfuser/rcs``, else ``~/.cache/mfuser/rcs`` (never the data root)."""
    if os.environ.get('MFUSER_RCS_CACHE'):
        return osp.expanduser(os.environ['MFUSER_RCS_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or osp.join(osp.expanduser('~'), '.cache')
    return osp.join(base, 'mfuser', 'rcs')


def process_rng(holder):
    """The wrapper's own generator (``holder.seed``, ``holder._rng``, ``holder._rng_owner``):
    ``np.random.default_rng([seed, rank, worker id + 1])`` per process, None without a seed."""
    if holder.seed is None:
        return None
    import torch.utils.data as tud
    from mmengine.dist import get_rank
    info = tud.get_worker_info()
    owner = (os.getpid(), info.id if info is not None else -1)
    if holder._rng is None or holder._rng_owner != owner:
        holder._rng = np.random.default_rng([holder.seed, get_rank(), owner[1] + 1])
        holder._rng_owner = owner
    return holder._rng


def draw_index(rng, n: int, p=None) -> int:
    """One index in ``range(n)`` (weights ``p``) from ``rng``, or numpy's global state."""
    if rng is None:
        return int(np.random.choice(n, p=p)) if p is not None else int(np.random.randint(n))
    return int(rng.choice(n, p=p)) if p is not None else int(rng.integers(n))


@DATASETS.register_module()
class RareClassSampledDataset:
    """Samples source images by class rarity; the returned crop contains the sampled class.

    Each ``__getitem__`` (the index is ignored, as in DAFormer) draws a class ``c`` with
    probability ``softmax((1 - f_c) / T)`` (:func:`rcs_class_probabilities`), then uniformly an
    image having more than ``min_pixels`` pixels of ``c`` (DAFormer's and the MFuser release's
    ``pixels > min_pixels``), and runs the wrapped data set's pipeline on it; while the
    (random) crop holds no more than ``min_pixels * min_crop_ratio`` pixels of ``c``, the
    pipeline is run again (at most ``max_retries`` times).

    Pixel counts per class and image are computed once (in ``nproc`` processes) and cached in a
    JSON file: ``cache_file`` if given, else ``<cache dir>/rcs_<hash>.json`` (the hash covers
    the label file list, the class count and the label map; the cache dir is
    :func:`default_cache_dir`, never the data root). The cache records each label file's size
    and modification time; when any differs, or the cache cannot be read, the statistics are
    computed again and the cache rewritten.

    The wrapper's own draws are deterministic under ``seed``: each process (data loader worker,
    distributed rank) uses ``np.random.default_rng([seed, rank, worker_id])``. With
    ``seed=None`` they follow numpy's global state (which mmengine seeds per worker).

    Args:
        dataset: the source data set (config or instance) with a pipeline ending in
            ``PackSegInputs``.
        min_pixels: an image "has" a class when it holds more than this many of its pixels.
        temperature: ``T``; DAFormer uses 0.01; the MFuser release (and this project's GTAV,
            Cityscapes and SYNTHIA configs) uses 100, i.e. nearly uniform over classes.
        min_crop_ratio: the crop must hold more than ``min_pixels * min_crop_ratio`` pixels of
            the sampled class (0 disables the re-crop loop).
        max_retries: most extra pipeline runs per sample.
        seed: see above.
        cache_file: where to keep the class statistics (default: see above).
        nproc: processes for computing the statistics.
        lazy_init: defer statistics until ``full_init()`` / first access.
    """

    def __init__(self, dataset, min_pixels: int = 3000, temperature: float = 0.01,
                 min_crop_ratio: float = 0.5, max_retries: int = 10, seed: int | None = None,
                 cache_file: str | None = None, nproc: int = 1, lazy_init: bool = False) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.min_pixels = int(min_pixels)
        self.temperature = float(temperature)
        self.min_crop_ratio = float(min_crop_ratio)
        self.max_retries = int(max_retries)
        self.seed = seed
        self.cache_file = cache_file
        self.nproc = nproc
        self._rng = None
        self._rng_owner = None
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    # -------------------------------------------------------------- statistics
    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self.dataset.metainfo)

    def _label_paths(self) -> list[str]:
        paths = []
        for i in range(len(self.dataset)):
            info = self.dataset.get_data_info(i)
            if 'seg_map_path' not in info:
                raise ValueError('RareClassSampledDataset needs labelled data (seg_map_path)')
            paths.append(info['seg_map_path'])
        return paths

    def _cache_path(self, paths: list[str], num_classes: int, label_map) -> str:
        if self.cache_file:
            return self.cache_file
        key = hashlib.sha1(json.dumps([num_classes, label_map, [osp.abspath(p) for p in paths]],
                                      sort_keys=True, default=str).encode()).hexdigest()[:16]
        return osp.join(default_cache_dir(), f'rcs_{key}.json')

    @staticmethod
    def _read_cache(cache: str, expect: dict, n: int, num_classes: int):
        """The cached (N, K) counts, or ``(None, why not)``."""
        if not osp.isfile(cache):
            return None, 'no cache yet'
        try:
            with open(cache) as f:
                data = json.load(f)
            for key, value in expect.items():
                if data.get(key) != value:
                    return None, f'the cached {key} differ (labels changed since)'
            counts = np.asarray(data['counts'], np.int64).reshape(n, num_classes)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return None, f'cache unreadable ({type(exc).__name__}: {exc})'
        return counts, ''

    def compute_class_stats(self) -> np.ndarray:
        """(N, K) pixel count per image and class, from the cache file if it is up to date."""
        from mmengine.logging import print_log
        paths = self._label_paths()
        num_classes = len(self.dataset.metainfo['classes'])
        label_map = self.dataset.metainfo.get('label_map') or None
        label_map_json = json.loads(json.dumps(label_map)) if label_map else None
        cache = self._cache_path(paths, num_classes, label_map)
        expect = dict(version=2, num_classes=num_classes, label_map=label_map_json,
                      files=paths, stamps=_stamps(paths))
        counts, why = self._read_cache(cache, expect, len(paths), num_classes)
        self.cache_path = cache
        if counts is not None:
            return counts
        print_log(f'rare-class sampling: counting classes in {len(paths)} label files '
                  f'({why}: {cache})', logger='current')
        jobs = [(p, num_classes, label_map) for p in paths]
        if self.nproc > 1 and len(jobs) > 1:
            with _mp_context().Pool(self.nproc) as pool:
                counts = pool.map(_count_classes, jobs, chunksize=16)
        else:
            counts = [_count_classes(j) for j in jobs]
        expect['stamps'] = _stamps(paths)  # as counted (a file may change while counting)
        try:
            os.makedirs(osp.dirname(cache) or '.', exist_ok=True)
            tmp = f'{cache}.tmp{os.getpid()}'
            with open(tmp, 'w') as f:
                json.dump(dict(expect, counts=counts), f)
            os.replace(tmp, cache)
        except OSError as exc:
            print_log(f'rare-class sampling: could not write the statistics cache {cache} '
                      f'({exc}); they will be counted again next time', logger='current',
                      level=30)
        return np.asarray(counts, np.int64).reshape(len(paths), num_classes)

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        stats = self.compute_class_stats()
        self.class_stats = stats
        self.class_pixels = stats.sum(0)
        has = stats > self.min_pixels
        self.samples_with_class = {c: np.flatnonzero(has[:, c]) for c in range(stats.shape[1])
                                   if has[:, c].any()}
        if not self.samples_with_class:
            raise ValueError(f'no image has any class with > min_pixels={self.min_pixels} '
                             'pixels; lower min_pixels')
        self.classes = np.array(sorted(self.samples_with_class))
        probs = rcs_class_probabilities(self.class_pixels, self.temperature)[self.classes]
        self.class_probs = probs / probs.sum()
        self._fully_initialized = True

    # -------------------------------------------------------------- sampling
    def _generator(self):
        return process_rng(self)

    def choose(self) -> tuple[int, int]:
        """Draw ``(class, dataset index)``."""
        self.full_init()
        rng = self._generator()
        k = draw_index(rng, len(self.classes), self.class_probs)
        c = int(self.classes[k])
        pool = self.samples_with_class[c]
        return c, int(pool[draw_index(rng, len(pool))])

    def __getitem__(self, idx: int):
        c, i = self.choose()
        self.last_choice = (c, i)
        return self.load(c, i)

    def load(self, c: int, i: int):
        """Image ``i`` through the pipeline, re-cropped until it holds class ``c`` (see above)."""
        out = self.dataset[i]
        for _ in range(self.max_retries if self.min_crop_ratio > 0 else 0):
            seg = out['data_samples'].gt_sem_seg.data
            if int((seg == c).sum()) > self.min_pixels * self.min_crop_ratio:
                break
            out = self.dataset[i]
        return out

    def __len__(self) -> int:
        return len(self.dataset)

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

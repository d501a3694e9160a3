"""Several source data sets as one training set, rare-class sampled over their union."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from mmseg.registry import DATASETS

from .rare_class_sampling import (
    RareClassSampledDataset,
    draw_index,
    process_rng,
    rcs_class_probabilities,
)


@DATASETS.register_module()
class MultiSourceRareClassDataset:
    """Training on several sources at once (e.g. GTAV + SYNTHIA), with rare-class sampling
    over their union.

    Every source keeps its own data set class, pipeline and label mapping and gets its own
    :class:`RareClassSampledDataset` (so its class statistics are counted, cached and
    invalidated per source, through its own ``label_map``). The draw is the release's
    single-source one applied to the union, as if the sources were one data set: a class ``c``
    with probability ``softmax((1 - f_c) / T)``, ``f_c`` the class's share of the labelled
    pixels of all sources together; then uniformly one image among all sources' images that
    hold more than ``min_pixels`` pixels of ``c``; then that source's pipeline, re-cropped
    until the crop holds the class (``min_crop_ratio``). A class only one source has (SYNTHIA
    has no terrain, truck or train) is drawn from that source's images only. Sources are
    therefore drawn in proportion to how many of their images hold the drawn classes, not by a
    fixed ratio.

    Args:
        datasets: the source data set configs (or instances), each with its own pipeline.
        sources: one name per source (default: each data set's ``domain``); logged with the
            class statistics; the last draw is kept as ``last_choice`` = (class, source, index).
        min_pixels, temperature, min_crop_ratio, max_retries, nproc: as for
            :class:`RareClassSampledDataset`, for every source.
        seed: seeds the wrapper's draws (as :class:`RareClassSampledDataset`).
        cache_files: one statistics cache file per source (default: each source's own default).
        lazy_init: defer the statistics to ``full_init()`` / the first draw.
    """

    def __init__(self, datasets: Sequence, sources: Sequence[str] | None = None,
                 min_pixels: int = 3000, temperature: float = 0.01,
                 min_crop_ratio: float = 0.5, max_retries: int = 10, seed: int | None = None,
                 cache_files: Sequence[str | None] | None = None, nproc: int = 1,
                 lazy_init: bool = False) -> None:
        if not datasets:
            raise ValueError('MultiSourceRareClassDataset needs at least one source data set')
        if cache_files is not None and len(cache_files) != len(datasets):
            raise ValueError(f'got {len(cache_files)} cache files for {len(datasets)} sources')
        built = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        names = list(sources) if sources is not None else [
            getattr(d, 'domain', '') or f'source{i}' for i, d in enumerate(built)]
        if len(names) != len(built) or len(set(names)) != len(names):
            raise ValueError(f'need one unique name per source, got {names} for {len(built)} '
                             'data sets')
        classes = [tuple(d.metainfo['classes']) for d in built]
        if any(c != classes[0] for c in classes):
            raise ValueError('the sources must share the class list, got '
                             + '; '.join(f'{n}: {len(c)} classes' for n, c in zip(names, classes)))
        self.sources = names
        self.samplers = [
            RareClassSampledDataset(d, min_pixels=min_pixels, temperature=temperature,
                                    min_crop_ratio=min_crop_ratio, max_retries=max_retries,
                                    cache_file=cache_files[i] if cache_files else None,
                                    nproc=nproc, lazy_init=True)
            for i, d in enumerate(built)]
        self.min_pixels = int(min_pixels)
        self.temperature = float(temperature)
        self.seed = seed
        self._rng = None
        self._rng_owner = None
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        meta = copy.deepcopy(self.samplers[0].metainfo)
        meta['sources'] = tuple(self.sources)
        return meta

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        from mmengine.logging import print_log
        for s in self.samplers:
            s.full_init()  # statistics per source, each with its own label map and cache
        self.class_pixels = sum(s.class_pixels for s in self.samplers)
        pools = {}
        for k, s in enumerate(self.samplers):
            for c, idx in s.samples_with_class.items():
                pools.setdefault(c, []).append(np.stack([np.full(len(idx), k), idx], 1))
        self.samples_with_class = {c: np.concatenate(p) for c, p in sorted(pools.items())}
        self.classes = np.array(sorted(self.samples_with_class))
        probs = rcs_class_probabilities(self.class_pixels, self.temperature)[self.classes]
        self.class_probs = probs / probs.sum()
        self._fully_initialized = True
        lines = [f'  {n}: {len(s)} images ({getattr(s.dataset, "data_root", "") or "-"}), '
                 f'{len(s.classes)} classes with > {self.min_pixels} pixels in an image, '
                 f'statistics {getattr(s, "cache_path", "-")}'
                 for n, s in zip(self.sources, self.samplers)]
        print_log(f'multi-source training on {" + ".join(self.sources)} (rare-class sampling '
                  f'over the union, T={self.temperature}):\n' + '\n'.join(lines),
                  logger='current')

    def choose(self) -> tuple[int, int, int]:
        """Draw ``(class, source index, index in that source)``."""
        self.full_init()
        rng = process_rng(self)
        c = int(self.classes[draw_index(rng, len(self.classes), self.class_probs)])
        pool = self.samples_with_class[c]
        k, i = pool[draw_index(rng, len(pool))]
        return c, int(k), int(i)

    def __getitem__(self, idx: int):
        c, k, i = self.choose()
        self.last_choice = (c, self.sources[k], i)
        return self.samplers[k].load(c, i)

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)

    def _locate(self, idx: int) -> tuple[int, int]:
        if idx < 0:
            idx += len(self)
        for k, s in enumerate(self.samplers):
            if idx < len(s):
                return k, idx
            idx -= len(s)
        raise IndexError(f'index out of range for {len(self)} images')

    def get_data_info(self, idx: int) -> dict:
        k, i = self._locate(idx)
        return dict(self.samplers[k].get_data_info(i), source=self.sources[k])

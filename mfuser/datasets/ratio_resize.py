"""Random rescaling relative to each image's own size (the release's training resize)."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform, Resize
from mmseg.registry import TRANSFORMS

__all__ = ['RandomRatioResize']


@TRANSFORMS.register_module()
class RandomRatioResize(BaseTransform):
    """Rescale by a ratio drawn uniformly from ``ratio_range``, relative to the image's size.

    The release trains with mmseg 0.x ``Resize(ratio_range=(0.5, 2.0))`` and no ``img_scale``:
    each image is rescaled to ``(int(w * r), int(h * r))`` (keep ratio) with
    ``r ~ U(ratio_range)`` drawn by ``np.random.random_sample``. mmseg 1.x's ``RandomResize``
    always scales relative to a fixed ``scale`` instead (for GTAV's 1914x1052 frames and a
    2048x1024 scale that is 0.97 r, not r).

    Required keys: ``img`` (and ``gt_seg_map`` if present, resized with nearest).
    Added / modified keys: ``img``, ``gt_seg_map``, ``img_shape``, ``scale``, ``scale_factor``,
    ``keep_ratio``.
    """

    def __init__(self, ratio_range: tuple[float, float] = (0.5, 2.0),
                 interpolation: str = 'bilinear'):
        lo, hi = (float(r) for r in ratio_range)
        if not 0 < lo <= hi:
            raise ValueError(f'ratio_range must satisfy 0 < min <= max, got {ratio_range}')
        self.ratio_range = (lo, hi)
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        lo, hi = self.ratio_range
        ratio = np.random.random_sample() * (hi - lo) + lo
        scale = (int(w * ratio), int(h * ratio))
        return Resize(scale=scale, keep_ratio=True, interpolation=self.interpolation)(results)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(ratio_range={self.ratio_range})'

"""ACDC test-server submission: per-image prediction PNGs in the test set's layout, zipped.

What the ACDC benchmark (https://acdc.vision.ee.ethz.ch/submit) takes for semantic
segmentation, as its requirements are quoted by submissions that scored there: one 8-bit PNG
per test image, at the image's size (1920x1080), named like the image, encoding the 19 classes
as Cityscapes **train IDs** (road = 0). This is what HRDA/MIC (``labelTrainIds``), Refign and
Rein (mmseg's ``format_only`` output) uploaded. ``label_ids=True`` writes Cityscapes label IDs
(road = 7; ignore -> 0) instead, for a server that asks for those: check the submission page
before uploading.
"""
from __future__ import annotations

import os
import os.path as osp
import zipfile
from collections import Counter
from collections.abc import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.registry import METRICS

from mfuser.engine.atomic import atomic_open

IMAGE_ROOT = 'rgb_anon'


def train_id_to_label_id_lut() -> np.ndarray:
    """256-entry uint8 LUT Cityscapes train ID -> label ID (``cityscapesscripts``' table, as
    mmseg's ``CityscapesMetric`` converts); 255 and unknown values -> 0 (unlabeled)."""
    from cityscapesscripts.helpers.labels import trainId2label
    lut = np.zeros(256, np.uint8)
    for tid, lab in trainId2label.items():
        if 0 <= tid < 255:
            lut[tid] = lab.id
    return lut


def submission_path(img_path: str) -> str:
    """``<condition>/<split>/<sequence>/<image name>`` of an ACDC image, i.e. its path below
    ``rgb_anon/``; a path outside that layout is an error naming it."""
    parts = osp.normpath(img_path).split(os.sep)
    k = len(parts) - 1 - parts[::-1].index(IMAGE_ROOT) if IMAGE_ROOT in parts else -1
    if k < 0 or len(parts) - k != 5:
        raise ValueError(f'ACDC submission: {img_path} is not an ACDC image path '
                         f'(.../{IMAGE_ROOT}/<condition>/<split>/<sequence>/<name>_rgb_anon.png)')
    return '/'.join(parts[k + 1:])


@METRICS.register_module()
class ACDCSubmissionWriter(BaseMetric):
    """Writes the ACDC benchmark submission of a test run (no ground truth is read).

    Every prediction goes to ``<output_dir>/<condition>/<split>/<sequence>/<image name>`` (the
    image's own file name and its path below ``rgb_anon/``), as an 8-bit PNG of the image's size
    with train IDs (default) or Cityscapes label IDs (``label_ids=True``). At the end all of them
    are zipped into ``<output_dir>/<zip_name>`` with those relative paths, ready to upload, and
    the number of images per condition is logged.

    Args:
        output_dir: where the PNGs and the zip go (``tools/test.py --out`` sets it).
        label_ids: write Cityscapes label IDs instead of train IDs (see the module docstring).
        zip_name: the archive's file name.
        format_only: must be True (the ACDC test labels are not public; there is nothing to
            score); accepted so that ``tools/test.py --format-only`` can set it.
        collect_device, prefix: as for mmengine's ``BaseMetric``.
    """

    def __init__(self, output_dir: str | None = None, label_ids: bool = False,
                 zip_name: str = 'acdc_submission.zip', format_only: bool = True,
                 collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not format_only:
            raise ValueError('ACDCSubmissionWriter only writes predictions for the ACDC server '
                             '(format_only=True); score the val split with DGIoUMetric')
        if not output_dir:
            raise ValueError('ACDCSubmissionWriter needs output_dir (tools/test.py --out DIR)')
        self.output_dir = output_dir
        self.label_ids = label_ids
        self.zip_name = zip_name
        self._lut = train_id_to_label_id_lut() if label_ids else None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        from PIL import Image
        for sample in data_samples:
            rel = submission_path(sample['img_path'])
            pred = sample['pred_sem_seg']['data'].squeeze(0).cpu().numpy()
            ori = tuple(sample.get('ori_shape', pred.shape))[:2]
            if pred.shape != ori:
                raise ValueError(f'ACDC submission: the prediction for {sample["img_path"]} is '
                                 f'{pred.shape[1]}x{pred.shape[0]}, the image {ori[1]}x{ori[0]}')
            pred = pred.astype(np.uint8)
            if self._lut is not None:
                pred = self._lut[pred]
            path = osp.join(self.output_dir, *rel.split('/'))
            with atomic_open(path) as f:  # complete or absent
                Image.fromarray(pred).save(f, format='PNG')
            self.results.append(rel)

    def compute_metrics(self, results: list) -> dict:
        logger: MMLogger = MMLogger.get_current_instance()
        rels = sorted(set(results))
        archive = osp.join(self.output_dir, self.zip_name)
        with atomic_open(archive) as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_DEFLATED) as zf:
            for rel in rels:
                zf.write(osp.join(self.output_dir, *rel.split('/')), rel)
        per_condition = Counter(r.split('/')[0] for r in rels)
        ids = 'Cityscapes label IDs' if self.label_ids else 'train IDs'
        print_log(f'ACDC submission: {len(rels)} predictions ({ids}; '
                  + ', '.join(f'{c}: {n}' for c, n in sorted(per_condition.items()))
                  + f') in {osp.abspath(self.output_dir)}; upload '
                  f'{osp.abspath(archive)} at https://acdc.vision.ee.ethz.ch/submit', logger)
        return {}

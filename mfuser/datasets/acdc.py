"""ACDC (Sakaridis et al., 2021): fog, night, rain and snow driving scenes, 1920x1080."""
from __future__ import annotations

from mmseg.registry import DATASETS

from .base import StreetSceneDataset

ACDC_CONDITIONS = ('fog', 'night', 'rain', 'snow')


@DATASETS.register_module()
class ACDCDataset(StreetSceneDataset):
    """One condition of ACDC as shipped (``rgb_anon_trainvaltest.zip``, ``gt_trainval.zip``):

    * images ``rgb_anon/{condition}/{split}/<sequence>/<name>_rgb_anon.png``;
    * labels ``gt/{condition}/{split}/<sequence>/<name>_gt_labelTrainIds.png`` (the 19
      Cityscapes train IDs + 255, shipped ready; nothing to convert). The ``test`` split has no
      labels: it is for the benchmark server (:class:`~mfuser.evaluation.ACDCSubmissionWriter`).

    The normal-condition reference images (``{split}_ref`` folders) are not read.

    Args:
        condition: ``'fog'``, ``'night'``, ``'rain'`` or ``'snow'``; the default domain name is
            ``acdc_<condition>``.
        split: ``'train'``, ``'val'`` or ``'test'`` (images only).
        **kwargs: as for :class:`~mfuser.datasets.base.StreetSceneDataset` (``data_prefix``
            overrides the layout above).
    """
    NAME = 'ACDC'
    DEFAULT_ROOT = 'data/acdc'
    CONDITIONS = ACDC_CONDITIONS

    def __init__(self, condition: str = 'fog', split: str = 'val', domain: str | None = None,
                 data_prefix: dict | None = None, img_suffix: str = '_rgb_anon.png',
                 seg_map_suffix: str = '_gt_labelTrainIds.png', **kwargs) -> None:
        if condition not in ACDC_CONDITIONS:
            raise ValueError(f'ACDCDataset: condition must be one of {ACDC_CONDITIONS}, got '
                             f'{condition!r}')
        self.condition = condition
        if data_prefix is None:
            data_prefix = dict(img_path=f'rgb_anon/{condition}/{split}')
            if split != 'test':
                data_prefix['seg_map_path'] = f'gt/{condition}/{split}'
        super().__init__(split=split, domain=domain or f'acdc_{condition}',
                         data_prefix=data_prefix, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, **kwargs)
        if 'seg_map_path' not in self.data_prefix:
            from mmseg.datasets.transforms import LoadAnnotations
            if any(isinstance(t, LoadAnnotations)
                   for t in getattr(self.pipeline, 'transforms', [])):
                raise ValueError(f'ACDC {condition}/{split} has no labels (the test split is '
                                 'scored by the benchmark server), but the pipeline has '
                                 'LoadAnnotations; use a pipeline without it')

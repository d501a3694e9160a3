"""GTAV (Richter et al., 2016): 24,966 synthetic frames with Cityscapes label IDs."""
from mmseg.registry import DATASETS

from .base import StreetSceneDataset


@DATASETS.register_module()
class GTAVDataset(StreetSceneDataset):
    """GTAV as released: ``images/XXXXX.png``, ``labels/XXXXX.png`` (label IDs).

    Reads ``labels/XXXXX_labelTrainIds.png`` made by ``tools/dataset_converters/gta.py``. There
    are no split folders (``split`` is ignored); use ``ann_file`` with a list of names (e.g. the
    official train/val/test split) or ``indices`` for a subset.
    """
    DOMAIN = 'gta'
    NAME = 'GTAV'
    DEFAULT_ROOT = 'data/gta'
    DEFAULT_PREFIX = dict(img_path='images', seg_map_path='labels')
    CONVERTER = 'python tools/dataset_converters/gta.py'

    def __init__(self, img_suffix='.png', seg_map_suffix='_labelTrainIds.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

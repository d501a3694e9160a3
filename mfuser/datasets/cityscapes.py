"""Cityscapes with a checked data root and a domain tag (mmseg's CityscapesDataset otherwise)."""
from mmseg.registry import DATASETS

from .base import StreetSceneDataset


@DATASETS.register_module()
class CityscapesDGDataset(StreetSceneDataset):
    """Cityscapes: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and
    ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` (``tools/dataset_converters/
    cityscapes.py`` makes them from ``*_gtFine_labelIds.png``).

    Same files, suffixes, classes and palette as mmseg's ``CityscapesDataset`` (which works
    unchanged in every config here); this class adds the layout default per ``split``, the
    missing-data error and the ``domain`` tag. (mmseg already registers ``CityscapesDataset``,
    hence the name.)
    """
    DOMAIN = 'cityscapes'
    NAME = 'Cityscapes'
    DEFAULT_ROOT = 'data/cityscapes'
    DEFAULT_PREFIX = dict(img_path='leftImg8bit/{split}', seg_map_path='gtFine/{split}')
    CONVERTER = 'python tools/dataset_converters/cityscapes.py'

    def __init__(self, img_suffix='_leftImg8bit.png', seg_map_suffix='_gtFine_labelTrainIds.png',
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

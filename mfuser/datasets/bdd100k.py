"""BDD100K semantic segmentation (10k images), masks already in the 19 train IDs."""
from mmseg.registry import DATASETS

from .base import StreetSceneDataset


@DATASETS.register_module()
class BDD100KDGDataset(StreetSceneDataset):
    """BDD100K: ``images/10k/{split}/*.jpg`` and ``labels/sem_seg/masks/{split}/*.png``.

    The released masks are train IDs (255 = ignore): no converter is needed. Same files and
    suffixes as mmseg's ``BDD100KDataset`` (registered by mmseg, hence the name), plus the
    layout default, the missing-data error and the ``domain`` tag.
    """
    DOMAIN = 'bdd100k'
    NAME = 'BDD100K'
    DEFAULT_ROOT = 'data/bdd100k'
    DEFAULT_PREFIX = dict(img_path='images/10k/{split}',
                          seg_map_path='labels/sem_seg/masks/{split}')

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

"""Mapillary Vistas v1.2, evaluated on the 19 Cityscapes classes."""
from mmseg.registry import DATASETS

from .base import StreetSceneDataset


@DATASETS.register_module()
class MapillaryDataset(StreetSceneDataset):
    """Mapillary Vistas mapped to the 19 Cityscapes classes.

    ``tools/dataset_converters/mapillary.py`` maps the v1.2 labels (66 classes, table in
    :mod:`mfuser.datasets.label_maps`) to train IDs. Layouts:

    * full resolution (``half_res=False``, the tqdm/MFuser protocol):
      ``{training,validation}/images/*.jpg`` + ``cityscapes_trainIdLabel/{train,val}/label/*.png``;
    * half resolution (``half_res=True``, the Rein protocol; converter ``--half-res``):
      ``half/{train,val}_img/*.jpg`` + ``half/{train,val}_label/*.png``.
    """
    DOMAIN = 'mapillary'
    NAME = 'Mapillary Vistas'
    DEFAULT_ROOT = 'data/mapillary'
    DEFAULT_PREFIX = dict(img_path='{split}/images',
                          seg_map_path='cityscapes_trainIdLabel/{short}/label')
    HALF_PREFIX = dict(img_path='half/{short}_img', seg_map_path='half/{short}_label')
    SPLIT_NAMES = {'train': 'training', 'val': 'validation'}
    CONVERTER = 'python tools/dataset_converters/mapillary.py'

    def __init__(self, split: str = 'val', half_res: bool = False, data_prefix=None,
                 img_suffix='.jpg', seg_map_suffix='.png', **kwargs):
        if data_prefix is None:
            long = self.SPLIT_NAMES.get(split, split)
            short = {v: k for k, v in self.SPLIT_NAMES.items()}.get(long, long)
            tmpl = self.HALF_PREFIX if half_res else self.DEFAULT_PREFIX
            data_prefix = {k: v.format(split=long, short=short) for k, v in tmpl.items()}
        self.half_res = half_res
        super().__init__(split=split, data_prefix=data_prefix, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, **kwargs)

    def _converter_args(self) -> str:
        return ' --half-res' if self.half_res else ''

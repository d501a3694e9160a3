"""SYNTHIA RAND-CITYSCAPES: 9,400 synthetic frames with 16 of the 19 Cityscapes classes."""
from mmseg.registry import DATASETS

from .base import StreetSceneDataset
from .label_maps import SYNTHIA_CLASSES_16


@DATASETS.register_module()
class SYNTHIADataset(StreetSceneDataset):
    """SYNTHIA: ``RGB/XXXXXXX.png``, ``GT/LABELS/XXXXXXX.png`` (16-bit SYNTHIA IDs).

    Reads ``GT/LABELS/XXXXXXX_labelTrainIds.png`` from ``tools/dataset_converters/synthia.py``.
    Labels use the 19 Cityscapes train IDs (so models and target sets stay 19-class); terrain,
    truck and train never occur. Evaluate SYNTHIA-trained models on the 16 classes with
    ``DGIoUMetric(eval_classes=SYNTHIA_CLASSES_16)`` (``SYNTHIA_CLASSES_16`` below).
    """
    DOMAIN = 'synthia'
    NAME = 'SYNTHIA'
    DEFAULT_ROOT = 'data/synthia'
    DEFAULT_PREFIX = dict(img_path='RGB', seg_map_path='GT/LABELS')
    CONVERTER = 'python tools/dataset_converters/synthia.py'
    CLASSES_16 = SYNTHIA_CLASSES_16

    def __init__(self, img_suffix='.png', seg_map_suffix='_labelTrainIds.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

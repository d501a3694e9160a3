"""Data sets (GTAV, Cityscapes, BDD100K, Mapillary, SYNTHIA, ACDC), the multi-domain,
rare-class sampling and multi-source wrappers, label tables and the loading transforms (the
offline converters and the synthetic data generator live in the mfuser_tools package)."""
from .acdc import ACDC_CONDITIONS, ACDCDataset
from .bdd100k import BDD100KDGDataset
from .cityscapes import CityscapesDGDataset
from .gtav import GTAVDataset
from .label_maps import CITYSCAPES_CLASSES, CITYSCAPES_METAINFO, SYNTHIA_CLASSES_16
from .mapillary import MapillaryDataset
from .multi_domain import MultiDomainDataset
from .multi_source import MultiSourceRareClassDataset
from .rare_class_sampling import RareClassSampledDataset, rcs_class_probabilities
from .ratio_resize import RandomRatioResize
from .synthia import SYNTHIADataset
from .transforms import DataFileError, LoadCheckedAnnotations, LoadCheckedImageFromFile

__all__ = ['GTAVDataset', 'CityscapesDGDataset', 'BDD100KDGDataset', 'MapillaryDataset',
           'SYNTHIADataset', 'MultiDomainDataset', 'RareClassSampledDataset', 'RandomRatioResize',
           'rcs_class_probabilities', 'ACDCDataset', 'ACDC_CONDITIONS',
           'MultiSourceRareClassDataset', 'CITYSCAPES_CLASSES', 'CITYSCAPES_METAINFO',
           'SYNTHIA_CLASSES_16', 'DataFileError', 'LoadCheckedAnnotations',
           'LoadCheckedImageFromFile']

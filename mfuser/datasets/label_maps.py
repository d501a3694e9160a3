"""Label tables shared by the dataset classes, the converters, the synthetic generator and tests.

Every table maps a data set's *source* label ID to one of the 19 Cityscapes train IDs
(``CITYSCAPES_CLASSES``); IDs with no Cityscapes counterpart map to ``IGNORE_INDEX`` (255).

* Cityscapes / GTAV: the official ``cityscapesscripts.helpers.labels`` table (label ID 0-33,
  -1 for the licence plate). GTAV ships its labels with the same IDs.
* Mapillary Vistas v1.2: 66 classes (0-65, ``MAPILLARY_V12_CLASSES``). ``MAPILLARY_TO_TRAIN_ID``
  is the mapping used across the DGSS literature (RobustNet, DAFormer/HRDA, Rein, tqdm):
  road <- road, lane marking (general), manhole; sidewalk <- sidewalk, curb; rider <- bicyclist,
  motorcyclist, other rider; pole <- pole, utility pole; everything else 1:1 by name; the rest
  (crosswalk markings, bike lane, parking, traffic-sign back, street light, ...) -> 255.
* SYNTHIA (RAND-CITYSCAPES, 16-bit label PNGs): ``SYNTHIA_TO_TRAIN_ID`` from the data set's
  README. SYNTHIA contains 16 of the 19 classes (no terrain, truck or train pixels occur);
  ``SYNTHIA_CLASSES_16`` names them for 16-class evaluation.
"""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                      'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                      'truck', 'bus', 'train', 'motorcycle', 'bicycle')
CITYSCAPES_PALETTE = [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156],
                      [190, 153, 153], [153, 153, 153], [250, 170, 30], [220, 220, 0],
                      [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
                      [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100],
                      [0, 0, 230], [119, 11, 32]]
#: mmseg ``metainfo`` shared by every 19-class data set (same as mmseg's CityscapesDataset).
CITYSCAPES_METAINFO = dict(classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE)

MAPILLARY_V12_CLASSES = (
    'animal--bird', 'animal--ground-animal', 'construction--barrier--curb',
    'construction--barrier--fence', 'construction--barrier--guard-rail',
    'construction--barrier--other-barrier', 'construction--barrier--wall',
    'construction--flat--bike-lane', 'construction--flat--crosswalk-plain',
    'construction--flat--curb-cut', 'construction--flat--parking',
    'construction--flat--pedestrian-area', 'construction--flat--rail-track',
    'construction--flat--road', 'construction--flat--service-lane',
    'construction--flat--sidewalk', 'construction--structure--bridge',
    'construction--structure--building', 'construction--structure--tunnel', 'human--person',
    'human--rider--bicyclist', 'human--rider--motorcyclist', 'human--rider--other-rider',
    'marking--crosswalk-zebra', 'marking--general', 'nature--mountain', 'nature--sand',
    'nature--sky', 'nature--snow', 'nature--terrain', 'nature--vegetation', 'nature--water',
    'object--banner', 'object--bench', 'object--bike-rack', 'object--billboard',
    'object--catch-basin', 'object--cctv-camera', 'object--fire-hydrant', 'object--junction-box',
    'object--mailbox', 'object--manhole', 'object--phone-booth', 'object--pothole',
    'object--street-light', 'object--support--pole', 'object--support--traffic-sign-frame',
    'object--support--utility-pole', 'object--traffic-light', 'object--traffic-sign--back',
    'object--traffic-sign--front', 'object--trash-can', 'object--vehicle--bicycle',
    'object--vehicle--boat', 'object--vehicle--bus', 'object--vehicle--car',
    'object--vehicle--caravan', 'object--vehicle--motorcycle', 'object--vehicle--on-rails',
    'object--vehicle--other-vehicle', 'object--vehicle--trailer', 'object--vehicle--truck',
    'object--vehicle--wheeled-slow', 'void--car-mount', 'void--ego-vehicle', 'void--unlabeled')
assert len(MAPILLARY_V12_CLASSES) == 66

#: Mapillary Vistas v1.2 class index -> Cityscapes train ID (absent keys -> 255).
MAPILLARY_TO_TRAIN_ID = {
    13: 0, 24: 0, 41: 0,  # road, marking--general, manhole -> road
    2: 1, 15: 1,  # curb, sidewalk -> sidewalk
    17: 2,  # building
    6: 3,  # wall
    3: 4,  # fence
    45: 5, 47: 5,  # pole, utility pole -> pole
    48: 6,  # traffic light
    50: 7,  # traffic sign (front)
    30: 8,  # vegetation
    29: 9,  # terrain
    27: 10,  # sky
    19: 11,  # person
    20: 12, 21: 12, 22: 12,  # bicyclist, motorcyclist, other rider -> rider
    55: 13,  # car
    61: 14,  # truck
    54: 15,  # bus
    58: 16,  # on rails -> train
    57: 17,  # motorcycle
    52: 18,  # bicycle
}

#: SYNTHIA RAND-CITYSCAPES class ID (R channel of GT/LABELS) -> Cityscapes train ID.
#: 0 void, 13 parking-slot, 14 road-work, 22 lane-marking -> 255.
SYNTHIA_TO_TRAIN_ID = {
    3: 0,  # road
    4: 1,  # sidewalk
    2: 2,  # building
    21: 3,  # wall
    5: 4,  # fence
    7: 5,  # pole
    15: 6,  # traffic light
    9: 7,  # traffic sign
    6: 8,  # vegetation
    16: 9,  # terrain (listed in the README, no pixels in RAND-CITYSCAPES)
    1: 10,  # sky
    10: 11,  # pedestrian -> person
    17: 12,  # rider
    8: 13,  # car
    18: 14,  # truck (no pixels)
    19: 15,  # bus
    20: 16,  # train (no pixels)
    12: 17,  # motorcycle
    11: 18,  # bicycle
}
#: The 16 Cityscapes classes that occur in SYNTHIA (for 16-class mIoU).
SYNTHIA_CLASSES_16 = tuple(c for c in CITYSCAPES_CLASSES if c not in ('terrain', 'truck', 'train'))


def lut_from_dict(mapping: dict[int, int], size: int, default: int = IGNORE_INDEX) -> np.ndarray:
    """A lookup table ``lut`` (uint8, ``size`` entries) with ``lut[src] = mapping.get(src)``."""
    lut = np.full(size, default, dtype=np.uint8)
    for src, dst in mapping.items():
        if 0 <= src < size:
            lut[src] = dst
    return lut


def cityscapes_label_id_to_train_id() -> dict[int, int]:
    """Cityscapes label ID (0-33) -> train ID, read from ``cityscapesscripts.helpers.labels``."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as e:  # pragma: no cover - pinned dependency
        raise ImportError('cityscapesscripts is required (pip install cityscapesscripts==2.3.0)'
                          ) from e
    return {lab.id: (lab.trainId if 0 <= lab.trainId < 255 else IGNORE_INDEX)
            for lab in labels if lab.id >= 0}


def cityscapes_lut() -> np.ndarray:
    """256-entry uint8 LUT label ID -> train ID (Cityscapes and GTAV labels)."""
    return lut_from_dict(cityscapes_label_id_to_train_id(), 256)


def mapillary_lut() -> np.ndarray:
    """256-entry uint8 LUT Mapillary v1.2 class index -> train ID."""
    return lut_from_dict(MAPILLARY_TO_TRAIN_ID, 256)


def synthia_lut() -> np.ndarray:
    """65536-entry uint8 LUT SYNTHIA 16-bit class ID -> train ID."""
    return lut_from_dict(SYNTHIA_TO_TRAIN_ID, 65536)

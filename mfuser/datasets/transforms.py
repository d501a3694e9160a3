"""Loading transforms that refuse bad files instead of training or scoring on them.

mmcv's ``LoadImageFromFile`` and mmseg's ``LoadAnnotations`` accept a truncated JPEG (OpenCV
decodes what is there and greys the rest), wrap 16-bit labels modulo 256
(``.astype(np.uint8)``), let label values outside the classes through (a BDD100K mask with
200 is trained on as class 200), and a label at half the image's size is silently resized to
fit by the next ``Resize``. Their errors for unreadable files do not name the file.

:class:`LoadCheckedImageFromFile` and :class:`LoadCheckedAnnotations` load exactly the same
arrays for good files and raise :class:`DataFileError` naming the data set, the file(s) and
what is wrong otherwise. The shipped configs name them in every data set's pipeline
(``dict(type='LoadCheckedImageFromFile')``, ``dict(type='LoadCheckedAnnotations')``); the
street-scene data sets (:class:`~mfuser.datasets.base.StreetSceneDataset` and its subclasses)
give them the settings a pipeline leaves unset (their ``fill_unset``).
A plain mmcv / mmseg loader in a pipeline runs as it is, unchecked.
"""
from __future__ import annotations

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from .file_checks import incomplete_reason

INVALID_LABEL_MODES = ('error', 'ignore')


class DataFileError(ValueError):
    """An image or label file that cannot be used as it is (named in the message)."""


def _where(dataset_name: str) -> str:
    return f'{dataset_name}: ' if dataset_name else ''


def read_image_checked(path: str, backend_args, flag: str, backend: str):
    """Read and decode an image file: ``(array, None)``, or ``(None, reason)`` when it cannot
    be read, is truncated (checked before decoding) or does not decode."""
    import mmcv
    try:
        data = fileio.get(path, backend_args=backend_args)
        reason = incomplete_reason(data)
        img = None if reason else mmcv.imfrombytes(data, flag=flag, backend=backend)
        if img is None and not reason:
            reason = 'not a readable image'
    except Exception as exc:  # noqa: BLE001 - returned with the reason, re-raised by callers
        return None, f'{type(exc).__name__}: {exc}'
    return img, reason


class _TakesDataSetSettings:
    """The settings (``DATASET_SETTINGS``) a data set gives a checked loader of its pipeline
    when the pipeline leaves them unset."""
    DATASET_SETTINGS: tuple[str, ...] = ()

    def fill_unset(self, **settings) -> None:
        """Take the data set's ``settings`` for those of ``DATASET_SETTINGS`` that are unset
        (None or '') here; values set in the pipeline are kept, other keys ignored."""
        for key in self.DATASET_SETTINGS:
            if getattr(self, key) in (None, '') and key in settings:
                setattr(self, key, settings[key])


@TRANSFORMS.register_module()
class LoadCheckedImageFromFile(_TakesDataSetSettings, LoadImageFromFile):
    """``LoadImageFromFile`` that names the file (and data set) when it cannot be read, and
    refuses truncated PNG/JPEG files that OpenCV would decode partly.

    Args:
        dataset_name: named in the errors (unset: the data set's, see ``fill_unset``).
        **kwargs: as for mmcv's ``LoadImageFromFile``.
    """
    DATASET_SETTINGS = ('dataset_name', )

    def __init__(self, dataset_name: str = '', **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset_name = dataset_name

    def transform(self, results: dict) -> dict | None:
        filename = results['img_path']
        img, reason = read_image_checked(filename, self.backend_args, self.color_type,
                                         self.imdecode_backend)
        if reason:
            if self.ignore_empty:
                return None
            raise DataFileError(f'{_where(self.dataset_name)}cannot read image {filename}: '
                                f'{reason}')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


def _some(values) -> str:
    values = [int(v) for v in values]
    return ', '.join(map(str, values[:10])) + (f', ... ({len(values)} values)'
                                               if len(values) > 10 else '')


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(_TakesDataSetSettings, LoadAnnotations):
    """mmseg's ``LoadAnnotations`` with checks of what it loads.

    * an unreadable or truncated label file is an error naming it (and the data set);
    * a label of another size than its image (``ori_shape``, so it must come after the image
      is loaded) is an error naming both files and both sizes;
    * a colour (multi-channel) label is an error;
    * values that are neither a class id (``0 .. num_classes - 1``, after ``label_map`` /
      ``reduce_zero_label``) nor ``ignore_index`` are an error naming the file and the values
      (``invalid_labels='ignore'`` maps them to ``ignore_index`` instead); a 16-bit label with
      values >= 256 is never wrapped modulo 256.

    Settings left unset (None / '') are the data set's (``fill_unset``, called by the
    street-scene data sets), else the defaults in brackets.

    Args:
        num_classes: number of classes (None: no value check).
        ignore_index: the ignore label (255).
        invalid_labels: ``'error'`` or ``'ignore'`` (``'error'``).
        dataset_name: named in the errors.
        **kwargs: as for mmseg's ``LoadAnnotations``.
    """
    DATASET_SETTINGS = ('dataset_name', 'num_classes', 'ignore_index', 'invalid_labels')

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None,
                 invalid_labels: str | None = None, dataset_name: str = '', **kwargs) -> None:
        super().__init__(**kwargs)
        if invalid_labels not in (None, ) + INVALID_LABEL_MODES:
            raise ValueError(f'invalid_labels must be one of {INVALID_LABEL_MODES}, got '
                             f'{invalid_labels!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.invalid_labels = invalid_labels
        self.dataset_name = dataset_name

    @property
    def _ignore(self) -> int:
        return 255 if self.ignore_index is None else self.ignore_index

    @property
    def _refuse_invalid(self) -> bool:
        return (self.invalid_labels or 'error') == 'error'

    def _fail(self, path: str, what: str):
        raise DataFileError(f'{_where(self.dataset_name)}label {path}: {what}')

    def _decode(self, path: str) -> np.ndarray:
        raw, reason = read_image_checked(path, self.backend_args, 'unchanged',
                                         self.imdecode_backend)
        if reason:
            raise DataFileError(f'{_where(self.dataset_name)}cannot read label {path}: {reason}')
        return raw.squeeze()

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        raw = self._decode(path)
        if raw.ndim != 2:
            self._fail(path, f'expected one channel of class ids, got an image of shape '
                             f'{raw.shape} (a colour ground truth?)')
        ori = results.get('ori_shape')
        if ori is not None and tuple(raw.shape[:2]) != tuple(ori[:2]):
            self._fail(path, f'its size {raw.shape[1]}x{raw.shape[0]} (WxH) differs from its '
                             f'image {results.get("img_path")} ({ori[1]}x{ori[0]})')
        ignore = self._ignore
        if raw.dtype != np.uint8:
            dtype, raw = raw.dtype, raw.astype(np.int64)
            wide = (raw > 255) | (raw < 0)
            if wide.any():
                if self._refuse_invalid:
                    self._fail(path, f'values outside 0-255 in a {dtype} label: '
                                     f'{_some(np.unique(raw[wide]))} ({int(wide.sum())} pixels; '
                                     'not wrapped modulo 256)' + self._hint())
                raw[wide] = ignore
        seg = raw.astype(np.uint8)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        assert self.reduce_zero_label == results['reduce_zero_label'], \
            'Initialize dataset with `reduce_zero_label` as ' \
            f'{results["reduce_zero_label"]} but when load annotation ' \
            f'the `reduce_zero_label` is {self.reduce_zero_label}'
        if self.reduce_zero_label:
            seg[seg == 0] = 255
            seg = seg - 1
            seg[seg == 254] = 255
        if results.get('label_map', None) is not None:
            orig = seg.copy()
            for old_id, new_id in results['label_map'].items():
                seg[orig == old_id] = new_id
        if self.num_classes is not None:
            counts = np.bincount(seg.ravel(), minlength=256)
            counts[:self.num_classes] = 0
            if 0 <= ignore < 256:
                counts[ignore] = 0
            bad = np.flatnonzero(counts)
            if len(bad):
                if self._refuse_invalid:
                    self._fail(path, f'value{"s" if len(bad) > 1 else ""} {_some(bad)} '
                                     f'{"are" if len(bad) > 1 else "is"} neither a class id (0-'
                                     f'{self.num_classes - 1}) nor the ignore index {ignore} '
                                     f'({int(counts.sum())} pixels)' + self._hint())
                lut = np.arange(256, dtype=np.uint8)
                lut[bad] = ignore
                seg = lut[seg]
        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')

    def _hint(self) -> str:
        return ('. Fix the file, or set invalid_labels=\'ignore\' on the data set to treat such '
                'pixels as ignored')

    def __repr__(self) -> str:
        return (f'{super().__repr__()[:-1]}, num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, invalid_labels={self.invalid_labels!r}, '
                f'dataset_name={self.dataset_name!r})')


#: the checked loader (type name) that replaces each mmcv / mmseg loader in a pipeline
CHECKED_LOADERS = {'LoadImageFromFile': 'LoadCheckedImageFromFile',
                   'LoadAnnotations': 'LoadCheckedAnnotations'}


def fill_checked_loaders(pipeline, **settings) -> list[str]:
    """Give the checked loaders of a built pipeline (``Compose``) the data set's ``settings``
    where they leave them unset (their ``fill_unset``). Returns the type names of the plain
    (unchecked) mmcv / mmseg loaders in the pipeline (keys of ``CHECKED_LOADERS``)."""
    plain = []
    for t in getattr(pipeline, 'transforms', []):
        if isinstance(t, _TakesDataSetSettings):
            t.fill_unset(**settings)
        elif type(t) in (LoadImageFromFile, LoadAnnotations):
            plain.append(type(t).__name__)
    return plain

"""Common base of the 19-class street-scene data sets: shared metainfo, default layouts and a
clear error when the data (or its converted labels) is missing."""
from __future__ import annotations

import logging
import os.path as osp

from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset

from .label_maps import CITYSCAPES_METAINFO
from .transforms import CHECKED_LOADERS, INVALID_LABEL_MODES, fill_checked_loaders

_WARNED_UNCHECKED: set[tuple[str, str]] = set()  # (data set, loader) pairs warned about


def _warn_unchecked_once(dataset_name: str, loader: str) -> None:
    """Log once per data set name and loader that ``loader`` in its pipeline checks nothing."""
    if (dataset_name, loader) in _WARNED_UNCHECKED:
        return
    _WARNED_UNCHECKED.add((dataset_name, loader))
    print_log(f"{dataset_name}: its pipeline loads with {loader}, which does not check the "
              f"files; name dict(type='{CHECKED_LOADERS[loader]}') in the data set's pipeline "
              'to stop at unreadable, truncated or mis-sized files and invalid label values',
              logger='current', level=logging.WARNING)


class StreetSceneDataset(BaseSegDataset):
    """A :class:`~mmseg.datasets.BaseSegDataset` with the Cityscapes classes and palette.

    Subclasses set the on-disk layout of the public release:

    * ``DEFAULT_PREFIX``: ``data_prefix`` used when none is given, with ``{split}`` replaced by
      the ``split`` argument (after ``SPLIT_NAMES`` mapping, e.g. ``val`` -> ``validation``);
    * ``DOMAIN``: the default domain name (``domain`` argument), stored as ``domain`` in every
      data info (add ``'domain'`` to ``PackSegInputs.meta_keys`` to carry it further; the
      multi-domain evaluation uses :class:`MultiDomainDataset` instead);
    * ``CONVERTER``: the command that makes the train-ID labels, named in the error raised when
      the image folder is missing/empty or label files are missing.

    Loading is checked when the pipeline names the checked loaders, as the shipped configs do:
    ``dict(type='LoadCheckedImageFromFile')`` and ``dict(type='LoadCheckedAnnotations')``
    (:mod:`mfuser.datasets.transforms`) load the same arrays as mmcv's ``LoadImageFromFile`` /
    mmseg's ``LoadAnnotations`` but stop with an error naming the data set and the file(s) for
    an unreadable or truncated file, a label whose size differs from its image's, and label
    values that are neither class ids nor ``ignore_index`` (16-bit values >= 256 included).
    The data set gives them the settings they leave unset: its name, the number of classes,
    ``ignore_index`` and ``invalid_labels``. A plain ``LoadImageFromFile`` / ``LoadAnnotations``
    in ``pipeline`` runs as it is, unchecked, and is named in a warning (once per data set
    name and loader) with the checked loader to put in the data set's ``pipeline`` instead.

    Args:
        split: which split's default layout to use (ignored when ``data_prefix`` is given).
        domain: domain name for evaluation/logging (default: ``DOMAIN``).
        data_prefix: overrides the default layout (relative to ``data_root``).
        invalid_labels: ``'error'`` (default) stops at a label value outside the classes and
            the ignore index; ``'ignore'`` maps such pixels to ``ignore_index``.
        **kwargs: everything :class:`BaseSegDataset` takes (``data_root``, ``pipeline``,
            ``img_suffix``, ``seg_map_suffix``, ``ann_file``, ``indices``, ...).
    """
    METAINFO = CITYSCAPES_METAINFO
    DOMAIN = ''
    NAME = ''
    DEFAULT_ROOT = ''
    DEFAULT_PREFIX: dict = dict(img_path='', seg_map_path='')
    SPLIT_NAMES: dict = {}
    CONVERTER: str | None = None

    def __init__(self, split: str = 'val', domain: str | None = None,
                 data_prefix: dict | None = None, invalid_labels: str = 'error',
                 **kwargs) -> None:
        if invalid_labels not in INVALID_LABEL_MODES:
            raise ValueError(f'{type(self).__name__}: invalid_labels must be one of '
                             f'{INVALID_LABEL_MODES}, got {invalid_labels!r}')
        self.split = split
        self.domain = domain or self.DOMAIN
        self.invalid_labels = invalid_labels
        if data_prefix is None:
            s = self.SPLIT_NAMES.get(split, split)
            data_prefix = {k: v.format(split=s) for k, v in self.DEFAULT_PREFIX.items()}
        super().__init__(data_prefix=data_prefix, **kwargs)
        name = self.NAME or type(self).__name__
        plain = fill_checked_loaders(self.pipeline, dataset_name=name,
                                     num_classes=len(self.metainfo['classes']),
                                     ignore_index=self.ignore_index,
                                     invalid_labels=invalid_labels)
        for loader in plain:
            _warn_unchecked_once(name, loader)

    def _converter_args(self) -> str:
        """Extra converter arguments this data set's layout needs (e.g. `` --half-res``)."""
        return ''

    def _hint(self) -> str:
        root = self.data_root or self.DEFAULT_ROOT
        msg = (f' Put the {self.NAME} data set (or a symlink to it) at {root!r} with the layout '
               'described in data/README.md')
        if self.CONVERTER:
            msg += (f', then run `{self.CONVERTER} {root}{self._converter_args()}` to create '
                    'the train-ID labels')
        return msg + '.'

    def load_data_list(self) -> list[dict]:
        remote = self.backend_args is not None
        img_dir = self.data_prefix.get('img_path', '')
        if not remote and not self.ann_file and not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{self.NAME} image folder {img_dir!r} does not exist.' + self._hint())
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(
                f'{self.NAME}: no images matching *{self.img_suffix} under {img_dir!r}.'
                + self._hint())
        if not remote:
            missing = [d['seg_map_path'] for d in data_list
                       if 'seg_map_path' in d and not osp.isfile(d['seg_map_path'])]
            if missing:
                raise FileNotFoundError(
                    f'{self.NAME}: {len(missing)} of {len(data_list)} label files are missing, '
                    f'e.g. {missing[0]!r} (expected suffix {self.seg_map_suffix!r}).'
                    + self._hint())
        for d in data_list:
            d['domain'] = self.domain
        return data_list

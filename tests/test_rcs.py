"""Rare-class sampling: temperature formula, empirical frequencies, crops, seed, cache."""
import json

import numpy as np
import pytest

from mfuser.datasets.rare_class_sampling import rcs_class_probabilities


def test_formula():
    counts = np.array([700, 200, 100, 0], float)
    for t in (0.01, 0.1, 1.0):
        p = rcs_class_probabilities(counts, t)
        f = counts[:3] / counts[:3].sum()
        e = np.exp((1 - f) / t)
        assert np.allclose(p[:3], e / e.sum()) and p[3] == 0
    # lower temperature -> more mass on the rarest class
    assert rcs_class_probabilities(counts, 0.01)[2] > rcs_class_probabilities(counts, 1.0)[2]
    with pytest.raises(ValueError):
        rcs_class_probabilities(counts, 0)


class _ToyDataset:
    """Minimal data set: label files on disk; __getitem__ returns a packed-like crop."""

    def __init__(self, paths, crop=None, rng=None):
        self.paths, self.crop, self.rng = paths, crop, rng or np.random.default_rng(0)
        self.metainfo = dict(classes=('a', 'b', 'c', 'd'))
        self.data_root = None
        self.calls = 0

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, i):
        return dict(seg_map_path=self.paths[i])

    def __getitem__(self, i):
        import torch
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        from PIL import Image
        self.calls += 1
        lab = np.asarray(Image.open(self.paths[i]))
        if self.crop:
            x = self.rng.integers(0, lab.shape[1] - self.crop + 1)
            lab = lab[:, x:x + self.crop]
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.from_numpy(lab.copy())[None])
        s.set_metainfo(dict(index=i))
        return dict(inputs=None, data_samples=s)


@pytest.fixture
def label_files(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        lab = np.zeros((10, 40), np.uint8)  # class 0 everywhere
        if i % 2 == 0:
            lab[:, :20] = 1  # class 1 in half the images, 200 px
        if i == 5:
            lab[:3, 30:35] = 2  # class 2: rare, 15 px, one image
        lab[0, 0] = 255
        lab[rng.random(lab.shape) < 0.01] = 255
        p = tmp_path / f'{i}.png'
        Image.fromarray(lab).save(p)
        paths.append(str(p))
    return paths


def test_frequencies_follow_temperature(label_files, tmp_path):
    from mfuser.datasets import RareClassSampledDataset
    ds = RareClassSampledDataset(_ToyDataset(label_files), min_pixels=10, temperature=0.5,
                                 min_crop_ratio=0, seed=3, cache_file=str(tmp_path / 'c.json'))
    counts = np.zeros(4)
    for p in label_files:
        from PIL import Image
        counts += np.bincount(np.asarray(Image.open(p)).ravel(), minlength=256)[:4]
    exp = rcs_class_probabilities(counts, 0.5)
    assert list(ds.classes) == [0, 1, 2]
    assert np.allclose(ds.class_probs, exp[:3] / exp[:3].sum())
    draws = [ds.choose() for _ in range(3000)]
    emp = np.bincount([c for c, _ in draws], minlength=3)[:3] / len(draws)
    assert np.allclose(emp, ds.class_probs, atol=0.03)
    # each drawn image holds more than min_pixels of the drawn class
    for c, i in draws[:200]:
        assert ds.class_stats[i, c] > 10
    assert all(i == 5 for c, i in draws if c == 2)
    # the cache was written and is reused
    data = json.loads((tmp_path / 'c.json').read_text())
    assert data['files'] == label_files and np.array_equal(data['counts'], ds.class_stats)


def test_seeded_and_recrops_until_class_present(label_files, tmp_path):
    from mfuser.datasets import RareClassSampledDataset
    kw = dict(min_pixels=10, temperature=0.01, seed=7, cache_file=str(tmp_path / 'c.json'))
    # a temperature that leaves several classes/images in play, so the seed matters
    kw_mixed = dict(kw, temperature=0.5)
    a = RareClassSampledDataset(_ToyDataset(label_files), min_crop_ratio=0, **kw_mixed)
    b = RareClassSampledDataset(_ToyDataset(label_files), min_crop_ratio=0, **kw_mixed)
    c = RareClassSampledDataset(_ToyDataset(label_files), min_crop_ratio=0,
                                **dict(kw_mixed, seed=8))
    sa, sb, sc = ([x.choose() for _ in range(50)] for x in (a, b, c))
    assert sa == sb and sa != sc
    # with re-cropping, an 8-px wide crop must contain >= 10 * 0.5 px of the sampled class
    toy = _ToyDataset(label_files, crop=8, rng=np.random.default_rng(1))
    d = RareClassSampledDataset(toy, min_crop_ratio=0.5, max_retries=50, **kw)
    for _ in range(30):
        out = d[0]
        seg = out['data_samples'].gt_sem_seg.data
        cls, _ = d.last_choice
        assert int((seg == cls).sum()) > 5


def test_min_pixels_is_strict(label_files, tmp_path):
    """The release (DAFormer's RCS) keeps an image for class c only when pixels > min_pixels."""
    from PIL import Image

    from mfuser.datasets import RareClassSampledDataset
    rare = int((np.asarray(Image.open(label_files[5])) == 2).sum())
    kw = dict(min_crop_ratio=0, seed=0, temperature=100)
    below = RareClassSampledDataset(_ToyDataset(label_files), min_pixels=rare - 1,
                                    cache_file=str(tmp_path / 'a.json'), **kw)
    assert 2 in list(below.classes)
    at = RareClassSampledDataset(_ToyDataset(label_files), min_pixels=rare,
                                 cache_file=str(tmp_path / 'b.json'), **kw)
    assert 2 not in list(at.classes)  # exactly min_pixels pixels: not eligible

"""The synthetic street-scene generator: determinism, layout, class coverage, domain styles."""
import numpy as np
import pytest

from mfuser_tools import synthetic as S


def test_deterministic_by_seed():
    a = S.render_sample('cityscapes', 'val', 3, seed=1, size=(96, 48))
    b = S.render_sample('cityscapes', 'val', 3, seed=1, size=(96, 48))
    c = S.render_sample('cityscapes', 'val', 3, seed=2, size=(96, 48))
    assert np.array_equal(a['img'], b['img']) and np.array_equal(a['fine'], b['fine'])
    assert a['img_path'] == b['img_path']
    assert not np.array_equal(a['fine'], c['fine'])


def test_sizes_and_formats():
    for d in S.DOMAINS:
        s = S.render_sample(d, S.SPLITS[d][-1], 0, size=(128, 64))
        h = 96 if d == 'mapillary' else 64
        assert s['img'].shape == (h, 128, 3) and s['img'].dtype == np.uint8
        assert s['fine'].shape == s['train_ids'].shape == s['source'].shape == (h, 128)
        assert s['source'].dtype == (np.uint16 if d == 'synthia' else np.uint8)


def test_plausible_layout_and_class_coverage():
    seen = set()
    sky_top, road_bottom = [], []
    for i in range(40):
        s = S.render_sample('gta', 'train', i, size=(128, 64))
        t = s['train_ids']
        seen |= set(np.unique(t).tolist())
        sky_top.append((t[:8] == S.SKY).mean() + (t[:8] == S.BUILDING).mean()
                       + (t[:8] == S.VEGETATION).mean())
        road_bottom.append((t[-8:] == S.ROAD).mean())
        # sky is never below the lowest road pixel
        rows_sky = np.flatnonzero((t == S.SKY).any(1))
        rows_road = np.flatnonzero((t == S.ROAD).any(1))
        assert rows_sky.max() < rows_road.max()
    assert np.mean(sky_top) > 0.8
    assert np.mean(road_bottom) > 0.3
    assert set(range(19)) <= seen, f'missing classes {set(range(19)) - seen}'


def test_synthia_has_16_classes_and_ignores_lane_markings():
    seen = set()
    for i in range(25):
        s = S.render_sample('synthia', 'train', i, size=(128, 64))
        seen |= set(np.unique(s['train_ids']).tolist())
        lane = s['fine'] == S.LANE
        assert (s['train_ids'][lane] == 255).all()
        assert (s['source'][lane] == 22).all()
    assert not seen & {S.TERRAIN, S.TRUCK, S.TRAIN}


@pytest.mark.parametrize('domain', ['cityscapes', 'bdd100k', 'mapillary'])
def test_domains_differ_by_style_not_layout(domain):
    """Same rng -> same scene; the style changes the pixels, not the labels."""
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    canon, fine = S.render_scene(rng_a, 64, 128)
    canon_b, fine_b = S.render_scene(rng_b, 64, 128)
    assert np.array_equal(fine, fine_b)
    src = S.apply_style(canon, S.STYLES['gta'], np.random.default_rng(0)).astype(float)
    tgt = S.apply_style(canon, S.STYLES[domain], np.random.default_rng(0)).astype(float)
    assert np.abs(src - tgt).mean() > 5
    # class appearance stays consistent: per-class mean colours correlate across domains
    means = [(src[fine == c].mean(0), tgt[fine == c].mean(0)) for c in np.unique(fine)]
    a, b = np.stack([m[0] for m in means]).ravel(), np.stack([m[1] for m in means]).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.6


def test_generate_writes_raw_layouts(tmp_path):
    counts = S.generate(str(tmp_path), ['gta', 'cityscapes', 'bdd100k', 'mapillary'],
                        num_train=2, num_val=1, size=(64, 32), verbose=False)
    assert counts['cityscapes'] == {'train': 2, 'val': 1}
    assert len(list((tmp_path / 'gta' / 'images').glob('*.png'))) == 2
    assert len(list((tmp_path / 'gta' / 'labels').glob('*.png'))) == 2
    assert len(list((tmp_path / 'cityscapes' / 'gtFine' / 'val').rglob(
        '*_gtFine_labelIds.png'))) == 1
    assert len(list((tmp_path / 'bdd100k' / 'images' / '10k' / 'train').glob('*.jpg'))) == 2
    assert len(list((tmp_path / 'mapillary' / 'validation' / 'v1.2' / 'labels').glob(
        '*.png'))) == 1
    from PIL import Image
    lab = Image.open(next((tmp_path / 'gta' / 'labels').glob('*.png')))
    assert lab.mode == 'P'  # GTAV ships paletted label-ID PNGs

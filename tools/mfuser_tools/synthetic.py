"""Synthetic street scenes in several visual domains, written in the raw formats of real data sets.

Real driving data cannot be downloaded here, so tests and the demo use small generated scenes:
sky above a horizon, a road converging to a vanishing point, sidewalks with curbs, terrain,
building facades with windows, walls, fences, trees, poles with signs and traffic lights,
cars/trucks/buses (sometimes a tram), persons, riders on motorcycles/bicycles and, sometimes,
the ego vehicle's bonnet. Every class keeps its appearance (colour family, texture, shape)
across domains; domains differ only by a global *style* (tone, brightness, saturation, noise,
blur), so a model trained on one domain transfers, imperfectly, to the others:

* ``gta``: saturated, contrasty, warm ("game"); GTAV format: ``images/*.png``,
  ``labels/*.png`` (P mode, Cityscapes label IDs).
* ``cityscapes``: grey, overcast, hazy, slightly blurred; ``leftImg8bit/{split}/{city}/
  *_leftImg8bit.png`` and ``gtFine/{split}/{city}/*_gtFine_labelIds.png``.
* ``bdd100k``: dark dusk, blue cast, sensor noise; ``images/10k/{split}/*.jpg`` and
  ``labels/sem_seg/masks/{split}/*.png`` (train IDs).
* ``mapillary``: bright, per-image varied tint, 4:3 frames; ``{training,validation}/images/
  *.jpg`` and ``.../v1.2/labels/*.png`` (P mode, 66 classes).
* ``synthia``: rendered, cool, crisp, no terrain/trucks/trains (as in SYNTHIA);
  ``RGB/*.png`` and ``GT/LABELS/*.png`` (16-bit RGB, class ID in the R channel).

Scenes are drawn in an internal label space ``fine`` (0-18 = Cityscapes train IDs, plus lane
markings, curbs and void kinds) and encoded into each format's source IDs with hand-written
tables; :func:`expected_train_ids` gives what a correct converter must produce. Everything is
deterministic in ``(seed, domain, split, index)``.
"""
from __future__ import annotations

import os
import os.path as osp
from dataclasses import dataclass

import numpy as np

from mfuser.datasets.label_maps import IGNORE_INDEX

# ----------------------------------------------------------------------------- label space
LANE, CURB, VOID_UNLABELED, VOID_EGO, VOID_STATIC = 19, 20, 21, 22, 23
NUM_FINE = 24
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)

#: fine code -> source label ID, per raw format (independent of the converters' tables).
SOURCE_IDS = {
    # Cityscapes label IDs (GTAV uses the same): lane marking is road, curb is sidewalk,
    # then unlabeled 0, ego vehicle 1, static 4.
    'cityscapes': [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
                   7, 8, 0, 1, 4],
    # Mapillary v1.2: marking--general 24, curb 2, unlabeled 65, ego vehicle 64, trash can 51.
    'mapillary': [13, 15, 17, 6, 3, 45, 48, 50, 30, 29, 27, 19, 20, 55, 61, 54, 58, 57, 52,
                  24, 2, 65, 64, 51],
    # BDD100K masks are train IDs already.
    'bdd100k': list(range(19)) + [0, 1, 255, 255, 255],
    # SYNTHIA: lane-marking 22 (ignored by the standard mapping), curb drawn as sidewalk 4,
    # voids 0.
    'synthia': [3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11,
                22, 4, 0, 0, 0],
}
SOURCE_IDS['gta'] = SOURCE_IDS['cityscapes']
_EXPECTED = {
    fmt: np.array(list(range(19)) + [IGNORE_INDEX if fmt == 'synthia' else 0, 1,
                                     IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX], np.uint8)
    for fmt in SOURCE_IDS}

DOMAINS = ('gta', 'cityscapes', 'bdd100k', 'mapillary', 'synthia')


def encode_source_ids(fine: np.ndarray, fmt: str) -> np.ndarray:
    """Fine label codes -> the raw source IDs of ``fmt`` (uint16 for synthia, else uint8)."""
    table = np.asarray(SOURCE_IDS[fmt], np.uint16 if fmt == 'synthia' else np.uint8)
    return table[fine]


def expected_train_ids(fine: np.ndarray, fmt: str) -> np.ndarray:
    """The 19-class train IDs (255 = ignore) a correct converter produces for ``fmt``."""
    return _EXPECTED[fmt][fine]


# ----------------------------------------------------------------------------- styles
@dataclass(frozen=True)
class DomainStyle:
    """A global photometric style, applied to a canonical rendering in [0, 1]."""
    saturation: float = 1.0
    contrast: float = 1.0
    brightness: float = 1.0
    gamma: float = 1.0
    tint: tuple = (1.0, 1.0, 1.0)
    haze: float = 0.0  # blend towards grey
    noise: float = 0.0  # Gaussian sensor noise (std, [0, 1] units)
    blur: int = 0  # passes of a [1, 2, 1] / 4 filter
    tint_jitter: float = 0.0  # per-image random colour cast
    jitter: float = 0.05  # per-image brightness/contrast jitter


STYLES = {
    'gta': DomainStyle(saturation=1.5, contrast=1.2, brightness=1.05, gamma=0.95,
                       tint=(1.06, 1.0, 0.9), noise=0.004),
    'cityscapes': DomainStyle(saturation=0.5, contrast=0.85, brightness=0.95,
                              tint=(0.97, 1.0, 1.03), haze=0.15, noise=0.012, blur=1),
    'bdd100k': DomainStyle(saturation=0.75, contrast=0.9, brightness=0.8, gamma=1.1,
                           tint=(0.93, 0.97, 1.08), noise=0.015, blur=1),
    'mapillary': DomainStyle(saturation=1.15, contrast=1.05, brightness=1.15, gamma=0.9,
                             tint_jitter=0.08, noise=0.008, jitter=0.1),
    'synthia': DomainStyle(saturation=1.2, contrast=1.3, tint=(0.95, 1.0, 1.08)),
}


def _smooth(a: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur over the first two axes, ``passes`` times (edge padded)."""
    for _ in range(passes):
        p = np.pad(a, [(1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 2), mode='edge')
        a = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
        a = (a[:, :-2] + 2 * a[:, 1:-1] + a[:, 2:]) / 4
    return a


def apply_style(img: np.ndarray, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """Canonical float image (H, W, 3) in [0, 1] -> styled uint8 image."""
    x = img.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * style.saturation
    j = 1 + rng.uniform(-style.jitter, style.jitter, size=2)
    x = (x - 0.5) * style.contrast * j[0] + 0.5
    tint = np.asarray(style.tint, np.float32)
    if style.tint_jitter:
        tint = tint * (1 + rng.uniform(-style.tint_jitter, style.tint_jitter, size=3))
    x = x * tint * style.brightness * j[1]
    x = np.clip(x, 0, 1) ** style.gamma
    if style.haze:
        x = x * (1 - style.haze) + style.haze * 0.7
    if style.blur:
        x = _smooth(x, style.blur)
    if style.noise:
        x = x + rng.normal(0, style.noise, size=x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- scene
class _Canvas:
    """Label map + canonical colour image, painted back to front."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng, self.h, self.w = rng, height, width
        self.fine = np.full((height, width), VOID_UNLABELED, np.uint8)
        self.img = np.zeros((height, width, 3), np.float32)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.fine_noise = rng.normal(0, 1, (height, width)).astype(np.float32)
        self.blotch = _smooth(rng.normal(0, 1, (height, width)).astype(np.float32), 3) * 2.5

    def paint(self, mask: np.ndarray, code: int, colour, texture: float = 0.03,
              blotch: float = 0.0) -> None:
        """Label ``mask`` as ``code`` and colour it (RGB in [0, 255]) with noise texture."""
        if not mask.any():
            return
        col = np.asarray(colour, np.float32) / 255.0
        shade = 1 + texture * self.fine_noise[mask] + blotch * self.blotch[mask]
        self.fine[mask] = code
        self.img[mask] = np.clip(col[None] * shade[:, None], 0, 1)

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx, cy, rx, ry, wobble: float = 0.0) -> np.ndarray:
        d = ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2
        return d < 1 + wobble * self.blotch


def _jitter(rng, colour, amount=12):
    return np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0, 255)


FACADES = [(200, 180, 150), (150, 140, 130), (170, 110, 90), (210, 200, 180), (120, 115, 110)]
CAR_COLOURS = [(180, 30, 30), (30, 60, 160), (190, 190, 195), (30, 30, 35), (235, 235, 235),
               (40, 110, 60)]
CLOTHES = [(40, 40, 60), (150, 30, 40), (60, 60, 60), (30, 80, 140), (120, 90, 60)]
SKIN = (225, 180, 150)


def render_scene(rng: np.random.Generator, height: int = 128, width: int = 256,
                 exclude: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene.

    Args:
        rng: the random generator (the scene is a pure function of its state).
        height, width: output size in pixels.
        exclude: train IDs that must not appear (e.g. SYNTHIA has no terrain, truck, train).

    Returns:
        ``(image, fine)``: canonical (unstyled) float32 image (H, W, 3) in [0, 1] and the
        uint8 fine label map (H, W) with codes 0-23 (0-18 = train IDs).
    """
    c = _Canvas(rng, height, width)
    H, W, xx, yy = height, width, c.xx, c.yy
    hor = H * rng.uniform(0.38, 0.5)
    vx = W * rng.uniform(0.38, 0.62)
    # sky: vertical gradient, faint clouds
    top, low = np.array([110, 160, 225]), np.array([185, 210, 235])
    sky = yy < hor
    c.paint(sky, SKY, (0, 0, 0))
    g = np.clip(yy / max(hor, 1), 0, 1)[..., None]
    c.img[sky] = ((top + (low - top) * g) / 255.0)[sky] + 0.05 * np.clip(c.blotch, 0, 2)[sky, None]

    # buildings along both sides, lower towards the vanishing point
    for side in (-1, 1):
        x = vx + side * W * rng.uniform(0.02, 0.06)
        end = 0 if side < 0 else W
        while (x - end) * side < 0:
            bw = W * rng.uniform(0.07, 0.22)
            x0, x1 = sorted((x, x + side * bw))
            if rng.random() < 0.82:
                d = min(abs((x0 + x1) / 2 - vx) / (W / 2), 1.0)
                bh = H * rng.uniform(0.12, 0.4) * (0.35 + 0.9 * d)
                m = c.rect(x0, hor - bh, x1, hor + 2)
                c.paint(m, BUILDING, _jitter(rng, FACADES[rng.integers(len(FACADES))]), 0.04)
                wx, wy = rng.uniform(4, 9) * (0.4 + d), rng.uniform(5, 10) * (0.4 + d)
                win = m & ((xx - x0) % wx < wx * 0.5) & ((yy - hor + bh) % wy > wy * 0.45)
                win &= yy < hor - 2
                c.img[win] = np.array([60, 70, 85]) / 255.0 * (1 + 0.05 * c.fine_noise[win, None])
            x += side * bw

    # ground: terrain beyond the sidewalks, sidewalks with curbs, the road with a dashed line
    t = np.clip((yy - hor) / (H - hor), 0, 1)
    ground = yy >= hor
    xl_b, xr_b = W * rng.uniform(-0.35, 0.2), W * rng.uniform(0.8, 1.35)
    xl, xr = vx + (xl_b - vx) * t, vx + (xr_b - vx) * t
    swl, swr = W * rng.uniform(0.12, 0.35) * t, W * rng.uniform(0.12, 0.35) * t
    if TERRAIN in exclude:
        c.paint(ground, SIDEWALK, (165, 158, 150), 0.05)
    else:
        c.paint(ground, TERRAIN, _jitter(rng, (150, 175, 80)), 0.06, 0.05)
    side_l = ground & (xx >= xl - swl) & (xx < xl)
    side_r = ground & (xx > xr) & (xx <= xr + swr)
    tiles = 0.06 * (((xx // 6) + (yy // 3)) % 2)
    for m in (side_l, side_r):
        c.paint(m, SIDEWALK, _jitter(rng, (175, 165, 155), 8), 0.04)
        c.img[m] *= (1 - tiles[m])[:, None]
    curb_w = np.maximum(1.0, 0.025 * W * t)
    curb = ground & (((xx >= xl - curb_w) & (xx < xl)) | ((xx > xr) & (xx <= xr + curb_w)))
    c.paint(curb, CURB, (205, 205, 200), 0.03)
    road = ground & (xx >= xl) & (xx <= xr)
    c.paint(road, ROAD, _jitter(rng, (85, 85, 92), 6), 0.05, 0.02)
    xc = (xl + xr) / 2
    dash = ((3.0 / (t + 0.08)) % 1.0) < 0.5
    lane = road & (np.abs(xx - xc) < np.maximum(0.6, 0.012 * W * t)) & dash & (t > 0.04)
    c.paint(lane, LANE, (235, 235, 225), 0.02)

    # wall and fence segments at the back of the sidewalks
    for code, p in ((WALL, 0.55), (FENCE, 0.55)):
        if rng.random() > p:
            continue
        side = rng.choice([-1, 1])
        x0 = vx + side * W * rng.uniform(0.05, 0.2)
        x1 = x0 + side * W * rng.uniform(0.12, 0.35)
        x0, x1 = sorted((x0, x1))
        hgt = H * rng.uniform(0.05, 0.1)
        m = c.rect(x0, hor - hgt, x1, hor + H * 0.03)
        if code == WALL:
            c.paint(m, WALL, _jitter(rng, (175, 165, 140), 8), 0.05)
            mortar = m & (yy % 4 < 1)
            c.img[mortar] *= 0.8
        else:
            c.paint(m, FENCE, (150, 125, 90), 0.04)
            gaps = m & ((xx % 4) >= 2) & (yy > hor - hgt + 2)
            c.img[gaps] = np.array([75, 62, 45]) / 255.0

    def at_depth(tt):
        return hor + tt * (H - hor)

    def side_x(tt, s, frac):
        """x on the left (s=-1) or right sidewalk at depth tt, frac in [0, 1] across it."""
        if s < 0:
            e = vx + (xl_b - vx) * tt
            return e - frac * W * 0.2 * tt
        e = vx + (xr_b - vx) * tt
        return e + frac * W * 0.2 * tt

    # trees and hedges
    for _ in range(rng.integers(0, 4)):
        tt, s = rng.uniform(0.1, 0.6), rng.choice([-1, 1])
        bx, by = side_x(tt, s, 0.8), at_depth(tt)
        size = H * (0.12 + 0.6 * tt)
        tw = max(1.0, size * 0.07)
        c.paint(c.rect(bx - tw, by - size * 0.8, bx + tw, by), VEGETATION, (95, 70, 50), 0.05)
        m = c.ellipse(bx, by - size * 0.95, size * 0.45, size * 0.4, wobble=0.25)
        c.paint(m, VEGETATION, _jitter(rng, (60, 125, 45)), 0.1, 0.08)
    if rng.random() < 0.5:
        s = rng.choice([-1, 1])
        x0, x1 = sorted((vx + s * W * 0.03, vx + s * W * rng.uniform(0.15, 0.45)))
        m = c.rect(x0, hor - H * rng.uniform(0.03, 0.07), x1, hor + 1)
        m &= yy > hor - H * 0.07 + 2 * c.blotch
        c.paint(m, VEGETATION, _jitter(rng, (55, 115, 40)), 0.1, 0.08)

    # street furniture: poles with signs / traffic lights, static clutter (void)
    for _ in range(rng.integers(1, 5)):
        tt, s = rng.uniform(0.1, 0.9), rng.choice([-1, 1])
        bx, by = side_x(tt, s, 0.3), at_depth(tt)
        ph = H * (0.15 + 0.75 * tt)
        pw = max(1.0, 0.008 * W * (0.3 + tt))
        c.paint(c.rect(bx - pw / 2, by - ph, bx + pw / 2, by), POLE, (125, 125, 130), 0.03)
        r = rng.random()
        if r < 0.45:
            sz = max(2.0, pw * 3.5)
            col = [(220, 200, 40), (40, 80, 200), (230, 230, 230)][rng.integers(3)]
            c.paint(c.ellipse(bx, by - ph, sz, sz), SIGN, col, 0.02)
        elif r < 0.75:
            lw, lh = max(2.0, pw * 2.2), max(4.0, pw * 6)
            m = c.rect(bx - lw / 2, by - ph - lh, bx + lw / 2, by - ph)
            c.paint(m, LIGHT, (35, 35, 35), 0.03)
            k = rng.integers(3)
            lamp = m & (np.abs(yy - (by - ph - lh * (0.8 - 0.3 * k))) < lh * 0.12)
            c.img[lamp] = np.array([(230, 40, 30), (240, 190, 40), (60, 220, 90)][k]) / 255.0
    if rng.random() < 0.4:
        tt, s = rng.uniform(0.2, 0.8), rng.choice([-1, 1])
        bx, by = side_x(tt, s, 0.6), at_depth(tt)
        sz = H * 0.08 * (0.3 + tt)
        c.paint(c.rect(bx - sz / 2, by - sz, bx + sz / 2, by), VOID_STATIC, (60, 80, 60), 0.05)

    # a tram crossing at the horizon (rare)
    if TRAIN not in exclude and rng.random() < 0.15:
        x0 = W * rng.uniform(0.0, 0.4)
        x1 = x0 + W * rng.uniform(0.3, 0.6)
        m = c.rect(x0, hor - H * 0.13, x1, hor + H * 0.02)
        c.paint(m, TRAIN, _jitter(rng, (200, 120, 40)), 0.03)
        win = m & (yy > hor - H * 0.1) & (yy < hor - H * 0.05) & (xx % 7 < 4)
        c.img[win] = np.array([50, 60, 70]) / 255.0

    # road users, far to near
    users = []
    for _ in range(rng.integers(1, 6)):
        kinds = [CAR, CAR, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE]
        k = kinds[rng.integers(len(kinds))]
        if k in exclude:
            k = CAR
        users.append((rng.uniform(0.12, 0.9), k))
    for _ in range(rng.integers(0, 5)):
        users.append((rng.uniform(0.1, 1.0), PERSON))
    for tt, k in sorted(users):
        by = at_depth(tt)
        sc = 0.08 + 0.92 * tt
        if k == PERSON:
            bx = side_x(tt, rng.choice([-1, 1]), rng.uniform(0.1, 0.9))
            ph = H * 0.55 * sc
            bw = ph * 0.28
            c.paint(c.rect(bx - bw / 2, by - ph * 0.82, bx + bw / 2, by), PERSON,
                    _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))]), 0.04)
            c.paint(c.ellipse(bx, by - ph * 0.9, bw * 0.38, ph * 0.1), PERSON, SKIN, 0.03)
            continue
        xl_t, xr_t = vx + (xl_b - vx) * tt, vx + (xr_b - vx) * tt
        bx = rng.uniform(xl_t + (xr_t - xl_t) * 0.15, xr_t - (xr_t - xl_t) * 0.15)
        if k in (CAR, TRUCK, BUS):
            cw = W * sc * {CAR: 0.26, TRUCK: 0.3, BUS: 0.34}[k]
            ch = cw * {CAR: 0.55, TRUCK: 0.95, BUS: 0.75}[k]
            col = {CAR: CAR_COLOURS[rng.integers(len(CAR_COLOURS))],
                   TRUCK: (225, 225, 220), BUS: [(230, 190, 30), (200, 40, 40)][rng.integers(2)]}[k]
            col = _jitter(rng, col, 8)
            if k == CAR:
                c.paint(c.rect(bx - cw / 2, by - ch * 0.6, bx + cw / 2, by), k, col, 0.03)
                cab = c.rect(bx - cw * 0.33, by - ch, bx + cw * 0.33, by - ch * 0.6)
                c.paint(cab, k, col, 0.03)
                c.img[cab & (yy > by - ch * 0.93)] = np.array([45, 55, 70]) / 255.0
            else:
                body = c.rect(bx - cw / 2, by - ch, bx + cw / 2, by)
                c.paint(body, k, col, 0.03)
                band = (0.15, 0.45) if k == BUS else (0.05, 0.25)
                win = body & (yy > by - ch * (1 - band[0])) & (yy < by - ch * (1 - band[1]))
                if k == BUS:
                    win &= (xx - bx) % max(3.0, cw * 0.12) > 1
                else:
                    win &= np.abs(xx - bx) < cw * 0.35
                c.img[win] = np.array([45, 55, 70]) / 255.0
            for wxo in (-0.32, 0.32):  # wheels
                m = c.ellipse(bx + wxo * cw, by - ch * 0.02, cw * 0.1, ch * 0.1)
                c.paint(m, k, (20, 20, 20), 0.02)
        else:  # two-wheeler + rider
            bw, bh = W * sc * 0.1, W * sc * 0.07
            m = c.rect(bx - bw * 0.15, by - bh, bx + bw * 0.15, by)
            if k == MOTORCYCLE:
                m |= c.ellipse(bx, by - bh * 0.5, bw * 0.25, bh * 0.45)
                c.paint(m, k, (40, 40, 50), 0.04)
            else:
                m |= c.rect(bx - bw * 0.05, by - bh * 1.1, bx + bw * 0.05, by)
                c.paint(m, k, (40, 160, 160), 0.04)
            rh = bh * 1.6
            r = c.rect(bx - bw * 0.18, by - bh * 0.7 - rh, bx + bw * 0.18, by - bh * 0.7)
            c.paint(r, RIDER, _jitter(rng, (230, 110, 30)), 0.04)
            c.paint(c.ellipse(bx, by - bh * 0.7 - rh * 1.1, bw * 0.13, rh * 0.14), RIDER,
                    (240, 240, 240), 0.03)

    # ego vehicle bonnet
    if rng.random() < 0.3:
        depth = H * rng.uniform(0.05, 0.12)
        m = yy > H - depth + 0.25 * depth * ((xx - W / 2) / (W / 2)) ** 2
        c.paint(m, VOID_EGO, (30, 30, 35), 0.02)
    return c.img, c.fine


# ----------------------------------------------------------------------------- writers
_CITIES = {'train': ('aachen', 'bochum'), 'val': ('frankfurt', 'lindau')}


def _pil_save(arr: np.ndarray, path: str, palette: list | None = None, **kw) -> None:
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    im = Image.fromarray(arr)
    if palette is not None:
        im = im.convert('P') if im.mode != 'P' else im
        im.putpalette(palette)
    im.save(path, **kw)


def _paletted(ids: np.ndarray, path: str, colours: np.ndarray) -> None:
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode='P')
    pal = np.zeros((256, 3), np.uint8)
    pal[:len(colours)] = colours
    im.putpalette(pal.flatten().tolist())
    im.save(path)


def _cityscapes_colours() -> np.ndarray:
    """Colour per Cityscapes label ID (only for the P-mode palette of GTAV-style labels)."""
    pal = np.zeros((34, 3), np.uint8)
    for tid, lid in enumerate(SOURCE_IDS['cityscapes'][:19]):
        from mfuser.datasets.label_maps import CITYSCAPES_PALETTE
        pal[lid] = CITYSCAPES_PALETTE[tid]
    return pal


def _sample_paths(root: str, domain: str, split: str, index: int, rng) -> tuple[str, str]:
    """(image path, raw label path) for one sample in ``domain``'s on-disk layout."""
    if domain == 'gta':
        name = f'{index + 1:05d}'
        return osp.join(root, 'images', name + '.png'), osp.join(root, 'labels', name + '.png')
    if domain == 'synthia':
        name = f'{index:07d}'
        return osp.join(root, 'RGB', name + '.png'), osp.join(root, 'GT', 'LABELS', name + '.png')
    if domain == 'cityscapes':
        cities = _CITIES.get(split, (split,))
        city = cities[index % len(cities)]
        stem = f'{city}_{index // len(cities):06d}_000019'
        return (osp.join(root, 'leftImg8bit', split, city, stem + '_leftImg8bit.png'),
                osp.join(root, 'gtFine', split, city, stem + '_gtFine_labelIds.png'))
    if domain == 'bdd100k':
        h = rng.integers(0, 16, 16)
        name = ''.join(f'{v:x}' for v in h[:8]) + '-' + ''.join(f'{v:x}' for v in h[8:])
        return (osp.join(root, 'images', '10k', split, name + '.jpg'),
                osp.join(root, 'labels', 'sem_seg', 'masks', split, name + '.png'))
    if domain == 'mapillary':
        alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-'
        name = ''.join(alphabet[i] for i in rng.integers(0, len(alphabet), 22))
        folder = {'train': 'training', 'val': 'validation'}.get(split, split)
        return (osp.join(root, folder, 'images', name + '.jpg'),
                osp.join(root, folder, 'v1.2', 'labels', name + '.png'))
    raise ValueError(f'unknown domain {domain!r}; choose from {DOMAINS}')


SPLITS = {'gta': ('train',), 'synthia': ('train',), 'cityscapes': ('train', 'val'),
          'bdd100k': ('train', 'val'), 'mapillary': ('train', 'val')}


def sample_rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
    """The generator that fully determines sample ``index`` of ``domain``/``split``."""
    return np.random.default_rng([seed, DOMAINS.index(domain), ('train', 'val').index(split),
                                  index])


def render_sample(domain: str, split: str, index: int, seed: int = 0,
                  size: tuple[int, int] = (256, 128)) -> dict:
    """Render one sample of ``domain`` (no I/O).

    Args:
        size: (width, height) for all domains except ``mapillary``, which uses a 4:3 frame of
            the same width (like its varied, mostly 4:3 photos).

    Returns:
        dict with ``img`` (H, W, 3) uint8 RGB, ``fine`` (H, W) uint8 codes, ``source`` the raw
        label array in the domain's format, ``train_ids`` the expected converted labels and
        ``img_path`` / ``label_path`` relative to the domain root.
    """
    rng = sample_rng(seed, domain, split, index)
    w, h = size
    if domain == 'mapillary':
        h = int(round(w * 0.75))
    exclude = (TERRAIN, TRUCK, TRAIN) if domain == 'synthia' else ()
    canon, fine = render_scene(rng, h, w, exclude=exclude)
    img = apply_style(canon, STYLES[domain], rng)
    fmt = domain
    img_path, label_path = _sample_paths('', domain, split, index, rng)
    return dict(img=img, fine=fine, source=encode_source_ids(fine, fmt),
                train_ids=expected_train_ids(fine, fmt), img_path=img_path,
                label_path=label_path)


def write_sample(root: str, domain: str, split: str, index: int, seed: int = 0,
                 size: tuple[int, int] = (256, 128)) -> tuple[str, str]:
    """Render one sample and write image + raw label under ``root`` (the domain's root)."""
    s = render_sample(domain, split, index, seed, size)
    img_path, label_path = osp.join(root, s['img_path']), osp.join(root, s['label_path'])
    if img_path.endswith('.jpg'):
        _pil_save(s['img'], img_path, quality=95)
    else:
        _pil_save(s['img'], img_path)
    src = s['source']
    if domain == 'gta':
        _paletted(src, label_path, _cityscapes_colours())
    elif domain == 'mapillary':
        colours = np.stack([(np.arange(66) * 37) % 256, (np.arange(66) * 91) % 256,
                            (np.arange(66) * 151) % 256], 1)
        _paletted(src, label_path, colours)
    elif domain == 'synthia':
        import cv2
        os.makedirs(osp.dirname(label_path), exist_ok=True)
        rgb16 = np.stack([src, np.zeros_like(src), np.zeros_like(src)], -1).astype(np.uint16)
        if not cv2.imwrite(label_path, rgb16[..., ::-1]):  # cv2 writes BGR
            raise OSError(f'could not write {label_path}')
    else:  # cityscapes labelIds, bdd100k train-ID masks: 8-bit grey
        _pil_save(src.astype(np.uint8), label_path)
    return img_path, label_path


def _write_job(args):
    return write_sample(*args)


def generate(out: str, domains=DOMAINS, num_train: int = 100, num_val: int = 50,
             size: tuple[int, int] = (256, 128), seed: int = 0, nproc: int = 1,
             verbose: bool = True) -> dict:
    """Write synthetic data sets for ``domains`` under ``out/<domain>/`` in their raw formats.

    Source-only sets (``gta``, ``synthia``) get ``num_train`` images; the target sets
    (``cityscapes``, ``bdd100k``, ``mapillary``) get ``num_train`` train and ``num_val`` val
    images. Existing files are overwritten (generation is deterministic).

    Returns:
        ``{domain: {split: count}}``.
    """
    jobs, counts = [], {}
    for d in domains:
        if d not in DOMAINS:
            raise ValueError(f'unknown domain {d!r}; choose from {DOMAINS}')
        counts[d] = {}
        for split in SPLITS[d]:
            n = num_train if split == 'train' else num_val
            counts[d][split] = n
            jobs += [(osp.join(out, d), d, split, i, seed, tuple(size)) for i in range(n)]
    if nproc > 1 and len(jobs) > 1:
        from .converters import _mp_context
        with _mp_context().Pool(nproc) as pool:
            for _ in pool.imap_unordered(_write_job, jobs, chunksize=8):
                pass
    else:
        for j in jobs:
            _write_job(j)
    if verbose:
        for d, c in counts.items():
            print(f'[synthetic] {d:<10} -> {osp.join(out, d)}  '
                  + ', '.join(f'{k}: {v}' for k, v in c.items()))
    return counts

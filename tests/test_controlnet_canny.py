"""ldm.data.canny against an independent, deliberately plain reference (per-pixel loops, float tangents, a
breadth-first hysteresis) on synthetic shapes, plus geometric checks: edges lie on the shapes' outlines, a flat
image has none, higher thresholds keep a subset, blur removes noise edges. No MindSpore, no OpenCV."""
import math
from collections import deque

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ldm.data.canny import canny


def reference_canny(img, low, high):
    """Canny as OpenCV defines it (3x3 Sobel with replicated borders, |gx| + |gy|, colour: the channel of the
    largest magnitude, 4-sector NMS with 'above the one before, not below the one after', > low / > high,
    8-connected hysteresis), written pixel by pixel."""
    img = np.asarray(img, dtype=np.int64)
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape

    def px(y, x, ch):
        return img[min(max(y, 0), h - 1), min(max(x, 0), w - 1), ch]

    mag = np.zeros((h, w), dtype=np.int64)
    gxs = np.zeros((h, w), dtype=np.int64)
    gys = np.zeros((h, w), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            best = None
            for ch in range(c):
                gx = sum(k * (px(y + dy, x + 1, ch) - px(y + dy, x - 1, ch)) for dy, k in ((-1, 1), (0, 2), (1, 1)))
                gy = sum(k * (px(y + 1, x + dx, ch) - px(y - 1, x + dx, ch)) for dx, k in ((-1, 1), (0, 2), (1, 1)))
                m = abs(gx) + abs(gy)
                if best is None or m > best[0]:
                    best = (m, gx, gy)
            mag[y, x], gxs[y, x], gys[y, x] = best

    def m_at(y, x):
        return mag[y, x] if 0 <= y < h and 0 <= x < w else 0

    state = np.zeros((h, w), dtype=np.int8)          # 0 no, 1 candidate, 2 strong
    tan22, tan67 = math.tan(math.radians(22.5)), math.tan(math.radians(67.5))
    for y in range(h):
        for x in range(w):
            m, gx, gy = mag[y, x], gxs[y, x], gys[y, x]
            if m <= low:
                continue
            ax, ay = abs(gx), abs(gy)
            if ay < ax * tan22:
                peak = m > m_at(y, x - 1) and m >= m_at(y, x + 1)
            elif ay > ax * tan67:
                peak = m > m_at(y - 1, x) and m >= m_at(y + 1, x)
            elif gx * gy >= 0:
                peak = m > m_at(y - 1, x - 1) and m > m_at(y + 1, x + 1)
            else:
                peak = m > m_at(y - 1, x + 1) and m > m_at(y + 1, x - 1)
            if peak:
                state[y, x] = 2 if m > high else 1
    edges = np.zeros((h, w), dtype=bool)
    queue = deque(zip(*np.nonzero(state == 2)))
    for y, x in queue:
        edges[y, x] = True
    while queue:
        y, x = queue.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and state[yy, xx] and not edges[yy, xx]:
                    edges[yy, xx] = True
                    queue.append((yy, xx))
    return np.where(edges, 255, 0).astype(np.uint8)


def shapes(size=40, noise=0.0, seed=0, colour=True):
    """A filled circle, a rectangle and a triangle in different colours on a grey gradient."""
    img = Image.new("RGB", (size, size), (60, 60, 60))
    draw = ImageDraw.Draw(img)
    draw.ellipse((3, 4, 19, 20), fill=(230, 40, 40))
    draw.rectangle((22, 6, 36, 16), fill=(40, 200, 60))
    draw.polygon([(6, 36), (20, 22), (35, 37)], fill=(50, 70, 220))
    arr = np.asarray(img, dtype=np.float64) + np.linspace(0, 40, size)[None, :, None]
    if noise:
        arr += np.random.default_rng(seed).normal(0, noise, arr.shape)
    arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr if colour else np.asarray(Image.fromarray(arr).convert("L"))


@pytest.mark.parametrize("colour,noise,low,high", [(True, 0.0, 100, 200), (False, 0.0, 100, 200),
                                                    (True, 6.0, 60, 150), (False, 8.0, 30, 90)])
def test_matches_plain_reference(colour, noise, low, high):
    img = shapes(noise=noise, colour=colour)
    ours, ref = canny(img, low, high), reference_canny(img, low, high)
    assert ours.dtype == np.uint8 and ours.shape == img.shape[:2]
    assert (ours > 0).sum() > 40, "the fixture should have edges"
    assert np.array_equal(ours, ref), f"{(ours != ref).sum()} pixels differ"


def test_edges_follow_outlines():
    img = np.zeros((32, 32), dtype=np.uint8)
    img[8:24, 10:26] = 200                       # a filled rectangle: edges on its border, within a pixel
    edges = canny(img, 100, 200) > 0
    ys, xs = np.nonzero(edges)
    assert len(ys) > 40
    on_border = (np.minimum(np.abs(ys - 8), np.abs(ys - 23)) <= 1) | (np.minimum(np.abs(xs - 10), np.abs(xs - 25)) <= 1)
    assert on_border.all()
    assert not edges[12:20, 14:22].any() and not edges[:5].any()


def test_flat_thresholds_blur():
    assert not canny(np.full((16, 16, 3), 77, np.uint8)).any()
    img = shapes(noise=10.0, seed=3)
    loose, strict = canny(img, 50, 100) > 0, canny(img, 150, 300) > 0
    assert strict.sum() < loose.sum() and not (strict & ~loose).any()       # stricter thresholds keep a subset
    assert (canny(img, 50, 100, sigma=1.5) > 0).sum() < loose.sum()         # blur removes noise edges
    assert np.array_equal(canny(img, 200, 100), canny(img, 100, 200))       # swapped thresholds, as OpenCV
    with pytest.raises(ValueError):
        canny(img.astype(np.float32))

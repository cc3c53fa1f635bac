"""Random inpainting masks for training an inpainting model (1 = repaint, 0 = keep).

The recipe, modelled on what Stability wrote of its inpainting models (SD 1.5-inpainting: "synthetic masks, and in
25% mask everything"; SD 2-inpainting: "the mask-generation strategy presented in LaMa") and on diffusers'
dreambooth_inpaint example (a random rectangle or ellipse; the whole image masked at times):

* with probability ``full_prob`` (0.25) the whole image;
* else, half of the time 1-3 rectangles (sides 1/8 to 3/4 of the image's), half of the time 1-4 LaMa-style
  brush strokes (polylines of 2-5 random-angle segments up to 1/3 of the image's larger side long, drawn 1/16
  to 1/6 of the smaller side wide, with round joints and ends).

Every draw comes from the generator passed in; training passes one keyed by the sample (ldm.train.inpaint), so
a sample's mask depends on (seed, epoch, sample) only, like the rest of its random draws.
"""
import numpy as np

FULL_PROB = 0.25


def random_mask(rng, height, width, full_prob=FULL_PROB):
    """float32 (height, width) mask of 0/1 drawn from ``rng`` (a numpy Generator)."""
    if rng.random() < full_prob:
        return np.ones((height, width), np.float32)
    if rng.random() < 0.5:
        return rectangles(rng, height, width)
    return strokes(rng, height, width)


def rectangles(rng, height, width, count=None):
    mask = np.zeros((height, width), np.float32)
    for _ in range(int(count or rng.integers(1, 4))):
        h = int(rng.integers(max(1, height // 8), max(2, 3 * height // 4) + 1))
        w = int(rng.integers(max(1, width // 8), max(2, 3 * width // 4) + 1))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        mask[top:top + h, left:left + w] = 1.0
    return mask


def strokes(rng, height, width, count=None):
    """Thick polylines: each segment a capsule (every pixel within ``radius`` of the segment)."""
    mask = np.zeros((height, width), bool)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    reach = max(height, width) / 3.0
    for _ in range(int(count or rng.integers(1, 5))):
        radius = float(rng.uniform(min(height, width) / 32.0, min(height, width) / 12.0))
        point = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        for _ in range(int(rng.integers(2, 6))):
            angle = rng.uniform(0, 2 * np.pi)
            nxt = np.clip(point + rng.uniform(reach / 4, reach) * np.array([np.cos(angle), np.sin(angle)]),
                          0, [width, height])
            mask |= _capsule(xs, ys, point, nxt, radius)
            point = nxt
    return mask.astype(np.float32)


def _capsule(xs, ys, p0, p1, radius):
    d = p1 - p0
    length2 = float(d @ d)
    t = 0.0 if length2 == 0.0 else np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / length2, 0.0, 1.0)
    return (xs - p0[0] - t * d[0]) ** 2 + (ys - p0[1] - t * d[1]) ** 2 <= radius * radius

"""The synthetic CIFAR-10 stand-in: labelled, versioned images for runs that cannot download CIFAR-10.

    images, labels = make_standin("test")                            # the current version, 10 000 images
    images, labels, faint = make_standin("test", return_faint=True)  # faint[i]: image i's object is drawn faint

`data.load_dataset('cifar10', standin=True)` (or 'cifar10-standin', or QSAL_STANDIN=1) loads it as a dataset
named "CIFAR-10 stand-in (synthetic) <version>", with the faint flags as `dataset.faint`.

Every version stays reproducible, byte for byte (tests/test_standin.py pins each one's images), so that the
figures recorded with it can be re-made:
- v1: five shapes (disk, square, triangle, cross, ring), solid or striped, on flat random backgrounds.
- v2: ten object-like shapes (`STANDIN_SHAPES`) among textured clutter (smooth colour noise, a colour
  grating) and distractors (bars, ellipses; one may be drawn over the object).
- v3 (current): v2 with about one object in seven drawn faint (8-20 % opacity), so that even a model
  trained until it stops improving stays clearly below 100 % (ARCHITECTURE.md has the measurements).

The class is the object's shape only: its size, place, rotation, colour and fill are drawn alike for every
class, so the evidence is local (a saliency map has an object to find) and neither colour nor position
gives the class away. Images are uint8, N x 32 x 32 x 3 like CIFAR-10's, made from fixed seeds per split
and version, and memoised (read-only) for the process.
"""
from __future__ import annotations

import functools

import numpy as np

STANDIN_VERSIONS = ("v1", "v2", "v3")
STANDIN_VERSION = "v3"  # what 'cifar10-standin' and QSAL_STANDIN=1 give
STANDIN_SHAPES = ("disk", "square", "triangle", "plus", "ring", "crescent", "star", "half-disk", "L-shape", "frame")
# Smaller than CIFAR-10's 50 000 training images: every process that loads the split generates it.
STANDIN_SIZES = {"train": 20000, "test": 10000}
_V1_SIZES = {"train": 50000, "test": 10000}  # v1 had CIFAR-10's split sizes

# v2's scene; v3 adds the faint objects. What each setting does is in `_shapes_chunk`.
STANDIN_V2_PARAMS = dict(clutter=0.75, grating=0.2, behind=2, front=1, radius=(6.0, 10.0), rotation=0.45, noise=0.05,
                         length=(3.0, 9.0), width=(1.0, 2.5), contrast=0.5, second_colour=0.12)
STANDIN_V3_PARAMS = {**STANDIN_V2_PARAMS, "faint_share": 0.15, "faint_opacity": (0.08, 0.2)}
STANDIN_PARAMS = {"v2": STANDIN_V2_PARAMS, "v3": STANDIN_V3_PARAMS}

_CHUNK = 1000  # v2/v3 images per seed: the first k images are the same whatever n is
_SEEDS = {"train": 20260, "test": 20261}
_YY, _XX = np.mgrid[0:32, 0:32].astype(np.float32)


def make_standin(split: str, n: int | None = None, version: str = STANDIN_VERSION, return_faint: bool = False):
    """(uint8 images N x 32 x 32 x 3, int64 labels), or with `return_faint` also a bool array saying which
    images show their object faint (v3 only; all False for v1 and v2), for `split` 'train' or 'test'.

    n: how many images (default `STANDIN_SIZES[split]`; v1: CIFAR-10's 50 000 / 10 000). The arrays are
    read-only and memoised for the process."""
    if version not in STANDIN_VERSIONS:
        raise ValueError(f"unknown CIFAR-10 stand-in version {version!r}; versions: {', '.join(STANDIN_VERSIONS)} "
                         f"(current: {STANDIN_VERSION})")
    if split not in STANDIN_SIZES:
        raise ValueError(f"the CIFAR-10 stand-in has splits 'train' and 'test', not {split!r}")
    n = (_V1_SIZES if version == "v1" else STANDIN_SIZES)[split] if n is None else n
    if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
        raise ValueError(f"n must be a positive number of images, got {n!r}")
    images, labels, faint = _memoised(split, n, version)
    return (images, labels, faint) if return_faint else (images, labels)


@functools.lru_cache(maxsize=4)
def _memoised(split: str, n: int, version: str):
    arrays = _v1(split, n) if version == "v1" else _shapes(split, n, STANDIN_PARAMS[version], int(version[1:]))
    for a in arrays:
        a.flags.writeable = False
    return arrays


# ----------------------------------------------------------------------------- drawing, shared by the versions

def _rotated(dx: np.ndarray, dy: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(along, across): the offsets (dx, dy) in axes turned by `angle`."""
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, dy * cos - dx * sin


def _wave(angle: np.ndarray, frequency, phase=None) -> np.ndarray:
    """sin of the pixel position along `angle`, times `frequency` (plus `phase`): stripes, gratings."""
    t = (_XX * np.cos(angle) + _YY * np.sin(angle)) * frequency
    return np.sin(t if phase is None else t + phase)


def _shape_mask(c: int, u: np.ndarray, v: np.ndarray, triangle=(0.75, 1.7, 0.95)) -> np.ndarray:
    """Pixels inside shape `c` (STANDIN_SHAPES[c]) in the object's own coordinates (radius 1)."""
    r2, a = u * u + v * v, np.maximum(abs(u), abs(v))
    if c == 0:
        return r2 <= 1                                                   # disk
    if c == 1:
        return a <= 0.8                                                  # square
    if c == 2:
        top, slope, bottom = triangle
        return (v <= top) & (v >= slope * abs(u) - bottom)               # triangle
    if c == 3:
        return (np.minimum(abs(u), abs(v)) <= 0.3) & (a <= 1)           # plus
    if c == 4:
        return (r2 <= 1) & (r2 >= 0.4)                                   # ring
    if c == 5:
        return (r2 <= 1) & ((u - 0.5) ** 2 + v * v >= 0.55)             # crescent
    if c == 6:
        return np.sqrt(r2) <= 0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))  # star (five lobes)
    if c == 7:
        return (r2 <= 1) & (v >= 0.05)                                   # half-disk
    if c == 8:
        return (a <= 0.85) & ((u <= -0.25) | (v >= 0.3))                # L-shape
    return (a <= 0.85) & (a >= 0.5)                                      # frame


def _masks(labels: np.ndarray, u: np.ndarray, v: np.ndarray, **shape) -> np.ndarray:
    """Each image's object mask: the shape of its label, in its own coordinates (u, v)."""
    mask = np.zeros((len(labels), 32, 32), bool)
    for c in np.unique(labels):
        idx = labels == c
        mask[idx] = _shape_mask(int(c), u[idx], v[idx], **shape)
    return mask


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- v1

def _v1(split: str, n: int):
    """Shapes 0-4 (v1's triangle is a little smaller), solid for labels 0-4, striped for 5-9, on a flat
    background; a random occluding bar and pixel noise. Float64 and rng.uniform, as v1 was drawn."""
    rng = np.random.default_rng(1234 if split == "train" else 5678)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    cy, cx = rng.uniform(10, 22, (2, n, 1, 1)).astype(np.float32)
    r = rng.uniform(6, 11, (n, 1, 1)).astype(np.float32)
    mask = _masks(labels % 5, (_XX - cx) / r, (_YY - cy) / r, triangle=(0.7, 1.6, 0.9))
    stripes = _wave(rng.uniform(0, np.pi, (n, 1, 1)), 1.6) > 0
    mask &= np.where((labels >= 5)[:, None, None], stripes, True)
    fg, bg = rng.uniform(0, 1, (2, n, 3)).astype(np.float32)
    img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :])
    by = rng.integers(0, 32, n)
    bar = (abs(_YY[None] - by[:, None, None]) < 1.5) & (rng.uniform(size=(n, 1, 1)) < 0.5)
    img = np.where(bar[..., None], rng.uniform(0, 1, (n, 1, 1, 3)), img)
    img = img + rng.normal(0, 0.12, img.shape)
    return _to_uint8(img), labels.astype(np.int64), np.zeros(n, bool)


# ----------------------------------------------------------------------------- v2 and v3

def _shapes(split: str, n: int, params: dict, number: int):
    """v2/v3 in chunks of _CHUNK images, each from its own seed (split, version number, chunk), so that each
    chunk holds every class equally often and v2 and v3 draw different scenes."""
    chunks = [_shapes_chunk(np.random.default_rng([_SEEDS[split], number, k]), _CHUNK, params)
              for k in range(-(-n // _CHUNK))]
    return tuple(np.concatenate(arrays)[:n] for arrays in zip(*chunks))


def _shapes_chunk(rng: np.random.Generator, n: int, p: dict):
    def uniform(lo, hi, shape):
        return lo + (hi - lo) * rng.random(shape, dtype=np.float32)

    labels = rng.permutation(np.arange(n) % 10)
    # textured clutter: smooth colour noise (4x4 grid, interpolated) plus a colour grating of random strength
    up = _upsample_matrix(4)
    smooth = up @ rng.random((n, 3, 4, 4), dtype=np.float32) @ up.T
    img = np.ascontiguousarray((0.5 + p["clutter"] * (smooth - 0.5)).transpose(0, 2, 3, 1))
    theta, freq = uniform(0, np.pi, (n, 1, 1)), uniform(0.3, 1.2, (n, 1, 1))
    grating = _wave(theta, freq, uniform(0, 2 * np.pi, (n, 1, 1)))
    img += p["grating"] * uniform(0, 1, (n, 1, 1, 1)) * grating[..., None] * uniform(-1, 1, (n, 1, 1, 3))

    def distractors(count):  # bars and ellipses anywhere: evidence of nothing
        for _ in range(count):
            cy, cx = uniform(0, 32, (2, n, 1, 1))
            du, dv = _rotated(_XX - cx, _YY - cy, uniform(0, np.pi, (n, 1, 1)))
            length, width = uniform(*p["length"], (n, 1, 1)), uniform(*p["width"], (n, 1, 1))
            bar = (abs(du) <= length) & (abs(dv) <= width / 2)
            ellipse = (du / (length / 2)) ** 2 + (dv / width) ** 2 <= 1
            drawn = (rng.random((n, 1, 1)) < 0.8) & np.where(rng.random((n, 1, 1)) < 0.5, bar, ellipse)
            np.copyto(img, uniform(0, 1, (n, 1, 1, 3)), where=drawn[..., None])

    distractors(p["behind"])
    # the object: its shape is the class; size, place, rotation, colours and fill are drawn for every class alike
    r = uniform(*p["radius"], (n, 1, 1))
    cy, cx = uniform(0, 1, (2, n, 1, 1)) * (32 - 2 * r) + r
    ang = uniform(-p["rotation"], p["rotation"], (n, 1, 1))
    u, v = _rotated((_XX - cx) / r, (_YY - cy) / r, ang)
    mask = _masks(labels, u, v)
    fg = uniform(0, 1, (n, 3))
    near = np.linalg.norm(fg - img.reshape(n, -1, 3).mean(1), axis=1) < p["contrast"]  # keep it visible
    fg[near] = 1 - fg[near]
    fg2 = np.clip(fg + p["second_colour"] * rng.standard_normal((n, 3), dtype=np.float32), 0, 1)
    fill = rng.integers(0, 3, (n, 1, 1))                                   # solid, striped or checked
    stripes = _wave(uniform(0, np.pi, (n, 1, 1)), 1.4) > 0
    checker = (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0
    second = np.where(fill == 1, stripes, np.where(fill == 2, checker, False))
    colour = np.where(second[..., None], fg2[:, None, None, :], fg[:, None, None, :])
    # faint objects (v3), like an underexposed photo: the faintest can hardly be told apart, so even a converged
    # model stays below 100 %. Drawn only where asked for, so that v2's random stream, and its images, stay as
    # they were.
    opacity, faint = np.ones((n, 1, 1, 1), np.float32), np.zeros(n, bool)
    if p.get("faint_share"):
        faint = rng.random(n) < p["faint_share"]
        opacity[faint] = uniform(*p["faint_opacity"], (int(faint.sum()), 1, 1, 1))
    np.copyto(img, (1 - opacity) * img + opacity * colour, where=mask[..., None])
    distractors(p["front"])  # one may cover part of the object
    img *= uniform(0.7, 1.2, (n, 1, 1, 1))
    img += uniform(-0.1, 0.1, (n, 1, 1, 1))
    img += p["noise"] * rng.standard_normal(img.shape, dtype=np.float32)
    return _to_uint8(img), labels.astype(np.int64), faint


def _upsample_matrix(src: int, dst: int = 32) -> np.ndarray:
    """dst x src bilinear interpolation weights: M @ grid @ M.T turns a src x src grid into a smooth dst x dst one."""
    t = np.linspace(0, src - 1, dst)
    lo = np.floor(t).astype(int).clip(0, src - 2)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] = 1 - (t - lo)
    m[np.arange(dst), lo + 1] = t - lo
    return m

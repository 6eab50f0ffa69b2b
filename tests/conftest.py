"""Shared pytest fixtures: a tiny synthetic scan with known masks, the real image (optional), an empty
store, and the small scored stores of the dashboard tests (built by ``test_app_store.build_small_store``)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from _store_fakes import private_store_copy

REPO = Path(__file__).resolve().parents[1]
REAL_IMAGE = REPO.parent / "shared" / "data" / "real" / "FISH_RGB.TIF"

#: (cy, cx, ry, rx, angle_rad) of the toy nuclei; ids are 1-based in this order.
#: 3 and 4 touch; 5 is cut by the right image border.
TOY_NUCLEI = [
    (60.0, 60.0, 27.0, 24.0, 0.3),
    (62.0, 170.0, 25.0, 29.0, -0.5),
    (180.0, 80.0, 27.0, 26.0, 0.0),
    (182.0, 132.0, 27.0, 26.0, 0.2),
    (120.0, 245.0, 26.0, 26.0, 0.0),
]


@dataclass
class ToyScan:
    """A 256 x 256 synthetic scan: image (H, W, 3) float32 [0, 1] and int32 masks."""

    image: np.ndarray
    masks: np.ndarray


def make_toy_scan(seed: int = 0, shape=(256, 256), nuclei=TOY_NUCLEI) -> ToyScan:
    """Elliptical DAPI nuclei (touching ones split by nearest centre) with a few red/green dots and noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    masks = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    for k, (cy, cx, ry, rx, a) in enumerate(nuclei, start=1):
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(a) + dy * np.sin(a)) / rx
        v = (-dx * np.sin(a) + dy * np.cos(a)) / ry
        r = np.sqrt(u * u + v * v)
        take = (r <= 1.0) & (r < best)
        masks[take] = k
        best[take] = r[take]
    image = np.zeros(shape + (3,), np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3) * 4
    bright = np.zeros(len(nuclei) + 1, np.float32)
    bright[1:] = rng.uniform(0.45, 0.7, len(nuclei))
    # dimmer rim so touching nuclei show a valley, as in real DAPI images
    image[..., 2] = bright[masks] * (1.0 - 0.35 * np.clip(best, 0, 1) ** 2) * (1 + 0.1 * texture) * (masks > 0)
    for k, (cy, cx, *_rest) in enumerate(nuclei, start=1):
        for c, n in ((0, 2), (1, 3)):
            for _ in range(n):
                sy, sx = cy + rng.uniform(-12, 12), cx + rng.uniform(-12, 12)
                image[..., c] += 0.8 * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * 1.5**2)) * (masks == k)
    image = ndimage.gaussian_filter(image, (1.0, 1.0, 0))
    image += 0.03 + rng.normal(0, 0.01, image.shape).astype(np.float32)
    return ToyScan(np.clip(image, 0, 1).astype(np.float32), masks)


@pytest.fixture(scope="session")
def toy_scan() -> ToyScan:
    """256 x 256 scan with five elliptical nuclei (two touching, one cut by the border) and their masks."""
    return make_toy_scan()


def make_bomb_tiff(width: int, height: int) -> bytes:
    """A tiny deflate-compressed baseline TIFF whose header declares width x height 8-bit RGB."""
    strip = zlib.compress(bytes(3 * width * 16))  # first 16 rows of zeros; the rest is missing
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 2),
        (273, 4, 1, 0), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, len(strip)), (284, 3, 1, 1),
    ]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<H", value) + b"\x00\x00" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0) + strip
    return bytes(out)


@pytest.fixture(scope="session")
def bomb_tiff():
    """``make_bomb_tiff(width, height) -> bytes``: a tiny TIFF whose header declares a huge image."""
    return make_bomb_tiff


@pytest.fixture(scope="session")
def real_image_path() -> Path:
    """Path of ``../shared/data/real/FISH_RGB.TIF``; skips the test when it is absent."""
    if not REAL_IMAGE.is_file():
        pytest.skip(f"real image not available at {REAL_IMAGE}")
    return REAL_IMAGE


@pytest.fixture()
def store(tmp_path):
    """An empty store in ``tmp_path``, closed after the test."""
    from store.db import Store

    s = Store(tmp_path / "t.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> tuple[Path, dict]:
    """(path, {sample: nuclei}) of a freshly built small store (shared by the session; copy before writing)."""
    from test_app_store import build_small_store

    path = tmp_path_factory.mktemp("store") / "small.duckdb"
    return path, build_small_store(path)


@pytest.fixture(scope="session")
def umap_store(tmp_path_factory) -> tuple[Path, dict]:
    """Like ``small_store`` with a UMAP fitted per model (slow: numba compilation)."""
    from test_app_store import build_small_store

    path = tmp_path_factory.mktemp("store_umap") / "small_umap.duckdb"
    return path, build_small_store(path, with_umap=True)


@pytest.fixture()
def store_copy(small_store, tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A private copy of the small store, exported as ``GENUINE_DB`` (the dashboard tests' store)."""
    src, counts = small_store
    return private_store_copy(src, tmp_path, monkeypatch), counts


@pytest.fixture()
def umap_store_copy(umap_store, tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A private copy of the small store with fitted UMAPs (slow to build once per session)."""
    src, counts = umap_store
    return private_store_copy(src, tmp_path, monkeypatch), counts

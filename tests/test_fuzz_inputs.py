"""Fuzzing the readers and the ingest (issue 6, point 1) with Hypothesis, on a fixed budget.

Random image shapes, channel counts and layouts, pixel types (including NaN/inf and
extreme ranges), TIFF/PNG encodings, then byte corruption (truncation, flipped bytes,
wiped runs, inserted bytes). Properties:

* ``inspect_scan`` / ``decode_scan`` return a valid scan or raise ``InputError`` (never
  another exception); a returned scan is (H, W, 3) float32, finite, in [0, 1], of the
  size its header declared.
* An ingest of fuzzed bytes (the upload path, ``store.ingest.ingest_upload``) either
  stores one consistent scan (``genuine store check`` clean) or leaves the store
  byte-for-byte unchanged: never partial rows.

Reproducible in CI: ``derandomize=True``, no example database. The fast tests take
~60 and ~20 examples; ``-m slow`` runs 600 and 150.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _store_fakes import fake_model, threshold_segmenter
from conftest import make_toy_scan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genuine_core.errors import InputError
from genuine_core.io import ChannelMap, decode_scan, inspect_scan

DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "int32", "uint32", "int64", "float16", "float32", "float64"]
CORRUPTIONS = ["none", "truncate", "flip", "wipe", "insert", "header"]
FUZZ = {"deadline": None, "derandomize": True, "database": None, "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]}


def _values(rng: np.random.Generator, dtype: str, shape: tuple, scale: float, specials: bool) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "ui":
        info = np.iinfo(dt)
        hi = min(int(info.max), int(scale)) if scale >= 1 else int(info.max)
        return rng.integers(max(int(info.min), -hi), hi, shape, endpoint=True).astype(dt)
    with np.errstate(over="ignore"):  # 1e30 in float16 is inf: one more special value
        arr = (rng.normal(0.5, 0.3, shape) * scale).astype(dt)
    if specials and arr.size:
        flat = arr.reshape(-1)
        flat[rng.integers(0, flat.size, 1 + flat.size // 50)] = rng.choice([np.nan, np.inf, -np.inf])
    return arr


@st.composite
def images(draw) -> np.ndarray:
    """A random array as a scanner or a script might save it: (H, W), (H, W, C) or (C, H, W)."""
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    c = draw(st.sampled_from([0, 1, 2, 3, 3, 4, 5]))  # 0: plain 2-D
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1e-9, 1.0, 255.0, 4095.0, 1e6, 1e30]))
    specials = draw(st.booleans()) and draw(st.booleans())  # NaN/inf in a quarter of float images
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = _values(rng, dtype, (h, w) if c == 0 else (h, w, c), scale, specials)
    if c and draw(st.booleans()):
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
    return arr


def encode(arr: np.ndarray, fmt: str, compression: str | None) -> bytes:
    """TIFF (tifffile's default layout, or RGB when it fits) or PNG bytes of ``arr``."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(arr).save(buf, format="PNG")
    elif fmt == "tiff-rgb":
        planar = arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4)
        tifffile.imwrite(buf, arr, photometric="rgb", planarconfig="separate" if planar else "contig",
                         compression=compression, metadata=None)
    else:
        tifffile.imwrite(buf, arr, photometric="minisblack", compression=compression, metadata=None)
    return buf.getvalue()


def corrupt(data: bytes, how: str, at: float, n: int, seed: int) -> bytes:
    """``data`` damaged at relative position ``at`` (``n`` bytes)."""
    if how == "none" or not data:
        return data
    rng = np.random.default_rng(seed)
    i = min(int(at * len(data)), len(data) - 1)
    b = bytearray(data)
    if how == "truncate":
        return bytes(b[:i])
    if how == "flip":
        for j in rng.integers(0, len(b), n):
            b[j] ^= int(rng.integers(1, 256))
        return bytes(b)
    if how == "wipe":
        b[i:i + 8 * n] = bytes(len(b[i:i + 8 * n]))
        return bytes(b)
    if how == "insert":
        return bytes(b[:i]) + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + bytes(b[i:])
    # header: damage the first 64 bytes (magic, IFD offset, IHDR)
    for j in rng.integers(0, min(64, len(b)), n):
        b[j] = int(rng.integers(0, 256))
    return bytes(b)


@st.composite
def files(draw) -> bytes:
    """An encoded, possibly corrupted image file."""
    arr = draw(images())
    pngable = (arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)))) \
        or (arr.dtype in (np.uint16, np.bool_) and arr.ndim == 2)
    rgbable = arr.ndim == 3 and (arr.shape[-1] in (3, 4) or arr.shape[0] in (3, 4)) and arr.dtype != np.bool_
    fmt = draw(st.sampled_from(["tiff"] + ["tiff-rgb"] * rgbable + ["png"] * pngable))
    data = encode(arr, fmt, draw(st.sampled_from([None, "zlib"])) if fmt != "png" else None)
    how = draw(st.sampled_from(["none"] * len(CORRUPTIONS) + CORRUPTIONS))  # half the files intact
    return corrupt(data, how, draw(st.floats(0, 1)), draw(st.integers(1, 8)),
                   draw(st.integers(0, 2**16)))


def _cmap(n: int) -> st.SearchStrategy:
    return st.builds(lambda idx, keep: ChannelMap(idx[0] if keep[0] else None, idx[1] if keep[1] else None, idx[2]),
                     st.permutations(range(n)).map(lambda p: p[:3]), st.tuples(st.booleans(), st.booleans()))


#: None (RGB default) or a map into the first 3 or 6 channels
channel_maps = st.one_of(st.none(), _cmap(3), _cmap(6))


def check_decode(data: bytes, cmap: ChannelMap | None) -> str:
    """Decode ``data``; assert the contract; return 'ok' or 'refused'."""
    try:
        header = inspect_scan(data, max_pixels=4096)
    except InputError:
        header = None
    try:
        scan = decode_scan(data, "fuzz.tif", cmap, max_pixels=4096)
    except InputError as exc:
        assert str(exc).startswith("fuzz.tif: ") and "\n" not in str(exc)
        return "refused"
    assert header is not None, "decode_scan accepted what inspect_scan refused"
    img = scan.image
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape == (header.height, header.width, 3)
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    assert img[..., 2].max() > img[..., 2].min()  # a constant DAPI channel is refused
    return "ok"


@settings(max_examples=60, **FUZZ)
@given(data=files(), cmap=channel_maps)
def test_fuzz_decode_returns_a_scan_or_input_error(data, cmap):
    check_decode(data, cmap)


@pytest.mark.slow
@settings(max_examples=600, **FUZZ)
@given(data=files(), cmap=channel_maps)
def test_fuzz_decode_long(data, cmap):
    check_decode(data, cmap)


def test_fuzz_strategy_reaches_both_outcomes():
    """The strategy is not degenerate: the same derandomized draws give accepted and refused files."""
    outcomes = []

    @settings(max_examples=60, **FUZZ)
    @given(data=files(), cmap=channel_maps)
    def run(data, cmap):
        outcomes.append(check_decode(data, cmap))

    run()
    assert outcomes.count("ok") >= 5 and outcomes.count("refused") >= 5


# ---------------------------------------------------------------------------------- the store
def _toy_u8() -> np.ndarray:
    """A 96 x 96 scan with three nuclei, as uint8 (H, W, 3)."""
    nuclei = [(30.0, 30.0, 14.0, 12.0, 0.3), (60.0, 62.0, 13.0, 14.0, 0.0), (28.0, 70.0, 12.0, 12.0, 0.5)]
    return np.rint(make_toy_scan(seed=2, shape=(96, 96), nuclei=nuclei).image * 255).astype(np.uint8)


@st.composite
def scan_files(draw) -> bytes:
    """A good small scan (TIFF or PNG, 8/16-bit, channel-first or -last), then maybe corrupted."""
    arr = _toy_u8()
    if draw(st.booleans()):
        arr = arr.astype(np.uint16) * 257
    fmt = draw(st.sampled_from(["tiff", "tiff-rgb"] + ["png"] * (arr.dtype == np.uint8)))
    if fmt != "png" and draw(st.booleans()):
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
    data = encode(arr, fmt, draw(st.sampled_from([None, "zlib"])) if fmt != "png" else None)
    how = draw(st.sampled_from(CORRUPTIONS + ["none", "flip"]))  # more mild damage: some still decode
    return corrupt(data, how, draw(st.floats(0.05, 1)), draw(st.integers(1, 4)), draw(st.integers(0, 2**16)))


def _state(db: Path) -> tuple[dict, str]:
    from store.db import Store

    with Store(db, read_only=True) as s:
        tables = s.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
        counts = {t: int(s.scalar(f'SELECT count(*) FROM "{t}"')) for t in tables["table_name"]}
    return counts, hashlib.sha256(db.read_bytes()).hexdigest()


def _fuzz_store(max_examples: int) -> dict:
    from store.check import check_store
    from store.db import Store
    from store.ingest import ingest_upload, uploads_dir

    seen = {"stored": 0, "failed": 0, "duplicate": 0}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "fuzz.duckdb"
        Store(db).close()
        model = fake_model("fuzz", patch_size=32)

        last = [_state(db)]

        @settings(max_examples=max_examples, **FUZZ)
        @given(data=scan_files())
        def run(data):
            before, sha = last[0]
            with Store(db) as store:
                report = ingest_upload(store, uploads_dir(db), "scan.tif", data, "FUZZ", models=[model],
                                       segmenter=threshold_segmenter, place_umap=False)
                problems = check_store(store) if report.outcomes[0].status == "stored" else []
            (outcome,) = report.outcomes
            seen[outcome.status] += 1
            last[0] = after, sha_after = _state(db)
            assert problems == [], problems
            if outcome.status == "stored":
                assert after["scans"] == before["scans"] + 1
                assert after["nuclei"] - before["nuclei"] == outcome.n_nuclei > 0
                assert after["predictions"] - before["predictions"] == outcome.n_nuclei
            else:
                assert (after, sha_after) == (before, sha), outcome.message
                assert "\n" not in outcome.message and outcome.message

        run()
    return seen


def test_fuzz_ingest_never_leaves_partial_rows():
    seen = _fuzz_store(20)
    assert seen["stored"] >= 1 and seen["failed"] >= 1, seen


@pytest.mark.slow
def test_fuzz_ingest_long():
    seen = _fuzz_store(150)
    assert seen["stored"] >= 5 and seen["failed"] >= 5, seen

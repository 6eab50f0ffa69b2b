"""Hostile and broken scan files, built in memory; shared by tests/test_hostile_inputs.py and bench/bench_hostile.py.

Every case is the bytes of one file plus what every entry point must do with it:
``accepted`` (stored / segmented) or ``refused`` with a one-line message matching
``fragment``. ``segment`` overrides the outcome of ``genuine segment`` where it differs
from the ingest (segmenting an empty field is not an error, storing it is).
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from conftest import make_bomb_tiff, make_toy_scan
from PIL import Image

#: a small pixel limit for the "configurable limit" case (the toy scan has 65 536 pixels)
SMALL_LIMIT = 10_000


@dataclass(frozen=True)
class Case:
    """One input file and the expected outcome.

    Attributes:
        name: short id.
        filename: file name it is uploaded/ingested under (the extension may lie).
        data: the file's bytes.
        expect: ``accepted`` or ``refused`` (``genuine ingest`` and the upload page).
        fragment: regex the one-line message must match (refused cases).
        channels: ``--channels`` value / upload page mapping (None: the default RGB).
        env: environment variables set while it runs.
        segment: ``(expect, fragment)`` for ``genuine segment`` when it differs.
        page_fragment: message regex on the upload page when it differs (the page always
            has a channel mapping, RGB by default, so "needs a map" reads differently).
    """

    name: str
    filename: str
    data: bytes
    expect: str
    fragment: str = ""
    channels: str | None = None
    env: dict = field(default_factory=dict)
    segment: tuple[str, str] | None = None
    page_fragment: str | None = None


def store_snapshot(db: Path) -> dict:
    """Row count of every table, sha256 of the store file, and every file beside it (path -> sha256)."""
    from store.db import Store

    with Store(db, read_only=True) as s:
        tables = s.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                         "ORDER BY 1")["table_name"].tolist()
        counts = {t: int(s.scalar(f'SELECT count(*) FROM "{t}"')) for t in tables}
    side = db.with_name(db.stem + "_files")
    files = {str(p.relative_to(side)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(side.rglob("*")) if p.is_file()} if side.is_dir() else {}
    return {"counts": counts, "sha256": hashlib.sha256(db.read_bytes()).hexdigest(), "files": files,
            "wal": db.with_name(db.name + ".wal").exists()}


def tiff_bytes(arr: np.ndarray, **kwargs) -> bytes:
    """``tifffile.imwrite`` into memory."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, metadata=None, **kwargs)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    """A PNG of a (H, W) or (H, W, 3) uint8/uint16 array."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header declares width x height RGB, with a few bytes of image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width) * 4)  # 4 rows of zeros
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise_image(shape=(256, 256), seed: int = 0) -> np.ndarray:
    """(H, W, 3) float32: background and camera noise only, no nucleus."""
    rng = np.random.default_rng(seed)
    return np.clip(0.1 + rng.normal(0, 0.02, shape + (3,)), 0, 1).astype(np.float32)


def tiled_nuclei(shape=(256, 256), spacing: int = 64, seed: int = 0) -> np.ndarray:
    """(H, W, 3) float32 where nuclei tile the whole field (every pixel is in a nucleus; dimmer rims)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    gy, gx = np.mgrid[spacing // 2:h:spacing, spacing // 2:w:spacing]
    seeds = np.stack([gy.ravel(), gx.ravel()], 1) + rng.uniform(-8, 8, (gy.size, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2)
    bright = rng.uniform(0.5, 0.8, len(seeds))[d.argmin(-1)]
    img = np.empty(shape + (3,), np.float32)
    img[..., 2] = bright * (1 - 0.5 * np.clip(d.min(-1) / (0.6 * spacing), 0, 1) ** 2)
    img[..., :2] = 0.1
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def one_blob(shape=(256, 256), seed: int = 0) -> np.ndarray:
    """(H, W, 3) float32: one nucleus larger than the field, centred on its corner (cut by the border)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = (yy**2 + xx**2) / (1.2 * max(h, w)) ** 2
    img = np.full(shape + (3,), 0.1, np.float32)
    img[..., 2] = np.where(r2 < 1, 0.7 * (1 - 0.5 * r2), 0.05)
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def hostile_cases() -> list[Case]:
    """Every hostile input kind of issue 6 (deterministic bytes)."""
    toy = make_toy_scan(seed=11).image  # (256, 256, 3) float32, 5 nuclei (one at the border)
    u8 = np.rint(toy * 255).astype(np.uint8)
    u16 = np.rint(toy * 65535).astype(np.uint16)
    good_tif = tiff_bytes(u16, photometric="rgb")
    deflate_tif = tiff_bytes(u16, photometric="rgb", compression="zlib", rowsperstrip=256)
    corrupt = bytearray(deflate_tif)
    mid = len(corrupt) // 2
    corrupt[mid:mid + 64] = bytes(64)  # wipe a run of the compressed strip
    rng = np.random.default_rng(5)
    garbage = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    nan = toy.copy()
    nan[100, 100, 2] = np.nan
    pinf, ninf = toy.copy(), toy.copy()
    pinf[5, 7, 0] = np.inf
    ninf[9, 9, 1] = -np.inf
    four = np.concatenate([u8, u8[..., :1]], -1)
    five_first = np.stack([u8[..., 2], u8[..., 1], u8[..., 0] // 2, u8[..., 1] // 3, u8[..., 0]])  # DAPI 0, NMI 4
    five_last = np.moveaxis(five_first, 0, -1)
    accept = "accepted"
    refuse = "refused"
    no_map = "channel"  # page: RGB mapping on a file with fewer channels
    no_probe = r"has no NMI \(reference\) and no MYCN channel"  # scored nuclei need both probes
    blank_mycn = u8.copy()
    blank_mycn[..., 1] = 0
    return [
        # -- not images, whatever the extension says
        Case("text named .tif", "notes.tif", b"hello, this is a text file\n" * 20, refuse, "not an image"),
        Case("PDF named .tif", "report.tif", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" * 10, refuse,
             "not an image"),
        Case("ZIP named .png", "scan.png", b"PK\x03\x04" + garbage, refuse, "not an image"),
        Case("HTML named .png", "scan.png", b"<!DOCTYPE html><html><body>404</body></html>", refuse, "not an image"),
        Case("empty .tif", "empty.tif", b"", refuse, "empty file"),
        Case("TIFF signature + garbage", "garbage.tif", b"II*\x00" + garbage, refuse, "not a readable TIFF"),
        Case("PNG signature + garbage", "garbage.png", b"\x89PNG\r\n\x1a\n" + garbage, refuse, "not a readable image"),
        Case("JPEG signature + garbage", "garbage.jpg", b"\xff\xd8\xff" + garbage, refuse,
             "not a readable image|cannot decode"),
        Case("PNG named .tif", "scan.tif", png_bytes(u8), accept),
        # -- truncated / corrupt
        Case("TIFF cut in half", "cut.tif", good_tif[: len(good_tif) // 2], refuse, "truncated"),
        Case("TIFF cut inside its header", "head.tif", good_tif[:6], refuse, "truncated|corrupt"),
        Case("deflate TIFF with wiped data", "wiped.tif", bytes(corrupt), refuse, "cannot decode"),
        Case("PNG cut in half", "cut.png", png_bytes(u8)[:5000], refuse, "truncated|corrupt|cannot decode"),
        Case("JPEG cut in half", "cut.jpg", jpeg_bytes(u8)[:3000], refuse, "truncated|corrupt|cannot decode"),
        # -- decompression bombs and the pixel limit
        Case("TIFF bomb 60000x60000", "bomb.tif", make_bomb_tiff(60_000, 60_000), refuse, "refusing to decode"),
        Case("PNG bomb 60000x60000", "bomb.png", png_bomb(60_000, 60_000), refuse, "refusing to decode"),
        Case(f"256x256 above GENUINE_MAX_PIXELS={SMALL_LIMIT}", "big.tif", good_tif, refuse,
             f"above the limit of {SMALL_LIMIT}", env={"GENUINE_MAX_PIXELS": str(SMALL_LIMIT)}),
        # -- bit depths and pixel types
        Case("16-bit TIFF", "u16.tif", good_tif, accept),
        Case("12-bit data in a 16-bit TIFF", "u12.tif", tiff_bytes(np.rint(toy * 4095).astype(np.uint16),
                                                                 photometric="rgb"), accept),
        Case("32-bit integer TIFF", "i32.tif", tiff_bytes(np.rint(toy * 4095).astype(np.int32), photometric="rgb"),
             accept),
        Case("float32 TIFF in [0, 1]", "f32.tif", tiff_bytes(toy, photometric="rgb"), accept),
        Case("float64 TIFF in [0, 1000]", "f64.tif", tiff_bytes(toy.astype(np.float64) * 1000, photometric="rgb"),
             accept),
        Case("float16 TIFF", "f16.tif", tiff_bytes(toy.astype(np.float16), photometric="rgb"), accept),
        Case("float TIFF with NaN", "nan.tif", tiff_bytes(nan, photometric="rgb"), refuse, "NaN or infinite"),
        Case("float TIFF with +inf", "inf.tif", tiff_bytes(pinf, photometric="rgb"), refuse, "NaN or infinite"),
        Case("float TIFF with -inf", "ninf.tif", tiff_bytes(ninf, photometric="rgb"), refuse, "NaN or infinite"),
        Case("complex TIFF", "complex.tif", tiff_bytes(toy[..., 2].astype(np.complex64)), refuse, "unsupported pixel type"),
        Case("16-bit grey PNG, DAPI only", "g16.png", png_bytes(u16[..., 2]), refuse, no_probe, channels="dapi=0",
             segment=(accept, "")),
        # -- channel counts and layouts
        Case("1 channel, no map", "one.tif", tiff_bytes(u8[..., 2]), refuse, "1 channel", page_fragment=no_map),
        Case("1 channel, DAPI only", "one.tif", tiff_bytes(u8[..., 2]), refuse, no_probe, channels="dapi=0",
             segment=(accept, "")),
        Case("2 channels (C, H, W), no map", "two.tif", tiff_bytes(np.stack([u8[..., 1], u8[..., 2]]),
                                                                  photometric="minisblack"), refuse, "2 channel",
             page_fragment=no_map),
        Case("2 channels (C, H, W), mapped", "two.tif", tiff_bytes(np.stack([u8[..., 1], u8[..., 2]]),
                                                                  photometric="minisblack"), refuse,
             r"has no NMI \(reference\) channel", channels="mycn=0,dapi=1", segment=(accept, "")),
        Case("RGB with a blank MYCN channel", "blank.tif", tiff_bytes(blank_mycn, photometric="rgb"), refuse,
             r"MYCN channel \(source channel 1\) is blank", segment=(accept, "")),
        Case("4 channels (H, W, 4), no map", "four.tif", tiff_bytes(four), refuse, "4 channel",
             page_fragment=".*"),  # the page's RGB default reads channels 0-2 of a 4-channel file
        Case("4 channels (H, W, 4), mapped", "four.tif", tiff_bytes(four), accept, channels="nmi=0,mycn=1,dapi=2"),
        Case("5 channels first (C, H, W), mapped", "five_cf.tif", tiff_bytes(five_first, photometric="minisblack"),
             accept, channels="nmi=4,mycn=1,dapi=0"),
        Case("5 channels last (H, W, C), mapped", "five_cl.tif", tiff_bytes(five_last), accept,
             channels="nmi=4,mycn=1,dapi=0"),
        Case("5 channels, map needs channel 7", "five_cf.tif", tiff_bytes(five_first, photometric="minisblack"),
             refuse, "needs channel 7", channels="nmi=4,mycn=1,dapi=7"),
        Case("17 channels", "many.tif", tiff_bytes(np.repeat(u8[None, ..., 2], 17, 0), photometric="minisblack"),
             refuse, "channel axis|at most 16"),
        Case("3 channels first (planar RGB)", "planar.tif", tiff_bytes(np.moveaxis(u8, -1, 0), photometric="rgb",
                                                                       planarconfig="separate"), accept),
        Case("3 channels first, no photometric", "cf.tif", tiff_bytes(np.moveaxis(u8, -1, 0),
                                                                     photometric="minisblack"), accept),
        Case("3 channels last (H, W, 3) pages", "cl.tif", tiff_bytes(u8, photometric="minisblack"), accept),
        Case("Z-stack of 2 RGB planes", "stack.tif", tiff_bytes(np.stack([u8, u8]), photometric="rgb"), refuse,
             "stack"),
        # -- content
        Case("no nuclei (background and noise)", "empty_field.tif", tiff_bytes(noise_image(), photometric="rgb"),
             refuse, "no nuclei found", segment=("accepted", "")),
        Case("black image", "black.tif", tiff_bytes(np.zeros((256, 256, 3), np.uint16), photometric="rgb"), refuse,
             "DAPI channel .* constant"),
        Case("all nuclei (tiled, no background)", "tiled.tif", tiff_bytes(tiled_nuclei(), photometric="rgb"),
             accept),
        Case("one nucleus filling the field", "blob.tif", tiff_bytes(one_blob(), photometric="rgb"), refuse,
             "touch(es)? the image border", segment=("accepted", "")),
    ]

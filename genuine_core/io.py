"""Reading and writing FISH scans.

A scan on disk is a TIFF (8/16/32-bit integer or float; RGB or multi-channel,
channel-first or channel-last) or a PNG/JPEG. :func:`read_scan` maps its channels to
the code's fixed order (NMI, MYCN, DAPI) with an explicit :class:`ChannelMap`,
normalises to float32 in [0, 1], and refuses files it cannot use with an
:class:`~genuine_core.errors.InputError` that names the reason. Image sizes are
checked from the file header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import hashlib
import io as _io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genuine_core.errors import InputError

logger = logging.getLogger(__name__)

ROLES = ("nmi", "mycn", "dapi")
#: largest channel axis length treated as channels (larger axes are spatial)
MAX_CHANNELS = 16

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class ChannelMap:
    """Source channel index for each role (NMI reference, MYCN, DAPI).

    ``None`` for ``nmi`` or ``mycn`` means the file has no such channel; it is
    filled with zeros. DAPI is required (segmentation runs on it).
    """

    nmi: int | None = 0
    mycn: int | None = 1
    dapi: int = 2

    def __post_init__(self) -> None:
        idx = [i for i in (self.nmi, self.mycn, self.dapi) if i is not None]
        if self.dapi is None:
            raise ValueError("channel map needs a DAPI channel")
        for i in idx:
            if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or i < 0:
                raise ValueError(f"channel indices must be non-negative integers, got {i!r}")
        if len(set(idx)) != len(idx):
            raise ValueError(f"channel map uses a source channel twice: {self.text()}")

    @classmethod
    def parse(cls, text: str) -> "ChannelMap":
        """Parse ``"nmi=0,mycn=1,dapi=2"`` (roles may be omitted, except dapi), ``"RGB"`` or ``"BGR"``.

        Raises:
            InputError: the text is not a valid channel map.
        """
        t = text.strip()
        if t.upper() == "RGB":
            return cls(0, 1, 2)
        if t.upper() == "BGR":
            return cls(2, 1, 0)
        values: dict[str, int | None] = {"nmi": None, "mycn": None}
        seen = set()
        for part in filter(None, (p.strip() for p in t.split(","))):
            key, sep, val = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ROLES:
                raise InputError(f"bad channel map {text!r}: expected e.g. 'nmi=0,mycn=1,dapi=2', 'RGB' or 'BGR'")
            if key in seen:
                raise InputError(f"bad channel map {text!r}: {key} given twice")
            seen.add(key)
            try:
                values[key] = int(val)
            except ValueError:
                raise InputError(f"bad channel map {text!r}: {key}={val.strip()!r} is not an integer") from None
        if "dapi" not in values:
            raise InputError(f"bad channel map {text!r}: dapi=<index> is required")
        try:
            return cls(**values)
        except ValueError as exc:
            raise InputError(f"bad channel map {text!r}: {exc}") from None

    def text(self) -> str:
        """The map as ``"nmi=0,mycn=1,dapi=2"`` (missing roles left out); inverse of :meth:`parse`."""
        return ",".join(f"{r}={getattr(self, r)}" for r in ROLES if getattr(self, r) is not None)

    def max_index(self) -> int:
        """Highest source channel index used."""
        return max(i for i in (self.nmi, self.mycn, self.dapi) if i is not None)


RGB = ChannelMap(0, 1, 2)


@dataclass
class Scan:
    """A scan read from disk.

    Attributes:
        image: (H, W, 3) float32 in [0, 1], channels (NMI, MYCN, DAPI).
        path: the file path as given.
        sha256: hex digest of the file bytes.
        channel_map: source channel index per role.
        source_shape: array shape as stored in the file.
        source_dtype: NumPy dtype name as stored in the file.
    """

    image: np.ndarray
    path: str
    sha256: str
    channel_map: ChannelMap
    source_shape: tuple[int, ...]
    source_dtype: str


def read_scan(path, channel_map: ChannelMap | None = None, max_pixels: int = 64_000_000) -> Scan:
    """Read a scan file and map it to (NMI, MYCN, DAPI) float32 [0, 1].

    Args:
        path: TIFF, PNG or JPEG file (format detected from the bytes, not the name).
        channel_map: source channel per role. Required unless the image has exactly
            3 channels (then RGB = NMI, MYCN, DAPI is assumed).
        max_pixels: refuse images with more than this many pixels (H x W), checked
            from the header before decoding.

    Returns:
        Scan with ``image`` (H, W, 3) float32.

    Raises:
        InputError: missing/empty/unreadable file, not an image, truncated, too large,
            wrong channel count, NaN/inf values, constant DAPI channel.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    # Refuse absurd files before reading them whole into memory.
    limit = max(int(max_pixels) * 3 * 8 * 4, 1 << 20)
    if size > limit:
        raise InputError(f"{path}: file is {size / 1e9:.1f} GB, larger than any scan of <= {max_pixels} pixels")
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(_TIFF_MAGIC):
        arr, axes = _decode_tiff(data, str(path), max_pixels)
    elif data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        arr, axes = _decode_pillow(data, str(path), max_pixels)
    else:
        raise InputError(f"{path}: not an image (no TIFF, PNG or JPEG signature)")
    source_shape, source_dtype = tuple(arr.shape), arr.dtype.name
    hwc = _to_hwc(arr, axes, str(path))
    h, w, c = hwc.shape
    if h == 0 or w == 0:
        raise InputError(f"{path}: image has zero size {h}x{w}")
    if h * w > max_pixels:
        raise InputError(f"{path}: image is {h}x{w} = {h * w} pixels, above the limit of {max_pixels}")
    if channel_map is None:
        if c != 3:
            raise InputError(
                f"{path}: image has {c} channel(s); only 3-channel images default to RGB = (NMI, MYCN, DAPI), "
                "give a channel map such as 'nmi=0,mycn=1,dapi=2'"
            )
        channel_map = RGB
    if channel_map.max_index() >= c:
        raise InputError(f"{path}: channel map {channel_map.text()} needs channel {channel_map.max_index()}, "
                         f"but the image has {c} channel(s)")
    norm = _normalise(hwc, str(path))
    out = np.zeros((h, w, 3), dtype=np.float32)
    for k, role in enumerate(ROLES):
        src = getattr(channel_map, role)
        if src is not None:
            out[..., k] = norm[..., src]
    dapi = out[..., 2]
    if float(dapi.max()) <= float(dapi.min()):
        raise InputError(f"{path}: DAPI channel (source channel {channel_map.dapi}) is constant "
                         f"({float(dapi.max()):.3g}); no nuclei can be found")
    logger.debug("read %s: %s %s -> %dx%d, map %s", path, source_shape, source_dtype, h, w, channel_map.text())
    return Scan(out, str(path), digest, channel_map, source_shape, source_dtype)


def _decode_tiff(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, str]:
    """Decode the first series of a TIFF after checking its header; return (array, axes)."""
    import tifffile

    try:
        tif = tifffile.TiffFile(_io.BytesIO(data))
    except Exception as exc:  # tifffile raises many types for corrupt headers
        raise InputError(f"{name}: not a readable TIFF (truncated or corrupt header: {exc})") from None
    with tif:
        if not tif.series:
            raise InputError(f"{name}: TIFF holds no image")
        series = tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        if 0 in shape:
            raise InputError(f"{name}: image has zero size {shape}")
        plane = 1
        for n, ax in zip(shape, axes):
            if ax in "YX":
                plane *= n
        if plane > max_pixels:
            raise InputError(f"{name}: header declares {shape} ({plane} pixels per plane), above the limit of "
                             f"{max_pixels}; refusing to decode")
        if int(np.prod(shape)) > 16 * max_pixels:
            raise InputError(f"{name}: header declares {shape}, too many values; refusing to decode")
        for page in series.pages:
            if page is None:
                continue
            offsets = getattr(page, "dataoffsets", ()) or ()
            counts = getattr(page, "databytecounts", ()) or ()
            for off, cnt in zip(offsets, counts):
                if off + cnt > len(data):
                    raise InputError(f"{name}: truncated TIFF (pixel data ends at byte {off + cnt}, "
                                     f"file has {len(data)})")
        try:
            arr = series.asarray()
        except Exception as exc:
            raise InputError(f"{name}: cannot decode TIFF pixel data (corrupt or truncated: {exc})") from None
    return np.asarray(arr), axes


def _decode_pillow(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, str]:
    """Decode a PNG/JPEG with Pillow after checking its header; return (array, axes)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(_io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name}: image header declares an absurd size ({exc}); refusing to decode") from None
    except Exception as exc:
        raise InputError(f"{name}: not a readable image ({exc})") from None
    w, h = im.size
    if w * h == 0:
        raise InputError(f"{name}: image has zero size {h}x{w}")
    if w * h > max_pixels:
        raise InputError(f"{name}: header declares {h}x{w} = {h * w} pixels, above the limit of {max_pixels}; "
                         "refusing to decode")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Exception as exc:
        raise InputError(f"{name}: cannot decode image data (truncated or corrupt: {exc})") from None
    if im.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")  # alpha / palette are not fluorescence channels
    elif im.mode == "LA":
        im = im.convert("L")
    arr = np.asarray(im)
    return arr, ("YXS" if arr.ndim == 3 else "YX")


def _to_hwc(arr: np.ndarray, axes: str, name: str) -> np.ndarray:
    """Bring a decoded array to (H, W, C) using its axes string (or shape heuristics)."""
    if arr.ndim == len(axes):
        keep = [i for i, (n, ax) in enumerate(zip(arr.shape, axes)) if n > 1 or ax in "YX"]
        arr = arr.reshape([arr.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    else:
        arr = np.squeeze(arr)
        axes = ""
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim != 3:
        raise InputError(f"{name}: image has shape {arr.shape} (axes {axes or '?'}); expected a single 2-D "
                         "image with channels, not a Z/T stack")
    if len(axes) == 3 and axes.index("Y") == len(axes) - 2 and axes.endswith("X"):
        arr = np.moveaxis(arr, 0, -1)  # channel-first (CYX, SYX, ...)
    elif len(axes) == 3 and axes.startswith("YX"):
        pass  # channel-last (YXS)
    else:  # no usable axes: smallest axis is the channel axis when it is first or last
        if arr.shape[0] <= MAX_CHANNELS and arr.shape[0] < min(arr.shape[1:]):
            arr = np.moveaxis(arr, 0, -1)
        elif not (arr.shape[-1] <= MAX_CHANNELS and arr.shape[-1] < min(arr.shape[:2])):
            raise InputError(f"{name}: cannot tell the channel axis of shape {arr.shape}")
    if arr.shape[-1] > MAX_CHANNELS:
        raise InputError(f"{name}: image has {arr.shape[-1]} channels; at most {MAX_CHANNELS} are supported")
    return arr


def _normalise(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale to float32 [0, 1]: integers by their dtype maximum, floats by their maximum when above 1."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = arr.astype(np.float32) / np.float32(info.max)
        return np.clip(out, 0.0, 1.0, out=out) if info.min < 0 else out
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputError(f"{name}: image contains NaN or infinite values")
        np.clip(out, 0.0, None, out=out)
        top = float(out.max()) if out.size else 0.0
        if top > 1.0:
            out /= np.float32(top)
        return out
    raise InputError(f"{name}: unsupported pixel type {arr.dtype}")


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"image must be float in [0, 1], got {img.dtype}")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values")
    return img


def write_scan_tiff(path, image: np.ndarray, compression: str | None = None) -> None:
    """Write an (H, W, 3) float image in [0, 1] as an RGB uint16 TIFF (what a scanner gives).

    Values are clipped to [0, 1] and rounded to 0..65535. Deterministic: the same
    array gives the same bytes.

    Args:
        path: output file.
        image: (H, W, 3) float array, channels (NMI, MYCN, DAPI) = (R, G, B).
        compression: optional tifffile compression name (e.g. ``"zlib"``).
    """
    import tifffile

    img = _check_image(image)
    u16 = np.rint(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tifffile.imwrite(path, u16, photometric="rgb", compression=compression, metadata=None)


def write_masks_tiff(path, masks: np.ndarray, compression: str | None = "zlib") -> None:
    """Write (H, W) integer instance masks as an int32 TIFF (0 = background)."""
    import tifffile

    m = np.asarray(masks)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"masks must be a 2-D integer array, got {m.shape} {m.dtype}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tifffile.imwrite(path, m.astype(np.int32), photometric="minisblack", compression=compression, metadata=None)


def read_masks(path) -> np.ndarray:
    """Read instance masks written by :func:`write_masks_tiff`; returns (H, W) int32.

    Raises:
        InputError: missing/unreadable file, or not a 2-D integer image.
    """
    import tifffile

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        m = tifffile.imread(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable masks TIFF ({exc})") from None
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"{path}: masks must be a 2-D integer image, got {m.shape} {m.dtype}")
    return m.astype(np.int32, copy=False)

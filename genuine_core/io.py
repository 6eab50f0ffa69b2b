"""Reading and writing FISH scans.

A scan on disk is a TIFF (8/16/32-bit integer or float; RGB or multi-channel,
channel-first or channel-last) or a PNG/JPEG. :func:`read_scan` maps its channels to
the code's fixed order (NMI, MYCN, DAPI) with an explicit :class:`ChannelMap`,
normalises to float32 in [0, 1], and refuses files it cannot use with an
:class:`~genuine_core.errors.InputError` that names the reason (one line). The format
comes from the bytes, never the file name. :func:`inspect_scan` reads the header only
(size, pixel type, channel count); every reader checks it before any pixel is decoded,
so a decompression bomb above the pixel limit (``max_pixels``, else
``$GENUINE_MAX_PIXELS``, else 64 million) costs nothing. :func:`decode_scan` does the
same on bytes (uploads).
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genuine_core.errors import InputError

logger = logging.getLogger(__name__)

ROLES = ("nmi", "mycn", "dapi")
#: how messages name the probe channels
PROBE_NAMES = {"nmi": "NMI (reference)", "mycn": "MYCN"}
#: largest channel axis length treated as channels (larger axes are spatial)
MAX_CHANNELS = 16
#: images with more pixels (H x W) are refused from their header, before decoding
DEFAULT_MAX_PIXELS = 64_000_000
#: environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (CLI and dashboard alike)
MAX_PIXELS_ENV = "GENUINE_MAX_PIXELS"

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class ChannelMap:
    """Source channel index for each role (NMI reference, MYCN, DAPI).

    ``None`` for ``nmi`` or ``mycn`` means the file has no such channel; it is
    filled with zeros (enough to segment; scoring refuses it, see :meth:`require_probes`).
    DAPI is required (segmentation runs on it).
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
    def parse(cls, text: str) -> ChannelMap:
        """Parse ``"nmi=0,mycn=1,dapi=2"`` (roles may be omitted, except dapi), ``"RGB"`` or ``"BGR"``.

        Raises:
            InputError: the text is not a valid channel map.
        """
        t = text.strip()
        if t.upper() in PRESETS:
            return PRESETS[t.upper()]
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

    def describe(self) -> str:
        """:meth:`text`, with the preset's name when the map is one: ``"nmi=2,mycn=1,dapi=0 (BGR)"``."""
        name = next((n for n, m in PRESETS.items() if m == self), None)
        return f"{self.text()} ({name})" if name else self.text()

    def max_index(self) -> int:
        """Highest source channel index used."""
        return max(i for i in (self.nmi, self.mycn, self.dapi) if i is not None)

    def require_probes(self) -> None:
        """Refuse a map without both probe channels: MNA is called from NMI and MYCN signals.

        Raises:
            InputError: NMI or MYCN is not mapped.
        """
        missing = [PROBE_NAMES[r] for r in ("nmi", "mycn") if getattr(self, r) is None]
        if missing:
            raise InputError(f"channel map {self.text()} has no {' and no '.join(missing)} channel: MNA is "
                             "scored from both probes, map them too (e.g. nmi=0,mycn=1,dapi=2)")


#: channel maps known by name (``ChannelMap.parse("BGR")``)
PRESETS = {"RGB": ChannelMap(0, 1, 2), "BGR": ChannelMap(2, 1, 0)}
RGB = PRESETS["RGB"]


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
        pixel_sha256: :func:`pixel_fingerprint` of the decoded pixels, before channel mapping ("" unknown).
    """

    image: np.ndarray
    path: str
    sha256: str
    channel_map: ChannelMap
    source_shape: tuple[int, ...]
    source_dtype: str
    pixel_sha256: str = ""


#: tag hashed before the pixels by :func:`pixel_fingerprint` (a new canonical layout needs a new tag)
_PIXEL_TAG = "genuine pixels v1"


def pixel_fingerprint(hwc: np.ndarray) -> str:
    """Hex sha256 of a decoded image's content: its (H, W, C) shape, dtype and values, C-ordered and
    little-endian, as stored in the file (before channel mapping and scaling). The same image saved in
    another format, compression or with other metadata has the same fingerprint; a lossy re-save does not."""
    arr = np.asarray(hwc)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    digest = hashlib.sha256(f"{_PIXEL_TAG} {tuple(arr.shape)} {arr.dtype.str}\n".encode())
    digest.update(memoryview(arr.reshape(-1).view(np.uint8)))
    return digest.hexdigest()


def fingerprint_file(path, max_pixels: int | None = None) -> tuple[str, str]:
    """``(sha256 of the bytes, pixel_fingerprint)`` of a scan file, whatever its channels.

    Raises:
        InputError: the file cannot be read or decoded (see :func:`read_scan`).
    """
    limit = max_pixels_limit(max_pixels)
    data, name = _source_bytes(Path(path), limit)
    header, handle = _header(data, name, limit)
    try:
        arr = _decode(handle, header, name)
    finally:
        _close(handle, header)
    return hashlib.sha256(data).hexdigest(), pixel_fingerprint(_to_hwc(arr, header, name))


def check_scorable(scan: Scan) -> None:
    """Refuse a scan whose probes cannot be counted: a probe not mapped, or a mapped probe channel blank.

    Raises:
        InputError: naming the file and the channel.
    """
    try:
        scan.channel_map.require_probes()
    except InputError as exc:
        raise InputError(f"{scan.path}: {exc}") from None
    for k, role in enumerate(("nmi", "mycn")):
        channel = scan.image[..., k]
        if float(channel.max()) <= float(channel.min()):
            raise InputError(f"{scan.path}: {PROBE_NAMES[role]} channel (source channel "
                             f"{getattr(scan.channel_map, role)}) is blank ({float(channel.max()):.3g} everywhere): "
                             "no signals to count; check the channel map")


@dataclass(frozen=True)
class ScanHeader:
    """What a scan file declares, read from its header without decoding any pixel.

    Attributes:
        format: ``"tiff"``, ``"png"`` or ``"jpeg"``.
        shape: array shape as stored (TIFF: the first series; Pillow: after mode conversion).
        axes: axis letters of ``shape`` (tifffile's convention: Y, X, S samples, C channels, ...).
        dtype: NumPy dtype name of the stored values.
        height, width: image size in pixels.
        channels: number of channels after bringing the image to (H, W, C).
        channel_axis: where the channels are stored: ``"first"``, ``"last"`` or ``"none"`` (one channel).
    """

    format: str
    shape: tuple[int, ...]
    axes: str
    dtype: str
    height: int
    width: int
    channels: int
    channel_axis: str


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` when given, else ``$GENUINE_MAX_PIXELS``, else the default.

    Raises:
        InputError: the limit (argument or environment) is not a positive integer.
    """
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(text)
        except ValueError:
            raise InputError(f"${MAX_PIXELS_ENV}={text!r} is not an integer number of pixels") from None
        if max_pixels < 1:  # named as set, as a text that is no number is
            raise InputError(f"${MAX_PIXELS_ENV}={text!r} must be a positive number of pixels")
    if isinstance(max_pixels, bool) or int(max_pixels) < 1:
        raise InputError(f"pixel limit must be a positive integer, got {max_pixels!r}")
    return int(max_pixels)


def inspect_scan(source, max_pixels: int | None = None, name: str | None = None) -> ScanHeader:
    """Read a scan's header only: format, stored shape and dtype, size and channel count.

    Nothing is decoded, so this is cheap even for a decompression bomb, which it refuses.

    Args:
        source: file path, or the file's bytes.
        max_pixels: refuse images with more than this many pixels (H x W); None: see
            :func:`max_pixels_limit`.
        name: file name used in messages (default: the path, or ``"scan"`` for bytes).

    Raises:
        InputError: not an image, unreadable or truncated header, too large, or a layout
            that is not a single 2-D image with at most :data:`MAX_CHANNELS` channels.
    """
    limit = max_pixels_limit(max_pixels)
    data, default = _source_bytes(source, limit)
    header, handle = _header(data, name or default, limit)
    _close(handle, header)
    return header


def channel_count(source) -> int:
    """Channels of a scan file or its bytes (from the header; see :func:`inspect_scan`)."""
    return inspect_scan(source).channels


def read_scan(path, channel_map: ChannelMap | None = None, max_pixels: int | None = None) -> Scan:
    """Read a scan file and map it to (NMI, MYCN, DAPI) float32 [0, 1].

    Args:
        path: TIFF, PNG or JPEG file (format detected from the bytes, not the name).
        channel_map: source channel per role. Required unless the image has exactly
            3 channels (then RGB = NMI, MYCN, DAPI is assumed).
        max_pixels: refuse images with more than this many pixels (H x W), checked
            from the header before decoding. None: ``$GENUINE_MAX_PIXELS`` or 64 million.

    Returns:
        Scan with ``image`` (H, W, 3) float32.

    Raises:
        InputError: missing/empty/unreadable file, not an image, truncated, too large,
            wrong channel count, NaN/inf values, constant DAPI channel.
    """
    limit = max_pixels_limit(max_pixels)
    data, name = _source_bytes(Path(path), limit)
    scan = decode_scan(data, name, channel_map, limit)
    scan.path = str(path)
    return scan


def decode_scan(data: bytes, name: str = "scan", channel_map: ChannelMap | None = None,
                max_pixels: int | None = None) -> Scan:
    """:func:`read_scan` on a file's bytes (e.g. an upload); ``name`` is used in messages and as ``path``.

    Scaling to [0, 1]: integers of up to 16 bits by their type's maximum (255, 65535, ...),
    so a 12-bit camera's data in 16-bit files stays dim but exact (every later step
    normalises per scan); wider integers by 65535 when their values fit in 16 bits,
    else by their maximum; floats are kept when their maximum is in [2^-16, 1], else
    divided by it; negative values are clipped to 0. NaN or infinite values are refused.

    Raises:
        InputError: see :func:`read_scan`.
    """
    limit = max_pixels_limit(max_pixels)
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    header, handle = _header(data, name, limit)
    try:
        if channel_map is None:
            if header.channels < 3:
                # a map cannot invent channels: at most DAPI (and one probe) can be read from such a file
                raise InputError(
                    f"{name}: image has {header.channels} channel(s); a MYCN FISH scan needs 3 (NMI reference, "
                    "MYCN, DAPI), e.g. an RGB image or a multi-channel TIFF"
                )
            if header.channels != 3:
                raise InputError(
                    f"{name}: image has {header.channels} channel(s); only 3-channel images default to RGB = "
                    "(NMI, MYCN, DAPI), give a channel map such as 'nmi=0,mycn=1,dapi=2'"
                )
            channel_map = RGB
        if channel_map.max_index() >= header.channels:
            raise InputError(f"{name}: channel map {channel_map.text()} needs channel {channel_map.max_index()}, "
                             f"but the image has {header.channels} channel(s)")
        arr = _decode(handle, header, name)
    finally:
        _close(handle, header)
    hwc = _to_hwc(arr, header, name)
    pixels = pixel_fingerprint(hwc)
    norm = _normalise(hwc, name)
    h, w = header.height, header.width
    out = np.zeros((h, w, 3), dtype=np.float32)
    for k, role in enumerate(ROLES):
        src = getattr(channel_map, role)
        if src is not None:
            out[..., k] = norm[..., src]
    dapi = out[..., 2]
    if float(dapi.max()) <= float(dapi.min()):
        raise InputError(f"{name}: DAPI channel (source channel {channel_map.dapi}) is constant "
                         f"({float(dapi.max()):.3g}); no nuclei can be found")
    logger.debug("read %s: %s %s -> %dx%d, map %s", name, header.shape, header.dtype, h, w, channel_map.text())
    return Scan(out, name, digest, channel_map, header.shape, header.dtype, pixels)


def _source_bytes(source, max_pixels: int) -> tuple[bytes, str]:
    """The bytes of ``source`` (a path, or bytes) and the name used in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "scan"
    p = Path(source)
    if not p.exists():
        raise InputError(f"{source}: no such file")
    if not p.is_file():
        raise InputError(f"{source}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{source}: empty file (0 bytes)")
    # Refuse absurd files before reading them whole into memory (largest: float64, 16 channels).
    limit = max(max_pixels * MAX_CHANNELS * 8 + (1 << 20), 1 << 20)
    if size > limit:
        raise InputError(f"{source}: file is {size / 1e9:.1f} GB, larger than any scan of <= {max_pixels} pixels")
    try:
        return p.read_bytes(), str(source)
    except OSError as exc:
        raise InputError(f"{source}: cannot read file ({exc.strerror or exc})") from None


def _header(data: bytes, name: str, max_pixels: int):
    """(ScanHeader, decoder handle) after every header check; no pixel is decoded here."""
    if data.startswith(_TIFF_MAGIC):
        return _tiff_header(data, name, max_pixels)
    if data.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        return _pillow_header(data, name, max_pixels)
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    raise InputError(f"{name}: not an image (no TIFF, PNG or JPEG signature)")


class _QuietTifffile(logging.Filter):
    """Keeps tifffile's warnings about a corrupt file off the console (our InputError says it in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger.debug("tifffile: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_tifffile():
    log = logging.getLogger("tifffile")
    f = _QuietTifffile()
    log.addFilter(f)
    try:
        yield
    finally:
        log.removeFilter(f)


def _tiff_header(data: bytes, name: str, max_pixels: int):
    import tifffile

    with _quiet_tifffile():
        try:
            tif = tifffile.TiffFile(_io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt headers
            raise InputError(f"{name}: not a readable TIFF (truncated or corrupt header: {_short(exc)})") from None
        try:
            series = tif.series
            if not series:
                raise InputError(f"{name}: not a readable TIFF (no image directory in it)")
            series = series[0]
            shape, axes, dtype = tuple(int(n) for n in series.shape), str(series.axes), series.dtype
            if 0 in shape:
                raise InputError(f"{name}: image has zero size {shape}")
            plane = 1
            for n, ax in zip(shape, axes):
                if ax in "YX":
                    plane *= n
            if plane > max_pixels:
                raise InputError(f"{name}: header declares {shape} ({plane} pixels per plane), above the limit "
                                 f"of {max_pixels}; refusing to decode")
            if int(np.prod(shape, dtype=np.float64)) > MAX_CHANNELS * max_pixels:
                raise InputError(f"{name}: header declares {shape}, too many values; refusing to decode")
            if dtype is None:
                raise InputError(f"{name}: unsupported TIFF sample format")
            for page in series.pages:
                if page is None:
                    continue
                offsets = getattr(page, "dataoffsets", ()) or ()
                counts = getattr(page, "databytecounts", ()) or ()
                for off, cnt in zip(offsets, counts):
                    if off + cnt > len(data):
                        raise InputError(f"{name}: truncated TIFF (pixel data ends at byte {off + cnt}, "
                                         f"file has {len(data)})")
        except InputError:
            tif.close()
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt IFD can fail while the series is built
            tif.close()
            raise InputError(f"{name}: not a readable TIFF (corrupt image directory: {_short(exc)})") from None
    try:
        header = _make_header("tiff", shape, axes, np.dtype(dtype).name, name, max_pixels)
    except BaseException:
        tif.close()
        raise
    return header, (tif, series)


def _pillow_header(data: bytes, name: str, max_pixels: int):
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(_io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own limit (2 x MAX_IMAGE_PIXELS) hit first
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{m.group(1)} pixels" if m else "an absurd size"
        raise InputError(f"{name}: header declares {size}, above the limit of {max_pixels}; "
                         "refusing to decode") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (corrupt PNG/JPEG header)") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
        raise InputError(f"{name}: not a readable image ({_short(exc)})") from None
    w, h = im.size
    if w * h == 0:
        raise InputError(f"{name}: image has zero size {h}x{w}")
    if w * h > max_pixels:
        raise InputError(f"{name}: header declares {h}x{w} = {h * w} pixels, above the limit of {max_pixels}; "
                         "refusing to decode")
    mode = _pillow_mode(im.mode)
    shape, dtype = _PILLOW_LAYOUT.get(mode, ((3,), "uint8"))
    fmt = "png" if data.startswith(_PNG_MAGIC) else "jpeg"
    if mode == "I;16B":
        dtype = ">u2"
    header = _make_header(fmt, (h, w) + shape, "YXS"[: 2 + len(shape)], np.dtype(dtype).name, name, max_pixels)
    return header, im


#: Pillow modes read as they are: mode -> (trailing shape, dtype); other modes become RGB or L
_PILLOW_LAYOUT = {"1": ((), "bool"), "L": ((), "uint8"), "I": ((), "int32"), "I;16": ((), "uint16"),
                  "I;16L": ((), "uint16"), "I;16B": ((), "uint16"), "I;16N": ((), "uint16"),
                  "F": ((), "float32"), "RGB": ((3,), "uint8")}


def _pillow_mode(mode: str) -> str:
    """The mode an image is converted to before reading: alpha, palettes and colour spaces become L or RGB."""
    if mode in _PILLOW_LAYOUT:
        return mode
    return "L" if mode in ("LA", "La") else "RGB"


def _make_header(fmt: str, shape: tuple[int, ...], axes: str, dtype: str, name: str, max_pixels: int) -> ScanHeader:
    if np.dtype(dtype).kind not in "buif":
        raise InputError(f"{name}: unsupported pixel type {dtype}; expected integer or real-valued pixels")
    squeezed, _, where = _layout(shape, axes, name)
    if where == "first":
        c, h, w = squeezed
    elif where == "last":
        h, w, c = squeezed
    else:
        (h, w), c = squeezed, 1
    if h * w > max_pixels:
        raise InputError(f"{name}: image is {h}x{w} = {h * w} pixels, above the limit of {max_pixels}; "
                         "refusing to decode")
    return ScanHeader(fmt, tuple(shape), axes, dtype, int(h), int(w), int(c), where)


def _layout(shape: tuple[int, ...], axes: str, name: str) -> tuple[tuple[int, ...], str, str]:
    """How to read ``shape`` as one 2-D image: (squeezed shape, its axes, channel axis first/last/none).

    Length-1 axes other than Y and X are dropped. A third axis named S (samples) or C
    (channels) beside Y, X is the channel axis. An unnamed or other axis (tifffile's Q, I,
    Z, ...) is the channel axis when it is first or last and shorter than both others
    (e.g. a NumPy (H, W, 5) array saved without metadata is stored as H pages of W x 5).
    """
    if len(axes) == len(shape):
        keep = [i for i, (n, ax) in enumerate(zip(shape, axes)) if n > 1 or ax in "YX"]
        squeezed = tuple(shape[i] for i in keep)
        ax = "".join(axes[i] for i in keep)
    else:
        squeezed, ax = tuple(n for n in shape if n > 1), ""
    if len(squeezed) == 2:
        return squeezed, ax, "none"
    if len(squeezed) != 3:
        raise InputError(f"{name}: image has shape {tuple(shape)} (axes {axes or '?'}); expected a single 2-D "
                         "image with channels, not a Z/T stack")
    if len(ax) == 3 and ax.endswith("YX") and ax[0] in "SC":
        where = "first"
    elif len(ax) == 3 and ax.startswith("YX") and ax[2] in "SC":
        where = "last"
    elif squeezed[0] <= MAX_CHANNELS and squeezed[0] < min(squeezed[1:]):
        where = "first"
    elif squeezed[-1] <= MAX_CHANNELS and squeezed[-1] < min(squeezed[:2]):
        where = "last"
    else:
        raise InputError(f"{name}: cannot tell the channel axis of shape {tuple(shape)} (axes {axes or '?'}); "
                         f"expected (C, H, W) or (H, W, C) with at most {MAX_CHANNELS} channels")
    channels = squeezed[0] if where == "first" else squeezed[-1]
    if channels > MAX_CHANNELS:
        raise InputError(f"{name}: image has {channels} channels; at most {MAX_CHANNELS} are supported")
    return squeezed, ax, where


def _decode(handle, header: ScanHeader, name: str) -> np.ndarray:
    """Decode the pixels of a checked header (tifffile series or Pillow image); returns the stored array."""
    if header.format == "tiff":
        tif, series = handle
        with tif, _quiet_tifffile():
            try:
                arr = series.asarray(maxworkers=1)
            except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
                raise InputError(f"{name}: cannot decode TIFF pixel data (corrupt or truncated: "
                                 f"{_short(exc)})") from None
    else:
        from PIL import Image

        im = handle
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                mode = _pillow_mode(im.mode)
                if mode != im.mode:
                    im = im.convert(mode)
                arr = np.asarray(im)
        except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
            raise InputError(f"{name}: cannot decode image data (truncated or corrupt: {_short(exc)})") from None
    arr = np.asarray(arr)
    if tuple(arr.shape) != header.shape:
        raise InputError(f"{name}: decoded pixel data has shape {arr.shape}, header declares {header.shape}")
    return arr


def _close(handle, header: ScanHeader) -> None:
    """Release a decoder handle from :func:`_header` (closing twice is harmless)."""
    (handle[0] if header.format == "tiff" else handle).close()


def _to_hwc(arr: np.ndarray, header: ScanHeader, name: str) -> np.ndarray:
    """Bring a decoded array to (H, W, C) as planned from its header."""
    squeezed, _, where = _layout(header.shape, header.axes, name)
    arr = arr.reshape(squeezed)
    if where == "none":
        return arr[..., None]
    return np.moveaxis(arr, 0, -1) if where == "first" else arr


#: floats whose maximum is below this are treated as unscaled and divided by their maximum
_MIN_FLOAT_TOP = 1.0 / 65536.0


def _normalise(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale to float32 [0, 1] (see :func:`decode_scan` for the rules)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        scale = float(info.max)
        if info.bits > 16:  # 32/64-bit integers: 16-bit data in a wide container, else relative to the maximum
            top = float(arr.max())
            scale = max(65535.0, top)
        out = arr.astype(np.float32)
        out /= np.float32(scale)
        return np.clip(out, 0.0, 1.0, out=out)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            raise InputError(f"{name}: image contains NaN or infinite values ({int((~finite).sum())} of {arr.size} "
                             "values); refusing to guess them")
        top = float(arr.max())
        if top > 1.0 or 0.0 < top < _MIN_FLOAT_TOP:
            pos = np.clip(arr, 0.0, None)  # negatives first: -1e30 / 1e-9 would overflow
            pos /= top  # before the cast: float64 values may not fit float32
            out = pos.astype(np.float32)
        else:
            out = arr.astype(np.float32)
        return np.clip(out, 0.0, 1.0, out=out)
    raise InputError(f"{name}: unsupported pixel type {arr.dtype}")


def _short(exc: Exception, limit: int = 160) -> str:
    """An exception as one short line for a user message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
        raise InputError(f"{path}: not a readable masks TIFF ({exc})") from None
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"{path}: masks must be a 2-D integer image, got {m.shape} {m.dtype}")
    return m.astype(np.int32, copy=False)

"""genuine_core.io: reading layouts right and refusing bad files with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from genuine_core.errors import InputError
from genuine_core.io import ChannelMap, read_masks, read_scan, write_masks_tiff, write_scan_tiff


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(1)
    return rng.random((40, 56, 3)).astype(np.float32)


def test_channel_map_parse_roundtrip():
    assert ChannelMap.parse("nmi=0,mycn=1,dapi=2") == ChannelMap(0, 1, 2)
    assert ChannelMap.parse("RGB") == ChannelMap(0, 1, 2)
    assert ChannelMap.parse("bgr") == ChannelMap(2, 1, 0)
    cm = ChannelMap.parse(" dapi=3, mycn=0 ")
    assert (cm.nmi, cm.mycn, cm.dapi) == (None, 0, 3)
    assert ChannelMap.parse(cm.text()) == cm


@pytest.mark.parametrize("text", ["nmi=0,mycn=1", "nmi=0,mycn=0,dapi=1", "nmi=a,dapi=1", "foo=1,dapi=0",
                                  "dapi=-1", "dapi=1,dapi=2", "XYZ"])
def test_channel_map_parse_rejects(text):
    with pytest.raises(InputError):
        ChannelMap.parse(text)


def test_write_read_roundtrip_uint16(tmp_path, rgb):
    path = tmp_path / "scan.tif"
    write_scan_tiff(path, rgb)
    scan = read_scan(path)
    assert scan.image.dtype == np.float32 and scan.image.shape == (40, 56, 3)
    assert scan.source_dtype == "uint16" and scan.source_shape == (40, 56, 3)
    np.testing.assert_allclose(scan.image, rgb, atol=1 / 65535)
    assert scan.channel_map == ChannelMap(0, 1, 2)
    assert len(scan.sha256) == 64
    write_scan_tiff(tmp_path / "again.tif", rgb)  # deterministic bytes
    assert (tmp_path / "again.tif").read_bytes() == path.read_bytes()


def test_reads_uint8_channel_first_and_float(tmp_path, rgb):
    u8 = (rgb * 255).round().astype(np.uint8)
    tifffile.imwrite(tmp_path / "cf.tif", np.moveaxis(u8, -1, 0), photometric="rgb", planarconfig="separate")
    scan = read_scan(tmp_path / "cf.tif")
    assert scan.source_shape == (3, 40, 56)
    np.testing.assert_allclose(scan.image, u8 / 255.0, atol=1e-6)
    # one grey page per channel (ImageJ/OME style channel stack)
    tifffile.imwrite(tmp_path / "pages.tif", np.moveaxis(u8, -1, 0), photometric="minisblack")
    np.testing.assert_allclose(read_scan(tmp_path / "pages.tif").image, u8 / 255.0, atol=1e-6)
    tifffile.imwrite(tmp_path / "f.tif", rgb * 1000.0, photometric="rgb")  # float above 1: scaled by its max
    np.testing.assert_allclose(read_scan(tmp_path / "f.tif").image, rgb / rgb.max(), rtol=1e-5)
    tifffile.imwrite(tmp_path / "f01.tif", rgb.astype(np.float64), photometric="rgb")  # float already in [0, 1]: kept
    np.testing.assert_allclose(read_scan(tmp_path / "f01.tif").image, rgb, rtol=1e-6)


def test_channel_map_applies_to_multichannel(tmp_path, rgb):
    five = np.zeros((40, 56, 5), np.uint16)
    five[..., 4] = (rgb[..., 0] * 65535).astype(np.uint16)  # NMI in channel 4
    five[..., 1] = (rgb[..., 1] * 65535).astype(np.uint16)
    five[..., 0] = (rgb[..., 2] * 65535).astype(np.uint16)  # DAPI in channel 0
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputError, match="5 channel"):
        read_scan(tmp_path / "five.tif")
    scan = read_scan(tmp_path / "five.tif", ChannelMap.parse("nmi=4,mycn=1,dapi=0"))
    np.testing.assert_allclose(scan.image, rgb, atol=1 / 65535)
    with pytest.raises(InputError, match="needs channel 7"):
        read_scan(tmp_path / "five.tif", ChannelMap(nmi=7, mycn=1, dapi=0))


def test_two_channel_needs_map_and_missing_role_is_zero(tmp_path, rgb):
    two = (np.moveaxis(rgb[..., 1:], -1, 0) * 255).astype(np.uint8)  # (2, H, W): MYCN, DAPI
    tifffile.imwrite(tmp_path / "two.tif", two, photometric="minisblack")
    with pytest.raises(InputError, match="2 channel"):
        read_scan(tmp_path / "two.tif")
    scan = read_scan(tmp_path / "two.tif", ChannelMap.parse("mycn=0,dapi=1"))
    assert scan.image[..., 0].max() == 0.0
    np.testing.assert_allclose(scan.image[..., 2], two[1] / 255.0, atol=1e-6)


def test_png_and_bgr(tmp_path, rgb):
    u8 = (rgb * 255).round().astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "scan.png")
    np.testing.assert_allclose(read_scan(tmp_path / "scan.png").image, u8 / 255.0, atol=1e-6)
    bgr = read_scan(tmp_path / "scan.png", ChannelMap.parse("BGR")).image
    np.testing.assert_allclose(bgr[..., 0], u8[..., 2] / 255.0, atol=1e-6)
    smooth = np.repeat(np.linspace(0, 255, 56, dtype=np.uint8)[None, :, None], 40, axis=0).repeat(3, axis=2)
    Image.fromarray(smooth).save(tmp_path / "scan.jpg", quality=95)  # lossy: compare a smooth image
    assert np.abs(read_scan(tmp_path / "scan.jpg").image - smooth / 255.0).max() < 0.03


def test_grayscale_png_needs_map(tmp_path, rgb):
    Image.fromarray((rgb[..., 2] * 255).astype(np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(InputError, match="1 channel"):
        read_scan(tmp_path / "g.png")
    assert read_scan(tmp_path / "g.png", ChannelMap.parse("dapi=0")).image[..., 2].max() > 0


# --- bad inputs -------------------------------------------------------------------


def test_text_file_named_tif(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("this is not an image\n")
    with pytest.raises(InputError, match="not an image"):
        read_scan(p)


def test_empty_and_missing_file(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_scan(tmp_path / "empty.tif")
    with pytest.raises(InputError, match="no such file"):
        read_scan(tmp_path / "nope.tif")


def test_truncated_tiff(tmp_path, rgb):
    write_scan_tiff(tmp_path / "full.tif", rgb)
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_scan(tmp_path / "cut.tif")
    (tmp_path / "head.tif").write_bytes(data[:6])  # only the magic and part of the header
    with pytest.raises(InputError, match="truncated|corrupt"):
        read_scan(tmp_path / "head.tif")


def test_truncated_png(tmp_path, rgb):
    Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|corrupt"):
        read_scan(tmp_path / "cut.png")


def test_all_black_and_constant_dapi(tmp_path):
    write_scan_tiff(tmp_path / "black.tif", np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputError, match="DAPI"):
        read_scan(tmp_path / "black.tif")
    img = np.zeros((32, 32, 3), np.float32)
    img[..., 0] = np.linspace(0, 1, 32)
    img[..., 2] = 0.5
    write_scan_tiff(tmp_path / "flat.tif", img)
    with pytest.raises(InputError, match="DAPI channel .* constant"):
        read_scan(tmp_path / "flat.tif")


def test_nan_float_refused(tmp_path, rgb):
    bad = rgb.copy()
    bad[3, 4, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad, photometric="rgb")
    with pytest.raises(InputError, match="NaN"):
        read_scan(tmp_path / "nan.tif")


def test_decompression_bomb_refused_from_header(tmp_path, bomb_tiff):
    p = tmp_path / "bomb.tif"
    p.write_bytes(bomb_tiff(60_000, 60_000))
    assert p.stat().st_size < 10_000
    with pytest.raises(InputError, match="refusing to decode"):
        read_scan(p)  # would need 10.8 GB if decoded


def test_max_pixels_applies_to_png(tmp_path, rgb):
    Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(InputError, match="above the limit"):
        read_scan(tmp_path / "s.png", max_pixels=100)


def test_masks_roundtrip(tmp_path, toy_scan):
    write_masks_tiff(tmp_path / "m.tif", toy_scan.masks)
    back = read_masks(tmp_path / "m.tif")
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, toy_scan.masks)


def test_real_image_reads(real_image_path):
    scan = read_scan(real_image_path)
    assert scan.image.shape == (1000, 1000, 3) and scan.source_dtype == "uint8"
    assert 0.0 <= scan.image.min() and scan.image.max() <= 1.0
    assert scan.image[..., 2].std() > 0.02  # DAPI carries structure

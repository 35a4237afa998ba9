"""read_image dispatch, 2D raster reading, and bad-input handling."""

from __future__ import annotations

import gzip
import shutil
import struct
import time
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from meddx.errors import CorruptFileError, ImageContentError, InputError
from meddx.io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, is_readable_path, read_image

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------ value-exact reading of every mode


def test_grey_png_keeps_values(tmp_path):
    a = RNG.integers(0, 256, (17, 23), dtype=np.uint8)
    p = tmp_path / "g.png"
    Image.fromarray(a).save(p)
    img = read_image(p)
    assert img.array.shape == (1, 17, 23) and img.array.dtype == np.float32
    np.testing.assert_array_equal(img.array[0], a)
    assert img.spacing is None
    assert img.meta == {"format": "png", "mode": "L", "source_dtype": "uint8"}


def test_16bit_grey_png_keeps_full_range(tmp_path):
    a = (RNG.integers(0, 65536, (9, 11))).astype(np.uint16)
    a[0, 0] = 65535
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    img = read_image(p)
    np.testing.assert_array_equal(img.array[0], a)
    assert img.array.max() == 65535
    assert img.meta["source_dtype"] == "uint16"


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_is_three_channels_alpha_dropped(tmp_path, mode):
    a = RNG.integers(0, 256, (8, 6, len(mode)), dtype=np.uint8)
    p = tmp_path / "c.png"
    Image.fromarray(a, mode).save(p)
    img = read_image(p)
    assert img.array.shape == (3, 8, 6)
    np.testing.assert_array_equal(img.array, np.moveaxis(a[..., :3], -1, 0))
    assert img.meta["mode"] == mode


def test_palette_grey_is_one_channel_and_colour_three(tmp_path):
    idx = RNG.integers(0, 4, (5, 7), dtype=np.uint8)
    grey = Image.fromarray(idx, "P")
    grey.putpalette([0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255])
    grey.save(tmp_path / "pg.png")
    g = read_image(tmp_path / "pg.png")
    assert g.array.shape == (1, 5, 7)
    np.testing.assert_array_equal(g.array[0], np.array([0, 80, 160, 255])[idx])
    assert g.meta["palette"] == "grey"

    colour = Image.fromarray(idx, "P")
    pal = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    colour.putpalette(pal.ravel().tolist())
    colour.save(tmp_path / "pc.png")
    c = read_image(tmp_path / "pc.png")
    assert c.array.shape == (3, 5, 7)
    np.testing.assert_array_equal(c.array, np.moveaxis(pal[idx], -1, 0))


def test_one_bit_png_reads_as_zero_one(tmp_path):
    a = RNG.integers(0, 2, (6, 9)).astype(bool)
    Image.fromarray(a).save(tmp_path / "m.png")
    img = read_image(tmp_path / "m.png")
    assert img.meta["mode"] == "1" and img.array.shape == (1, 6, 9)
    np.testing.assert_array_equal(img.array[0], a.astype(np.float32))


def test_bmp_and_jpeg(tmp_path):
    a = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "x.bmp").array, np.moveaxis(a, -1, 0))
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    Image.fromarray(smooth).save(tmp_path / "x.jpg", quality=95)
    j = read_image(tmp_path / "x.jpg")
    assert j.array.shape == (1, 32, 32) and j.meta["format"] == "jpeg"
    assert np.abs(j.array[0] - smooth).max() < 8


def test_exif_rotation_cmyk_and_grey_alpha(tmp_path):
    a = np.zeros((10, 30), np.uint8)
    a[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    r = read_image(tmp_path / "rot.jpg")
    assert r.array.shape == (1, 30, 10) and r.meta["exif_orientation"] == 6
    assert r.array[0, :5].mean() > 200 and r.array[0, -5:].mean() < 50  # left band is now on top
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    c = read_image(tmp_path / "cmyk.jpg")
    assert c.array.shape == (3, 3, 4) and c.meta["converted_from"] == "CMYK"
    assert c.array[0].mean() > 200 and c.array[1].mean() < 60  # red
    la = np.stack([RNG.integers(0, 256, (5, 6)), np.full((5, 6), 7)], -1).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    g = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(g.array, la[None, ..., 0])


def test_16bit_rgb_tiff_is_not_truncated(tmp_path):
    a = RNG.integers(0, 65536, (10, 12, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", a, photometric="rgb")
    img = read_image(tmp_path / "rgb16.tif")
    assert img.array.shape == (3, 10, 12)
    np.testing.assert_array_equal(img.array, np.moveaxis(a, -1, 0))
    assert img.meta["source_dtype"] == "uint16"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_rgb_tiff_orientation_as_8bit(tmp_path, orientation):
    a = RNG.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb16.tif", a.astype(np.uint16), photometric="rgb",
                     extratags=[(274, "H", 1, orientation, True)])
    tifffile.imwrite(tmp_path / "rgb8.tif", a, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    eight, sixteen = read_image(tmp_path / "rgb8.tif"), read_image(tmp_path / "rgb16.tif")
    assert sixteen.meta["mode"].startswith("tifffile") and not eight.meta["mode"].startswith("tifffile")
    assert sixteen.array.shape == ((3, 12, 10) if orientation >= 5 else (3, 10, 12))
    np.testing.assert_array_equal(sixteen.array, eight.array)
    assert sixteen.meta.get("exif_orientation", 1) == orientation  # Pillow rotates 8-bit TIFFs as it loads them


def test_float_and_16bit_grey_tiff(tmp_path):
    f = RNG.normal(size=(7, 5)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", f)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff").array[0], f)
    u = RNG.integers(0, 65536, (7, 5)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "u.tif", u)
    np.testing.assert_array_equal(read_image(tmp_path / "u.tif").array[0], u)


def test_32bit_unsigned_grey_tiff_is_not_wrapped(tmp_path):
    # Pillow opens it as signed 32-bit ("I"): 2**31 and above came back negative.
    u = np.array([[0, 1, 2**31, 2**32 - 1], [5, 6, 7, 3_000_000_000]], np.uint32)
    tifffile.imwrite(tmp_path / "u32.tif", u)
    img = read_image(tmp_path / "u32.tif")
    np.testing.assert_array_equal(img.array[0], u.astype(np.float32))
    assert img.meta["source_dtype"] == "uint32"
    i = np.array([[0, -1, -2**31, 2**31 - 1]], np.int32)  # signed stays with Pillow, and right
    tifffile.imwrite(tmp_path / "i32.tif", i)
    np.testing.assert_array_equal(read_image(tmp_path / "i32.tif").array[0], i.astype(np.float32))


def test_16bit_miniswhite_tiff_is_inverted_like_8bit(tmp_path):
    # Pillow inverts 8-bit MINISWHITE but returned 16-bit MINISWHITE as stored: bone black on one
    # file and white on the other, without a word.
    u = RNG.integers(0, 65536, (7, 5)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "w16.tif", u, photometric="miniswhite")
    img = read_image(tmp_path / "w16.tif")
    np.testing.assert_array_equal(img.array[0], 65535 - u.astype(np.float32))
    assert img.meta["miniswhite_inverted"] and img.meta["source_dtype"] == "uint16"
    tifffile.imwrite(tmp_path / "w8.tif", (u >> 8).astype(np.uint8), photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "w8.tif").array[0], 255 - (u >> 8).astype(np.float32))


def test_tiff_stack_is_refused(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, RNG.integers(0, 255, (4, 8, 8), dtype=np.uint8), photometric="minisblack")
    with pytest.raises(ImageContentError, match="stack.tif"):
        read_image(p)


def test_complex_tiff_is_refused(tmp_path):
    """Was read as its real part, with numpy's ComplexWarning printed on stderr for every read."""
    p = tmp_path / "phase.tif"
    tifffile.imwrite(p, RNG.normal(size=(8, 8)).astype(np.complex64))
    with pytest.raises(ImageContentError, match="phase.tif.*complex64"):
        read_image(p)


@pytest.mark.parametrize(("color_type", "channels"), [(2, 3), (6, 4), (4, 2)])
def test_16bit_colour_png_all_filters_exact(tmp_path, make_png, color_type, channels):
    # Pillow reduces these to 8 bits; our decoder must return the exact 16-bit values
    # whatever row filter (None, Sub, Up, Average, Paeth) the encoder chose.
    # Few distinct byte values make Paeth ties (pa == pb, pb == pc) common: those are where
    # a decoder's tie-breaking goes wrong.
    a = RNG.choice(np.array([0, 1, 256, 257, 65535], np.uint16), (24, 13, channels))
    a[::3] = RNG.integers(0, 65536, a[::3].shape)
    p = tmp_path / "c16.png"
    p.write_bytes(make_png(a, color_type, 16, filters=[0, 1, 2, 3, 4]))
    img = read_image(p)
    want = a[..., :1] if channels == 2 else a[..., :3]
    np.testing.assert_array_equal(img.array, np.moveaxis(want, -1, 0).astype(np.float32))
    assert img.meta["source_dtype"] == "uint16"


def test_real_busi_pngs_all_modes(data_dir):
    # BUSI images are RGB; masks come as mode 1, L, RGB or RGBA (MANIFEST 2c).
    files = sorted((data_dir / "seg" / "busi_subset").rglob("*.png"))
    assert len(files) == 182
    modes = set()
    for f in files:
        img = read_image(f)
        modes.add(img.meta["mode"])
        with Image.open(f) as im:
            w, h = im.size
        assert img.spatial_shape == (h, w)
        assert img.channels == (1 if img.meta["mode"] in ("1", "L", "I;16", "LA") else 3)
        if "_mask" in f.name:
            assert set(np.unique(img.array)) <= {0.0, 1.0, 255.0}
    assert {"RGB"} <= modes and len(modes) >= 2


# ------------------------------------------------------------------ dispatch


def test_magic_bytes_beat_the_extension(tmp_path):
    a = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    p = tmp_path / "really_a_png.jpg"
    Image.fromarray(a).save(p, format="PNG")
    img = read_image(p)
    assert img.meta["format"] == "png"
    q = tmp_path / "scan.img"
    shutil.copy(p, q)
    assert read_image(q).meta["format"] == "png"


def test_unknown_format_lists_supported(tmp_path, assert_one_line_error):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    with pytest.raises(InputError) as ei:
        read_image(p)
    msg = assert_one_line_error(ei, p)
    assert "PNG" in msg and "DICOM" in msg and "NIfTI" in msg
    g = tmp_path / "data.gz"
    g.write_bytes(gzip.compress(b"abc"))
    with pytest.raises(InputError, match="data.gz"):
        read_image(g)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_extensions_and_is_readable_path(tmp_path, dicom_dir):
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert DEFAULT_MAX_PIXELS == 2**28
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    shutil.copy(dicom_dir / "emri_small.dcm", tmp_path / "IM0001")
    (tmp_path / "notes.txt").write_text("BM not a bitmap")
    (tmp_path / ".hidden.png").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "series").mkdir()
    shutil.copy(dicom_dir / "emri_small.dcm", tmp_path / "series" / "1")
    (tmp_path / "empty").mkdir()
    assert is_readable_path(tmp_path / "a.png")
    assert is_readable_path(tmp_path / "IM0001")
    assert is_readable_path(tmp_path / "series")
    assert not is_readable_path(tmp_path / "notes.txt")
    assert not is_readable_path(tmp_path / ".hidden.png")
    assert not is_readable_path(tmp_path / "empty")
    assert not is_readable_path(tmp_path / "missing.png")
    assert read_image(tmp_path / "IM0001").array.shape == (1, 10, 64, 64)


# ------------------------------------------------------------------ size limit


def test_max_pixels_counts_channels(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png", max_pixels=48).array.shape == (3, 4, 4)
    with pytest.raises(ImageContentError) as ei:
        read_image(tmp_path / "c.png", max_pixels=47)
    assert "c.png" in str(ei.value) and "downsample or crop" in str(ei.value)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # a token amount of data: the header is the lie
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_giant_png_header_fails_fast(tmp_path, assert_one_line_error):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(60000, 60000))
    t = time.perf_counter()
    with pytest.raises(ImageContentError) as ei:
        read_image(p)
    assert time.perf_counter() - t < 1.0
    assert_one_line_error(ei, p)
    # in the words of every reader's limit (the server's HTTP 413), not Pillow's (was: 422 from the server)
    assert "60000x60000 image would decode to 3600000000 pixels x channels, above the limit" in str(ei.value)
    # Below Pillow's own bomb limit, our header check stops it before decoding.
    q = tmp_path / "big.png"
    q.write_bytes(_png_header_only(9000, 9000))
    with pytest.raises(ImageContentError, match="big.png"):
        read_image(q, max_pixels=10_000_000)
    # And with the limit lifted, the lie is caught as corruption, not a crash.
    with pytest.raises(CorruptFileError, match="big.png"):
        read_image(q)


# ------------------------------------------------------------------ bad input


def test_truncated_png(tmp_path, assert_one_line_error):
    p = tmp_path / "cut.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as ei:
        read_image(p)
    assert_one_line_error(ei, p)


@pytest.mark.parametrize("name", ["noise.png", "noise.dcm", "noise.nii.gz", "noise.nii", "noise.tif", "noise.jpg"])
def test_random_bytes(tmp_path, name, assert_one_line_error):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptFileError) as ei:
        read_image(p)
    assert_one_line_error(ei, p)


@pytest.mark.parametrize("name", ["empty.png", "empty.dcm", "empty.nii.gz", "empty"])
def test_empty_file(tmp_path, name, assert_one_line_error):
    p = tmp_path / name
    p.write_bytes(b"")
    with pytest.raises(CorruptFileError) as ei:
        read_image(p)
    assert "empty" in assert_one_line_error(ei, p)

"""2D raster images (PNG, JPEG, TIFF, BMP) as float32 channel-first arrays.

Pillow decodes almost everything. Two cases where Pillow would silently drop
precision (it reduces 16-bit colour to 8 bits) take another route: 16-bit colour
TIFFs go through tifffile, 16-bit colour PNGs through a small numpy decoder here.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from meddx.errors import CorruptFileError, ImageContentError, MissingCodecError
from meddx.io.base import TOO_BIG_FIX, ImageData, too_big
from meddx.io.formats import DEFAULT_MAX_PIXELS, check_file, short_reason

# Pillow raises these (and more) from open()/load() on damaged files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError,
                  KeyError, ZeroDivisionError, MemoryError)
_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32B", "LA", "La"}
_RGB_MODES = {"RGB", "RGBA", "RGBa", "RGBX"}


def read_raster(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read a PNG/JPEG/TIFF/BMP image.

    Grey, 1-bit, 16/32-bit and grey-palette images give ``(1, H, W)``; colour gives
    ``(3, H, W)`` (alpha dropped). Values keep their original range.

    Args:
        path: image file.
        max_pixels: refuse images whose width x height x channels exceeds this,
            checked from the header before any pixel is decoded.

    Raises:
        CorruptFileError: truncated or undecodable file.
        ImageContentError: too many pixels, or a stack/animation instead of one 2D image.
    """
    p = check_file(path)
    with open(p, "rb") as fh:
        head = fh.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 26 and head[12:16] == b"IHDR":
        depth, ctype = head[24], head[25]
        if depth == 16 and ctype in (2, 4, 6):
            return _read_png16_colour(p, max_pixels)
    try:
        im = Image.open(p)
    except Image.DecompressionBombError as e:
        # Pillow refuses the header before our own check sees it: over the caller's limit, say so in the
        # words every reader uses (the server answers those with HTTP 413, not 422)
        m = re.search(r"\((\d+) pixels\)", str(e))
        if m and int(m.group(1)) > max_pixels:
            png = head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR"
            what = "{}x{} image".format(*struct.unpack(">II", head[16:24])) if png else "image"
            raise too_big(p, int(m.group(1)), max_pixels, what) from e
        raise ImageContentError(f"image is larger than Pillow's decompression-bomb limit ({short_reason(e, p)})",
                                path=p, fix=TOO_BIG_FIX) from e
    except UnidentifiedImageError as e:
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _read_tiff(p, max_pixels)
        raise CorruptFileError("not a readable PNG/JPEG/TIFF/BMP image (unrecognised or damaged header)",
                               path=p, fix="check the file opens in an image viewer, or export it again") from e
    except _DECODE_ERRORS as e:
        raise CorruptFileError(f"cannot read the image header ({short_reason(e, p)})", path=p,
                               fix="export the file again") from e
    with im:
        fmt = (im.format or "").lower()
        if fmt == "tiff" and _pillow_would_truncate_tiff(im):
            im.close()
            return _read_tiff(p, max_pixels)
        n_frames = int(getattr(im, "n_frames", 1) or 1)
        if n_frames > 1:
            raise ImageContentError(
                f"holds {n_frames} frames/pages; meddx reads one 2D image per PNG/JPEG/TIFF/BMP file",
                path=p, fix="save each frame as its own file, or a volume as NIfTI")
        w, h = im.size
        n = w * h * _channels_upper_bound(im)
        if n > max_pixels:
            raise too_big(p, n, max_pixels, f"{w}x{h} image")
        try:
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            if orientation in range(2, 9):
                im = ImageOps.exif_transpose(im)
            arr, extra = _pil_to_array(im)
        except Image.DecompressionBombError as e:
            raise ImageContentError(f"image is too large ({short_reason(e, p)})", path=p, fix=TOO_BIG_FIX) from e
        except _DECODE_ERRORS as e:
            if fmt == "tiff":
                return _read_tiff(p, max_pixels)
            raise CorruptFileError(f"cannot decode the {fmt.upper() or 'image'} data ({short_reason(e, p)})",
                                   path=p, fix="the file is probably truncated or damaged; export it again") from e
        meta = {"format": fmt, "mode": im.mode, "source_dtype": extra.pop("source_dtype")}
        if orientation in range(2, 9):
            meta["exif_orientation"] = int(orientation)
        meta.update(extra)
    return ImageData(arr, spacing=None, meta=meta)


def _channels_upper_bound(im: Image.Image) -> int:
    if im.mode in _GREY_MODES:
        return 1
    if im.mode in ("P", "PA"):
        pal = im.getpalette() or []
        rgb = np.asarray(pal, dtype=np.int32).reshape(-1, 3) if pal else np.zeros((0, 3), np.int32)
        return 1 if np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]) else 3
    return 3


def _pil_to_array(im: Image.Image) -> tuple[np.ndarray, dict]:
    """Decoded Pillow image -> float32 (C, H, W) and extra meta (incl. source_dtype)."""
    mode = im.mode
    extra: dict = {}
    if mode in ("LA", "La"):
        a = np.asarray(im.getchannel(0))
    elif mode in _GREY_MODES:
        a = np.asarray(im)
    elif mode in ("P", "PA"):
        idx = np.asarray(im.getchannel(0) if mode == "PA" else im)
        pal = np.asarray(im.getpalette(rawmode="RGB") or [], dtype=np.uint8).reshape(-1, 3)
        lut = np.zeros((256, 3), np.uint8)
        lut[: min(len(pal), 256)] = pal[:256]
        if len(pal) == 0:
            lut[:] = np.arange(256, dtype=np.uint8)[:, None]
        used = lut[np.unique(idx)]
        grey = bool(np.all(used[:, 0] == used[:, 1]) and np.all(used[:, 1] == used[:, 2]))
        a = lut[idx, 0] if grey else lut[idx]
        extra["palette"] = "grey" if grey else "colour"
    elif mode in _RGB_MODES:
        a = np.asarray(im)[..., :3]
    else:  # CMYK, YCbCr, LAB, HSV: Pillow knows how to get RGB
        a = np.asarray(im.convert("RGB"))
        extra["converted_from"] = mode
    extra["source_dtype"] = a.dtype.name
    if a.ndim == 2:
        out = a.astype(np.float32)[None]
    else:
        out = np.ascontiguousarray(np.moveaxis(a, -1, 0)).astype(np.float32)
    return out, extra


def _pillow_would_truncate_tiff(im: Image.Image) -> bool:
    """Pillow opens 16/32-bit multi-sample TIFFs as 8-bit RGB(A), and 32-bit unsigned grey as signed
    (values from 2**31 up wrap to negative): hand those to tifffile."""
    try:
        tags = im.tag_v2
        bits = tags.get(258, 8)
        spp = int(tags.get(277, 1))
        fmt = tags.get(339, 1)  # SampleFormat: 1 unsigned (the default), 2 signed, 3 float
    except Exception:  # noqa: BLE001 - a damaged tag table: let tifffile decide
        return True
    bits = max(bits) if isinstance(bits, (tuple, list)) else bits
    fmt = fmt[0] if isinstance(fmt, (tuple, list)) else fmt
    if tags.get(262) == 0 and int(bits) > 8:  # MINISWHITE: Pillow inverts 8-bit grey only
        return True
    return (spp > 1 and int(bits) > 8) or (int(bits) == 32 and fmt == 1)


def _read_tiff(p: Path, max_pixels: int) -> ImageData:
    """TIFFs Pillow cannot decode faithfully (16-bit colour, float multi-sample, exotic layouts)."""
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            axes, shape = series.axes, tuple(int(s) for s in series.shape)
            page = tif.pages[0]
            photometric = getattr(getattr(page, "photometric", None), "name", str(getattr(page, "photometric", "")))
            bits = int(getattr(page, "bitspersample", 0) or 0)
            tag = page.tags.get(274)  # Orientation, as Pillow's route honours it
            try:
                orientation = int(tag.value) if tag is not None else 1
            except (TypeError, ValueError):
                orientation = 1
            keep = [(ax, s) for ax, s in zip(axes, shape) if s > 1 or ax in "YX"]
            if any(ax not in "YXS" for ax, _ in keep):
                raise ImageContentError(
                    f"TIFF holds a {'x'.join(map(str, shape))} stack (axes {axes}); meddx reads one 2D image per TIFF",
                    path=p, fix="save each plane as its own file, or the volume as NIfTI")
            n = int(np.prod(shape))
            if n > max_pixels:
                raise too_big(p, n, max_pixels, "TIFF image")
            arr = series.asarray()
    except ImageContentError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for damaged files
        if "imagecodecs" in str(e):
            raise MissingCodecError(f"the TIFF compression needs a codec that is not installed ({short_reason(e, p)})",
                                    path=p, fix="pip install imagecodecs, or save the TIFF uncompressed") from e
        raise CorruptFileError(f"cannot decode the TIFF ({short_reason(e, p)})", path=p,
                               fix="the file is probably truncated or damaged; export it again") from e
    arr = arr.reshape([s for ax, s in zip(axes, shape) if s > 1 or ax in "YX"])
    kept_axes = "".join(ax for ax, s in zip(axes, shape) if s > 1 or ax in "YX")
    if "S" in kept_axes:
        arr = np.moveaxis(arr, kept_axes.index("S"), 0)
    else:
        arr = arr[None]
    source_dtype = arr.dtype.name
    inverted = photometric.upper() == "MINISWHITE" and arr.dtype.kind == "u" and arr.shape[0] == 1 and bits > 0
    if inverted:  # 0 is white: mirror so that bright means high, as Pillow does for 8-bit MINISWHITE
        arr = (2**bits - 1) - arr.astype(np.int64)
    elif photometric.upper() not in ("MINISBLACK", "RGB", ""):
        raise ImageContentError(f"TIFF photometric interpretation {photometric} is not supported for this bit depth",
                                path=p, fix="save it as grey or RGB TIFF")
    if arr.dtype.kind not in "uifb":  # complex (e.g. MR phase data): a cast would drop the imaginary part
        raise ImageContentError(f"TIFF holds {arr.dtype} pixels, not real numbers", path=p,
                                fix="save the magnitude (or one real component) as a grey TIFF")
    n_ch = arr.shape[0]
    if n_ch == 2:  # grey + alpha
        arr = arr[:1]
    elif n_ch >= 3:
        arr = arr[:3]
    meta = {"format": "tiff", "mode": f"tifffile:{photometric.lower()}", "source_dtype": source_dtype}
    if inverted:
        meta["miniswhite_inverted"] = True
    if orientation in range(2, 9):
        arr = _orient(arr, orientation)
        meta["exif_orientation"] = orientation
    return ImageData(np.ascontiguousarray(arr).astype(np.float32), spacing=None, meta=meta)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply a TIFF/EXIF Orientation (2-8) to ``(C, H, W)`` as ``ImageOps.exif_transpose`` does."""
    if orientation in (5, 6, 7, 8):
        arr = np.swapaxes(arr, 1, 2)  # 5: transpose; 6, 7, 8 are a transpose then a flip
    if orientation in (2, 3, 6, 7):
        arr = arr[:, :, ::-1]
    if orientation in (3, 4, 7, 8):
        arr = arr[:, ::-1, :]
    return arr


# ---------------------------------------------------------------------------------------------
# 16-bit colour PNG (Pillow reduces these to 8 bits).


def _png_chunks(p: Path, data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise CorruptFileError("PNG is truncated", path=p, fix="export the file again")
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != struct.unpack(">I", crc)[0]:
            raise CorruptFileError(f"PNG chunk {ctype!r} fails its CRC check", path=p, fix="export the file again")
        yield ctype, body
        if ctype == b"IEND":
            return
        pos += 12 + length
    raise CorruptFileError("PNG is truncated (no IEND chunk)", path=p, fix="export the file again")


def _read_png16_colour(p: Path, max_pixels: int) -> ImageData:
    data = p.read_bytes()
    chunks = _png_chunks(p, data)
    ctype_, ihdr = next(chunks)
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", ihdr)
    n_in = {2: 3, 4: 2, 6: 4}[ctype]
    n_out = 1 if ctype == 4 else 3
    if w * h * n_out > max_pixels:
        raise too_big(p, w * h * n_out, max_pixels, f"{w}x{h} PNG")
    if interlace:
        raise ImageContentError("interlaced 16-bit colour PNG is not supported", path=p,
                                fix="re-save it without interlacing, or as a 16-bit TIFF")
    idat = b"".join(body for t, body in chunks if t == b"IDAT")
    bpp = 2 * n_in
    expected = h * (1 + w * bpp)
    try:
        dec = zlib.decompressobj()
        raw = dec.decompress(idat, expected)
    except zlib.error as e:
        raise CorruptFileError(f"PNG image data is damaged ({short_reason(e, p)})", path=p,
                               fix="export the file again") from e
    if len(raw) < expected:
        raise CorruptFileError("PNG image data is truncated", path=p, fix="export the file again")
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + w * bpp)
    if rows[:, 0].max(initial=0) > 4:
        raise CorruptFileError("PNG has an invalid row filter", path=p, fix="export the file again")
    pix = _png_unfilter(rows[:, 0], rows[:, 1:].reshape(h, w, bpp))
    arr = pix.reshape(h, w, n_in, 2)
    arr = (arr[..., 0].astype(np.uint16) << 8) | arr[..., 1]
    arr = np.moveaxis(arr[..., :n_out], -1, 0)
    meta = {"format": "png", "mode": {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}[ctype], "source_dtype": "uint16"}
    return ImageData(np.ascontiguousarray(arr).astype(np.float32), spacing=None, meta=meta)


def _png_unfilter(filters: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Undo PNG row filters, one anti-diagonal of pixels at a time.

    Pixel (y, x) depends on its left, upper and upper-left neighbours, all on earlier
    anti-diagonals, so each diagonal is one vectorised step whatever the row filters are.
    """
    h, w, bpp = data.shape
    out = np.zeros((h + 1, w + 1, bpp), np.int32)  # zero row/column = PNG's "outside the image"
    filt = filters.astype(np.int32)
    for d in range(h + w - 1):
        ys = np.arange(max(0, d - w + 1), min(h - 1, d) + 1)
        xs = d - ys
        a = out[ys + 1, xs]
        b = out[ys, xs + 1]
        c = out[ys, xs]
        f = filt[ys][:, None]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[ys + 1, xs + 1] = (data[ys, xs] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8)

"""Decoding image files into uint8 arrays with Pillow, in worker processes, surviving bad files.

Baseline JPEGs without EXIF data (CIFAR-10 (JPEG), most photo datasets after preprocessing) go
to simplejpeg (libjpeg-turbo) when that optional package is installed (`cnnzoo[fastjpeg]`):
8x less CPU per image than Pillow in measurements on CIFAR-10 (JPEG), with identical pixels
(both run libjpeg-turbo's accurate integer IDCT with the same upsampling: 0 differing pixels
in 3,000 images; tests/test_decode_fast.py checks equality). Everything else, and every file
simplejpeg refuses, is decoded by Pillow as below.

Every readable image becomes an `H x W x 1` (grey) or `H x W x 3` (colour) uint8 array:
- CMYK, YCbCr, LAB, HSV: converted to RGB by Pillow.
- RGBA, LA, palette with transparency: alpha composited on a WHITE background (what a viewer
  shows on a page; `convert("RGB")` would instead expose whatever colour hides under alpha 0).
- 16-bit ("I;16", "I;16B", "I") grey: scaled from 0..65535 to 0..255 with rounding, not
  clipped (Pillow's `convert("L")` clips, which turns most 16-bit images white).
- "1" and "L": grey.
A file that cannot be decoded (empty, truncated pixel data, not an image at all) yields a
reason string instead. Truncation is caught because `img.load()` decodes every pixel and
`ImageFile.LOAD_TRUNCATED_IMAGES` is never set.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._limits import LimitError, check_image_size, max_image_pixels
from .progress import Counter

try:  # optional: cnnzoo[fastjpeg]
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})
BACKGROUND = 255  # alpha is composited on white
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# (name, bytes) with the encoded file, or (path, None) to read it from disk in the worker.
Item = tuple[str, "bytes | None"]


def _composite(rgba: np.ndarray) -> np.ndarray:
    colour, alpha = rgba[..., :-1].astype(np.uint32), rgba[..., -1:].astype(np.uint32)
    return ((colour * alpha + BACKGROUND * (255 - alpha) + 127) // 255).astype(np.uint8)


def _scale_16bit(img: Image.Image) -> np.ndarray:
    values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)[..., None]


def _scale_float(img: Image.Image) -> np.ndarray:
    """A float image (TIFF mode F) in [0, 1] or [0, 255] as uint8; any other range is refused
    rather than clipped to black or white."""
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("float image with NaN or infinite pixels")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ValueError(f"float image with values in [{low:g}, {high:g}]; cnnzoo reads float images in [0, 1] "
                         "or [0, 255]: rescale it first")
    scale = 255.0 if high <= 1.0 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)[..., None]


def match_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """uint8 H x W x C with `channels` channels: colour to grey by ITU-R BT.601 luma (as Pillow's
    convert("L")), grey to colour by repetition."""
    if array.shape[2] == 3 and channels == 1:
        grey = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None]
    if array.shape[2] == 1 and channels == 3:
        return np.repeat(array, 3, axis=2)
    return array


def to_array(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image as uint8 H x W x C, C = 1 for grey modes and 3 otherwise."""
    mode = img.mode
    if mode in _SIXTEEN_BIT:
        return _scale_16bit(img)
    if mode == "F":
        return _scale_float(img)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("LA", "La"):
        return _composite(np.asarray(img.convert("LA")))
    if img.mode in ("RGBA", "RGBa"):
        return _composite(np.asarray(img.convert("RGBA")))
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))[..., None]
    return np.asarray(img.convert("RGB"))


def _draft(img: Image.Image, size: int) -> None:
    """Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while staying at least `size` on the short side."""
    w, h = img.size
    scale = size / min(w, h)
    if img.format == "JPEG" and scale < 1:
        img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))


def resize_center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` (bilinear, antialiased) and crop the centre square."""
    h, w = arr.shape[:2]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        arr = np.asarray(img.resize((nw, nh), Image.BILINEAR)).reshape(nh, nw, -1)
        top, left = (nh - size) // 2, (nw - size) // 2
        arr = arr[top:top + size, left:left + size]
    return np.ascontiguousarray(arr)


def _open(source: str | bytes) -> Image.Image:
    """Pillow's open (the header only), held to cnnzoo's pixel limit. Pillow's own global limit is
    left as the caller set it: changing it here would change it for every other image the process opens."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # cnnzoo's own check follows
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as err:  # Pillow refuses above twice its own limit
        limit = max_image_pixels()
        if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
            raise LimitError(f"{err} (Pillow's own limit, PIL.Image.MAX_IMAGE_PIXELS, is below cnnzoo's)") from None
        raise LimitError(f"more than the {limit / 1e6:g}-megapixel limit ({err}); raise CNNZOO_MAX_IMAGE_MEGAPIXELS "
                         "if the image is trusted") from None
    check_image_size(*img.size)
    return img


_JPEG_SOI = b"\xff\xd8\xff"
_FAST_COLOURS = {"YCbCr": ("RGB", 3), "RGB": ("RGB", 3), "Gray": ("GRAY", 1)}  # CMYK, YCCK: Pillow


def decode_jpeg_fast(data: bytes) -> np.ndarray | None:
    """A JPEG without EXIF (so no orientation to apply) in RGB or grey, decoded by simplejpeg, as
    uint8 H x W x C; None when simplejpeg is missing or the file is for Pillow: EXIF, CMYK, not a
    JPEG, or data simplejpeg's strict mode refuses (Pillow then decodes it or names the problem)."""
    if simplejpeg is None or not data.startswith(_JPEG_SOI) or b"Exif\x00" in data[:65536]:
        return None
    try:
        height, width, colourspace = simplejpeg.decode_jpeg_header(data)[:3]
        check_image_size(width, height)  # from the header, before any pixel is decoded
        if colourspace not in _FAST_COLOURS:
            return None
        mode, channels = _FAST_COLOURS[colourspace]
        return simplejpeg.decode_jpeg(data, colorspace=mode).reshape(height, width, channels)
    except ValueError:
        return None


def _read_jpeg(path: str) -> bytes | None:
    """The bytes of a .jpg/.jpeg file when the fast decoder could take it, else None."""
    if simplejpeg is None or not path.lower().endswith((".jpg", ".jpeg")):
        return None
    with open(path, "rb") as f:
        return f.read()


def decode_image(source: str | bytes, size: int | None = None) -> np.ndarray:
    """Decode one image file (a path or its bytes); raises on anything unreadable."""
    if size is None:
        data = source if isinstance(source, bytes) else _read_jpeg(source)
        fast = decode_jpeg_fast(data) if data is not None else None
        if fast is not None:
            return fast
    with _open(source) as img:
        check_image_size(*img.size)  # from the header, before any pixel is decoded
        if size:
            _draft(img, size)
        img.load()  # decode every pixel now: truncated data fails here, not at open
        if img.format != "JPEG" or "exif" in img.info:  # a JPEG without EXIF has no orientation to apply
            img = ImageOps.exif_transpose(img)
        arr = to_array(img)
    return resize_center_crop(arr, size) if size else arr


def describe_failure(err: Exception, payload: bytes | None, name: str) -> str:
    empty = payload == b"" or (payload is None and os.path.isfile(name) and os.path.getsize(name) == 0)
    if empty:
        return "empty file (0 bytes)"
    if isinstance(err, UnidentifiedImageError):
        return "not an image file Pillow can read"
    if isinstance(err, LimitError):
        return str(err)
    if payload is None and os.path.islink(name) and not os.path.exists(name):
        return f"a symbolic link to {os.readlink(name)} that leads nowhere (missing target or a loop)"
    return f"{type(err).__name__}: {err}"


def decode_chunk(items: Sequence[Item], size: int | None) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Decode a list of items; a bad file gives None and its reason instead of raising."""
    arrays: list[np.ndarray | None] = []
    reasons: list[str | None] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's hints about EXIF or palettes are not the user's problem
        for name, payload in items:
            try:
                arrays.append(decode_image(name if payload is None else payload, size))
                reasons.append(None)
            except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
                arrays.append(None)
                reasons.append(describe_failure(err, payload, name))
    return arrays, reasons


def _chunks(items: Iterable[Item], n: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pool(num_workers: int) -> ProcessPoolExecutor:
    # fork: the workers only run Pillow and numpy, and skip re-importing torch (seconds each).
    # Python 3.12+ warns that forking a process with threads (torch's pool) may deadlock; that
    # risk is in locks the children would take, and Pillow/numpy take none of torch's.
    ctx = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
    return ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_leave_signals_to_the_parent)


def _leave_signals_to_the_parent() -> None:
    # A Ctrl-C reaches the whole process group: the parent stops the pool, and the workers must
    # neither print the parent's message nor die with tracebacks of their own.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def decode_many(items: Iterable[Item], *, size: int | None = None, num_workers: int = 2, chunk: int = 512,
                what: str = "decoding", total: int | None = None) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Decode all items in order, in `num_workers` processes (in this process when <= 1),
    reporting the count to the data progress sink (cnnzoo.data.progress) as `what`."""
    arrays: list[np.ndarray | None] = []
    reasons: list[str | None] = []
    counter = Counter(what, total)
    chunks = _chunks(items, chunk)
    pool = _pool(num_workers) if num_workers > 1 else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            results = pool.map(decode_chunk, chunks, repeat(size)) if pool else map(decode_chunk, chunks, repeat(size))
            for a, r in results:
                arrays += a
                reasons += r
                counter.add(len(a))
        counter.finish()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return arrays, reasons

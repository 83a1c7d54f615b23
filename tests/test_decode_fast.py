"""The optional simplejpeg decoder gives exactly Pillow's pixels, and leaves to Pillow what it cannot do."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnzoo.data import decode
from cnnzoo.data.decode import decode_chunk, decode_image, decode_jpeg_fast

pytest.importorskip("simplejpeg", reason="the optional fast JPEG decoder (cnnzoo[fastjpeg]) is not installed")


def _jpeg(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=75, **save)
    return buf.getvalue()


def _pillow_only(data: bytes, monkeypatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(decode, "simplejpeg", None)
        return decode_image(data)


@pytest.mark.parametrize("shape", [(32, 32, 3), (17, 23, 3), (20, 12)])
def test_fast_path_matches_pillow_exactly(shape, monkeypatch):
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, shape).astype(np.float32).cumsum(0).cumsum(1)
    data = _jpeg((smooth / smooth.max() * 255).astype(np.uint8))
    fast = decode_jpeg_fast(data)
    assert fast is not None and fast.dtype == np.uint8
    assert np.array_equal(fast, _pillow_only(data, monkeypatch))  # tolerance 0: same libjpeg-turbo IDCT
    assert fast.shape == (shape[0], shape[1], 3 if len(shape) == 3 else 1)


def test_exif_orientation_still_applied_by_pillow(monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _jpeg(np.zeros((10, 30, 3), np.uint8), exif=exif.tobytes())
    assert decode_jpeg_fast(data) is None
    assert decode_image(data).shape == (30, 10, 3)


def test_truncated_jpeg_is_named_as_pillow_names_it(monkeypatch):
    data = _jpeg(np.full((64, 64, 3), 128, np.uint8))[:300]
    with_fast = decode_chunk([("bad.jpg", data)], None)
    with monkeypatch.context() as m:
        m.setattr(decode, "simplejpeg", None)
        without = decode_chunk([("bad.jpg", data)], None)
    assert with_fast[0] == [None] and with_fast[1] == without[1] and "truncated" in with_fast[1][0].lower()

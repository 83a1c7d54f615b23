"""A folder of deliberately broken and unusual images: converted right, or refused by name, or skipped."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import load_dataset
from cnnzoo.data.decode import decode_image
from cnnzoo.errors import DataError

S = 16  # every image is S x S so the good ones stack
UNREADABLE = {"zero.jpg", "truncated.jpg", "truncated.png", "text.png"}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(seed: int, shape=(S, S, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _rgba() -> Image.Image:
    a = np.zeros((S, S, 4), np.uint8)
    a[..., :3] = (200, 10, 10)  # red under the alpha
    a[:, : S // 2, 3] = 0  # left half fully transparent
    a[:, S // 2:, 3] = 255
    a[0, -1, 3] = 128  # one half-transparent pixel
    return Image.fromarray(a, "RGBA")


def _palette(transparent: bool) -> Image.Image:
    img = Image.fromarray(np.tile(np.arange(S, dtype=np.uint8) % 4, (S, 1)), "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * (256 * 3 - 12))
    if transparent:
        img.info["transparency"] = 3
    return img


def broken_files() -> dict[str, bytes]:
    jpeg = _encode(Image.fromarray(_noise(1, (64, 64, 3))).resize((S * 4, S * 4)), "JPEG")
    png = _encode(Image.fromarray(_noise(2, (S * 4, S * 4, 3))), "PNG")
    sixteen = np.array([[0, 256, 32768, 65535]] * 4, dtype=np.uint16).repeat(S // 4, 1).repeat(S // 4, 0)
    return {
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text.png": b"this is not an image, whatever its name says\n" * 10,
        "cmyk.jpg": _encode(Image.fromarray(_noise(3)).convert("CMYK"), "JPEG", quality=95),
        "rgba.png": _encode(_rgba(), "PNG"),
        "la.png": _encode(Image.fromarray(np.full((S, S, 2), (50, 0), np.uint8), "LA"), "PNG"),
        "palette.png": _encode(_palette(False), "PNG"),
        "palette_transparent.png": _encode(_palette(True), "PNG"),
        "sixteen.png": _encode(Image.fromarray(sixteen), "PNG"),
        "grey.png": _encode(Image.fromarray(np.full((S, S), 77, np.uint8)), "PNG"),
        "bilevel.png": _encode(Image.fromarray(np.eye(S, dtype=bool)), "PNG"),
    }


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "ds"
    for c in ("a", "b"):
        for i in range(8):
            path = root / "train" / c / f"good{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_noise(10 + i)).save(path)
    for name, data in broken_files().items():
        (root / "train" / "a" / name).write_bytes(data)
    return root


def test_each_readable_mode_is_converted_correctly():
    files = broken_files()
    rgba = decode_image(files["rgba.png"])
    assert rgba.shape == (S, S, 3)
    assert (rgba[:, : S // 2] == 255).all()  # transparent: the white background, not the hidden red
    assert (rgba[1:, S // 2:] == (200, 10, 10)).all()
    assert tuple(rgba[0, -1]) == (227, 132, 132)  # alpha 128: (200*128 + 255*127) / 255 = 227.4
    assert decode_image(files["la.png"]).shape == (S, S, 1) and (decode_image(files["la.png"]) == 255).all()
    sixteen = decode_image(files["sixteen.png"])
    assert sixteen.shape == (S, S, 1)
    assert sixteen[0, :: S // 4, 0].tolist() == [0, 1, 128, 255]  # scaled, not clipped to [0, 255, 255, 255]
    pal = decode_image(files["palette.png"])
    assert tuple(pal[0, 0]) == (255, 0, 0) and tuple(pal[0, 3]) == (9, 9, 9)
    assert tuple(decode_image(files["palette_transparent.png"])[0, 3]) == (255, 255, 255)
    assert (decode_image(files["grey.png"]) == 77).all() and decode_image(files["grey.png"]).shape == (S, S, 1)
    assert decode_image(files["bilevel.png"])[:, :, 0].tolist() == (np.eye(S) * 255).tolist()
    cmyk = Image.open(io.BytesIO(files["cmyk.jpg"]))
    assert cmyk.mode == "CMYK" and (decode_image(files["cmyk.jpg"]) == np.asarray(cmyk.convert("RGB"))).all()


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_each_unreadable_file_raises_on_its_own(name):
    with pytest.raises(Exception):
        decode_image(broken_files()[name])


def test_error_mode_names_the_file(bad_folder, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(str(bad_folder), cache_dir=tmp_path, num_workers=0)
    msg = str(err.value)
    assert str(bad_folder / "train" / "a") in msg and any(n in msg for n in UNREADABLE)
    assert "4 of 28 images unreadable" in msg and "--on-bad-image skip" in msg


def test_skip_mode_counts_and_lists(bad_folder, tmp_path):
    b = load_dataset(str(bad_folder), on_bad_image="skip", max_bad_images=4, val_fraction=0.0, cache_dir=tmp_path,
                     num_workers=2)
    assert sorted(Path(p).name for p, _ in b.bad_images) == sorted(UNREADABLE)
    reasons = dict((Path(p).name, r) for p, r in b.bad_images)
    assert reasons["zero.jpg"] == "empty file (0 bytes)" and "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["text.png"]
    assert len(b.train) == 28 - 4 and b.input_size == (3, S, S)  # grey images joined the RGB ones
    assert torch.bincount(b.train.labels).tolist() == [16 - 4 + 4, 8]


def test_skip_mode_aborts_past_the_limit(bad_folder, tmp_path):
    with pytest.raises(DataError, match="4 of 28 images are unreadable, more than the limit"):
        load_dataset(str(bad_folder), on_bad_image="skip", max_bad_images=0.1, cache_dir=tmp_path, num_workers=0)
    with pytest.raises(DataError, match="more than the limit"):
        load_dataset(str(bad_folder), on_bad_image="skip", max_bad_images=3, cache_dir=tmp_path, num_workers=0)


def test_bad_images_inside_an_archive(bad_folder, tmp_path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bad_folder, arcname="ds")
    with pytest.raises(DataError, match=r"bad\.tar\.gz:ds/train/a/"):
        load_dataset(str(archive), cache_dir=tmp_path / "c")
    b = load_dataset(str(archive), on_bad_image="skip", max_bad_images=0.2, val_fraction=0.0, cache_dir=tmp_path / "c")
    assert len(b.bad_images) == 4 and b.from_cache  # the failed strict load already cached the decode


def test_class_with_only_bad_images_is_an_empty_class(tmp_path):
    root = tmp_path / "ds"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    for i in range(5):
        Image.fromarray(_noise(i)).save(root / "a" / f"{i}.png")
    (root / "b" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="class 'b' has no readable training image"):
        load_dataset(str(root), on_bad_image="skip", max_bad_images=0.5, cache_dir=tmp_path / "c", num_workers=0)

"""`load_dataset`: from a name or a path to a `DatasetBundle` of uint8 splits.

A spec is a name (`digits`, `mnist`, `fashion-mnist`, `cifar10`, `cifar100`), a name with a
path (`cifar10:/data/cifar-10-python.tar.gz`, `mnist:/data/mnist`), or a path: the CIFAR
archive or folder, a folder of IDX files, or an image folder / .tar / .tar.gz of one.
Decoded sources are cached as uint8 tensors (see cache.py); the train/val/test carving,
resizing and statistics happen after the cache, so changing the seed or split re-uses it.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from . import cifar, idx
from .bundle import DatasetBundle, ImageSplit, carve, channel_stats
from .cache import cache_path, default_cache_dir, load_cache, save_cache, source_fingerprint
from .digits import read_digits
from .folder import is_archive, read_folder
from .transforms import center_crop, resize_uint8

log = logging.getLogger(__name__)
NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
ALIASES = {"sklearn-digits": "digits", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
           "fmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100",
           "cifar_100": "cifar100"}
LARGE_IMAGE_MIN = 64  # image folders asked for image_size above this get the large-image pipeline
TRAIN_RESIZE_RATIO = 256 / 224  # large images: train split kept at 1.14x for random-resized crop
TEST_SEED = 0  # the carved test split never depends on the run's seed


@dataclass
class Source:
    kind: str  # "digits" | "idx" | "cifar" | "folder"
    name: str
    path: Path | None = None
    cifar_spec: cifar.CifarSpec | None = None


def _canonical(name: str) -> str | None:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in NAMES else None


def _unknown(spec: str) -> DataError:
    close = difflib.get_close_matches(spec.lower(), [*NAMES, *ALIASES], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(dict.fromkeys(ALIASES.get(c, c) for c in close))}? " if close else ""
    return DataError(f"unknown dataset {spec!r}: {hint}use one of {', '.join(NAMES)}, or a path to a dataset")


def _named_idx(name: str, path: Path | None, root: Path) -> Source:
    candidates = [path] if path else [root / name, idx.SYSTEM_DIRS[name]]
    for c in candidates:
        if c.is_dir() and idx.is_idx_folder(c):
            return Source("idx", name, c)
    where = " or ".join(map(str, candidates))
    hint = " install the Debian package dataset-fashion-mnist, or" if name == "fashion-mnist" else ""
    raise DataError(f"{name} IDX files not found in {where};{hint} put train-images-idx3-ubyte.gz and the other "
                    f"three files there, or pass {name}:/path/to/folder")


def _named_cifar(name: str, path: Path | None, root: Path, download: bool) -> Source:
    spec = cifar.SPECS[name]
    if path:
        if not path.exists():
            raise DataError(f"dataset path {path} does not exist; check the path")
        return Source("cifar", name, path, spec)
    found = cifar.find_local(spec, [root])
    if found is None and download:
        found = cifar.download(spec, root)
    if found is None:
        raise DataError(f"{name} not found in {root} (looked for {spec.archive} and {spec.folder}/); "
                        f"pass download=True (--download), or the path of your copy")
    return Source("cifar", name, found, spec)


def _nothing_at(path: Path, spec: str, *, may_be_a_name: bool) -> DataError:
    """The refusal of a spec whose path is not there; a bare word is taken for a mistyped dataset name."""
    if may_be_a_name and "/" not in spec and "." not in spec:
        return _unknown(spec)
    return DataError(f"dataset path {path} does not exist; check the path or use one of {', '.join(NAMES)}")


def _from_path(path: Path, spec: str) -> Source:
    if not path.exists():
        raise _nothing_at(path, spec, may_be_a_name=True)
    if not (path.is_dir() or path.is_file()):  # a device or a FIFO would be read forever
        raise DataError(f"{path} is not a regular file or folder; give a folder or an archive of images")
    if (cspec := cifar.detect(path)) is not None:
        return Source("cifar", cspec.name, path, cspec)
    if idx.is_idx_folder(path):
        return Source("idx", "fashion-mnist" if "fashion" in str(path).lower() else "mnist", path)
    if path.is_dir() or is_archive(path):
        return Source("folder", f"folder:{path}", path)
    raise DataError(f"{path} is not a dataset: give a folder (or .tar/.tar.gz) of class folders, "
                    "a CIFAR archive or a folder of IDX files")


def resolve(spec: str, root: Path, download: bool) -> Source:
    """What `spec` names and where its files are."""
    head, sep, tail = spec.partition(":")
    name = _canonical(spec) or (_canonical(head) if sep and tail else None)
    path = Path(tail).expanduser() if name and sep and tail else None
    if name == "digits":
        return Source("digits", "digits")
    if name in ("mnist", "fashion-mnist"):
        return _named_idx(name, path, root)
    if name in ("cifar10", "cifar100"):
        return _named_cifar(name, path, root, download)
    return _from_path(Path(spec).expanduser(), spec)


def _spec_path(spec: str) -> Path | None:
    """The path part of a spec (`cifar10:/data/x`, `my_images/`), None for a bare name (`digits`)."""
    if _canonical(spec):
        return None
    head, sep, tail = spec.partition(":")
    return Path(tail if _canonical(head) and sep and tail else spec).expanduser()


def absolute_spec(spec: str) -> str:
    """`spec` with its path made absolute and resolved (names stay names), so a run or a checkpoint
    that stores it finds the data from any working directory. A path that does not exist is kept
    as given, for the error that names it."""
    spec = str(spec)
    path = _spec_path(spec)
    if path is None or not path.exists():
        return spec
    head, sep, tail = spec.partition(":")
    return f"{head}:{path.resolve()}" if _canonical(head) and sep and tail else str(path.resolve())


def missing_path(spec: str) -> Path | None:
    """The path a spec names when it is a path (not a dataset name) that does not exist, else None."""
    path = _spec_path(str(spec))
    return path if path is not None and not path.exists() else None


def check_spec_names_something(spec: str) -> None:
    """The loader's refusal of a spec that names nothing (an unknown dataset name, a path that is
    not there), in its words, without reading any file: for commands to say it before they start."""
    gone = missing_path(spec)
    if gone is not None:  # `name:path` names its path: never a mistyped name
        raise _nothing_at(gone, spec, may_be_a_name=":" not in spec)


def dataset_fingerprint(spec: str, *, cache_dir: str | Path | None = None, download: bool = False) -> str:
    """The fingerprint `load_dataset(spec)` would give, without decoding anything (a checkpoint's
    stored fingerprint tells whether data given for evaluation is the run's own, moved or not)."""
    source = resolve(str(spec), Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), download)
    return _fingerprint(source)


def _fingerprint(source: Source) -> str:
    if source.kind == "digits":
        import sklearn

        return f"sklearn-digits-{sklearn.__version__}"
    return source_fingerprint(source.path)


def _decode_size(source: Source, image_size: int | None) -> int | None:
    if source.kind == "digits":
        return image_size
    if source.kind != "folder" or image_size is None:
        return None
    return round(image_size * TRAIN_RESIZE_RATIO) if image_size > LARGE_IMAGE_MIN else image_size


def _read(source: Source, decode_size: int | None, num_workers: int) -> dict:
    if source.kind == "idx":
        classes = idx.FASHION_CLASSES if source.name == "fashion-mnist" else idx.MNIST_CLASSES
        return idx.read_idx_folder(source.path, classes)
    if source.kind == "cifar":
        return cifar.read_cifar(source.path, source.cifar_spec)
    return read_folder(source.path, size=decode_size, num_workers=num_workers)


def decoded(source: Source, decode_size: int | None, cache_dir, num_workers: int) -> tuple[dict, str, bool]:
    """The decoded payload (from the cache when the source is unchanged), its fingerprint, from_cache."""
    fingerprint = _fingerprint(source)
    if source.kind == "digits":  # 1,797 tiny images: rebuilding is faster than any cache
        return read_digits(decode_size), fingerprint, False
    label = f"folder-{source.path.name}" if source.kind == "folder" else source.name
    file = cache_path(cache_dir, label, fingerprint,
                      {"kind": source.kind, "size": decode_size})
    payload = load_cache(file)
    if payload is not None:
        return payload, fingerprint, True
    payload = _read(source, decode_size, num_workers)
    started = time.perf_counter()
    save_cache(file, payload)
    if file.exists():
        log.info("cached the decoded images in %s (%.1fs); later runs read them from there", file,
                 time.perf_counter() - started)
    return payload, fingerprint, False


def _bad_image_policy(payload: dict, on_bad_image: str, max_bad_images: int | float) -> list[tuple[str, str]]:
    bad = [tuple(b) for b in payload.get("bad_images", [])]
    if not bad:
        return []
    total = payload.get("total") or len(bad)
    if on_bad_image == "error":
        raise DataError(f"cannot read image {bad[0][0]}: {bad[0][1]} ({len(bad)} of {total} images unreadable); "
                        "fix or remove it, or skip unreadable images with on_bad_image='skip' (--on-bad-image skip)")
    limit = max_bad_images if isinstance(max_bad_images, int) else math.floor(max_bad_images * total)
    if len(bad) > limit:
        raise DataError(f"{len(bad)} of {total} images are unreadable, more than the limit max_bad_images="
                        f"{max_bad_images} ({limit}); first: {bad[0][0]}: {bad[0][1]}")
    return bad


def _check_nonempty_classes(split: ImageSplit, classes: list[str], where: str) -> None:
    counts = torch.bincount(split.labels, minlength=len(classes))
    empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        raise DataError(f"class {empty[0]!r} has no readable training image in {where}; add images or remove it")


def _splits(payload: dict, val_fraction: float, test_fraction: float, seed: int, name: str):
    parts = {k: ImageSplit(v["images"], v["labels"]) for k, v in payload["splits"].items()}
    if "train" not in parts and "all" not in parts:
        raise DataError(f"{name} has {'/'.join(sorted(parts))} folders but no train/ folder; add train/<class>/ "
                        "to train on it (`cnnzoo eval CHECKPOINT --data` evaluates it as it is)")
    if "all" in parts:
        rest, test = carve(parts["all"], test_fraction, TEST_SEED)
        train, val = carve(rest, val_fraction, seed)
        return train, val, test if len(test) else None
    train, val = (parts["train"], parts["val"]) if "val" in parts else carve(parts["train"], val_fraction, seed)
    return train, val, parts.get("test")


def _own_splits(payload: dict):
    """(train, val, test) as the source has them, nothing carved: a folder without train/ is all
    "train" (evaluation reads it whole), a missing split is None."""
    parts = {k: ImageSplit(v["images"], v["labels"]) for k, v in payload["splits"].items()}
    return parts.get("train", parts.get("all")), parts.get("val"), parts.get("test")


def _check_args(val_fraction: float, test_fraction: float, on_bad_image: str, max_bad_images, image_size) -> None:
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise DataError(f"val_fraction and test_fraction must be in [0, 1), got {val_fraction} and {test_fraction}")
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    fraction_too_big = isinstance(max_bad_images, float) and max_bad_images >= 1
    if isinstance(max_bad_images, bool) or max_bad_images < 0 or fraction_too_big:
        raise DataError(f"max_bad_images must be a count (int >= 0) or a fraction in [0, 1), got {max_bad_images!r}")
    if image_size is not None and image_size < 8:
        raise DataError(f"image_size must be at least 8, got {image_size}")


def _decoded_splits(source: Source, root: Path, decode_size: int | None, val_fraction: float, test_fraction: float,
                    seed: int, on_bad_image: str, max_bad_images: int | float, num_workers: int) -> tuple:
    """(payload, fingerprint, from_cache, bad images, (train, val, test)) of a decoded source."""
    payload, fingerprint, from_cache = decoded(source, decode_size, root, num_workers)
    bad = _bad_image_policy(payload, on_bad_image, max_bad_images)
    train, val, test = _splits(payload, val_fraction, test_fraction, seed, source.name)
    _check_nonempty_classes(train, list(payload["classes"]), source.name)
    return payload, fingerprint, from_cache, bad, (train, val, test)


def load_dataset(spec: str = "digits", *, val_fraction: float = 0.1, seed: int = 0, image_size: int | None = None,
                 cache_dir: str | Path | None = None, on_bad_image: str = "error", max_bad_images: int | float = 0.01,
                 download: bool = False, num_workers: int = 2, test_fraction: float = 0.2,
                 carve: bool = True, train_size: int | None = None, eval_size: int | None = None) -> DatasetBundle:
    """Load a dataset by name or path into uint8 train / val / test splits (see the module docstring).

    `test_fraction` (an addition to the agreed interface) is carved, stratified and with a
    fixed seed, only from sources without a test set of their own: digits and single folders.
    `carve=False` (for evaluating data other than a run's own) keeps the splits the source has and
    carves none: a folder without train/ comes whole as `train`, a missing val or test is None,
    and the statistics are not computed (mean/std are empty).
    `train_size` keeps the training images with that shorter side, for scale augmentation
    (VGG/ResNet: the largest S; the crop is `image_size`). `eval_size` keeps the val/test images
    of a large image folder whole (their centre square, shorter side `eval_size`) instead of
    centre-cropped to `image_size`, for dense and multi-crop testing; other sources' val/test
    images are whole already and it leaves them alone.
    """
    _check_args(val_fraction, test_fraction, on_bad_image, max_bad_images, image_size)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    source = resolve(str(spec), root, download)
    decode_size = _decode_size(source, image_size)
    if train_size or eval_size:
        return _load_resized(source, root, decode_size, image_size, train_size, eval_size, val_fraction,
                             test_fraction, seed, on_bad_image, max_bad_images, num_workers)
    if not carve:
        payload, fingerprint, from_cache = decoded(source, decode_size, root, num_workers)
        bad = _bad_image_policy(payload, on_bad_image, max_bad_images)
        return _uncarved(source, payload, list(payload["classes"]), image_size, fingerprint, bad, from_cache)
    payload, fingerprint, from_cache, bad, (train, val, test) = _decoded_splits(
        source, root, decode_size, val_fraction, test_fraction, seed, on_bad_image, max_bad_images, num_workers)
    classes = list(payload["classes"])
    large = source.kind == "folder" and decode_size is not None and decode_size != image_size
    if large:
        val, test = (ImageSplit(center_crop(s.images, image_size), s.labels) if s is not None else None
                     for s in (val, test))
    elif image_size and source.kind in ("idx", "cifar"):
        train, val, test = (ImageSplit(resize_uint8(s.images, image_size), s.labels) if s is not None else None
                            for s in (train, val, test))
    mean, std = channel_stats(train.images)
    c, h, w = val.images.shape[1:] if large else train.images.shape[1:]
    return DatasetBundle(name=source.name, classes=classes, train=train, val=val, test=test, mean=mean, std=std,
                         input_size=(c, h, w), fingerprint=fingerprint, bad_images=bad, from_cache=from_cache,
                         large_images=large)


def _uncarved(source: Source, payload: dict, classes: list[str], image_size: int | None, fingerprint: str,
              bad: list, from_cache: bool) -> DatasetBundle:
    """The bundle of `load_dataset(carve=False)`: the source's own splits, at image_size (large
    folder images centre-cropped as evaluated images always are)."""
    train, val, test = _own_splits(payload)
    first = next(s for s in (train, val, test) if s is not None)
    size = image_size or first.images.shape[-1]
    if source.kind == "folder" and first.images.shape[-1] != size:
        fit = (lambda s: ImageSplit(center_crop(s.images, size), s.labels))
    elif image_size and first.images.shape[-1] != size:
        fit = (lambda s: ImageSplit(resize_uint8(s.images, size), s.labels))
    else:
        fit = (lambda s: s)
    train, val, test = (fit(s) if s is not None else None for s in (train, val, test))
    c, h, w = next(s for s in (train, val, test) if s is not None).images.shape[1:]
    return DatasetBundle(name=source.name, classes=classes, train=train, val=val, test=test, mean=(), std=(),
                         input_size=(c, h, w), fingerprint=fingerprint, bad_images=bad, from_cache=from_cache)


def _load_resized(source: Source, root: Path, decode_size: int | None, image_size: int | None, train_size: int | None,
                  eval_size: int | None, val_fraction: float, test_fraction: float, seed: int, on_bad_image: str,
                  max_bad_images: int | float, num_workers: int) -> DatasetBundle:
    """load_dataset with the training images kept at `train_size` and/or large val/test images kept
    whole at `eval_size`: decoded once at the largest size needed, every other size a reduction."""
    if source.kind == "folder" and image_size is None:
        raise DataError(f"{source.name}: train_size/eval_size need image_size (the size of the model's input)")
    large = source.kind == "folder" and image_size > LARGE_IMAGE_MIN
    if source.kind == "folder":
        decode_size = max(size for size in (decode_size, train_size, eval_size if large else None) if size)
    payload, fingerprint, from_cache, bad, (train, val, test) = _decoded_splits(
        source, root, decode_size, val_fraction, test_fraction, seed, on_bad_image, max_bad_images, num_workers)
    classes = list(payload["classes"])
    crop = image_size or int(train.images.shape[-1])
    usual = round(image_size * TRAIN_RESIZE_RATIO) if large else image_size  # the sizes load_dataset stores

    def fit(split: ImageSplit | None, size: int | None, centre: int | None = None) -> ImageSplit | None:
        if split is None:
            return None
        images = resize_uint8(split.images, size) if size else split.images
        return ImageSplit(center_crop(images, centre) if centre else images, split.labels)

    train = fit(train, train_size or usual)
    whole = eval_size if large and eval_size else None
    val, test = (fit(s, whole) if whole else fit(s, usual, crop if large else None) for s in (val, test))
    mean, std = channel_stats(train.images)
    return DatasetBundle(name=source.name, classes=classes, train=train, val=val, test=test, mean=mean, std=std,
                         input_size=(int(train.images.shape[1]), crop, crop), fingerprint=fingerprint, bad_images=bad,
                         from_cache=from_cache, large_images=min(train.images.shape[-2:]) > crop)

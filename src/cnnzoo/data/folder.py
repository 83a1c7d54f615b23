"""Image-folder datasets: a folder, or a .tar / .tar.gz of one, with one sub-folder per class.

Two layouts are understood (a single wrapping folder, as tarballs often have, is looked through):
- split:  `train/<class>/*`, optional `val/<class>/*` (or `valid/`, `validation/`), optional `test/<class>/*`
  (training needs train/; a folder of only `test/<class>/*` can be evaluated)
- single: `<class>/*`, split later by a seeded stratified split
Files are decoded in worker processes straight from the archive's bytes or from disk; only
names with an image extension are read, and files at the wrong depth are ignored.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError
from .decode import IMAGE_EXTENSIONS, Item, decode_many

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass
class Listing:
    """Relative POSIX names of the image files and of every folder, in a stable order."""
    files: list[str]
    dirs: set[str]
    others: dict[str, int] = field(default_factory=dict)  # folder -> count of non-image files
    unsafe: int = 0  # archive members named absolutely or climbing out with "..": skipped


def max_member_bytes() -> int:
    """The largest archive member read as an image (CNNZOO_MAX_IMAGE_MB, default 256 MB): refused
    by its declared size before anything is read, so a crafted archive cannot fill memory."""
    return int(float(os.environ.get("CNNZOO_MAX_IMAGE_MB", "256")) * 2**20)


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS and not PurePosixPath(name).name.startswith(".")


def _parents(name: str) -> list[str]:
    return [str(p) for p in PurePosixPath(name).parents if str(p) != "."]


def _add(listing: Listing, name: str) -> None:
    listing.dirs.update(_parents(name))
    if _is_image(name):
        listing.files.append(name)
    else:
        parent = str(PurePosixPath(name).parent)
        listing.others[parent] = listing.others.get(parent, 0) + 1


def list_folder(root: Path) -> Listing:
    listing = Listing([], set())
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            listing.dirs.add(rel)
            listing.dirs.update(_parents(rel))
        elif path.is_file() or path.is_symlink():  # a dangling or looping link is listed, to be named as unreadable
            _add(listing, rel)
    return listing


def iter_archive(path: Path, listing: Listing) -> Iterator[Item]:
    """Yield (name, bytes) of every image member in one sequential pass, filling `listing`.

    Decoding starts on the first chunks while the rest of the archive is still being read. The
    archive is read to the end of its compressed stream, so gzip's CRC is checked: a corrupt
    archive is an error, never silently wrong pixels. Members with unsafe names are skipped and
    counted; a member larger than `max_member_bytes()` is refused before it is read.
    """
    limit = max_member_bytes()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).as_posix()  # also drops a leading "./"
                if name == ".":
                    continue
                if name.startswith("/") or ".." in PurePosixPath(name).parts:
                    listing.unsafe += 1
                elif member.isdir():
                    listing.dirs.add(name)
                    listing.dirs.update(_parents(name))
                elif member.isfile():
                    _add(listing, name)
                    if _is_image(name):
                        _check_size(member, path, limit)
                        yield name, tar.extractfile(member).read()
            _drain(tar)
        if listing.unsafe:
            log.warning("skipped %d member(s) of %s named absolutely or with '..' (they would land outside it)",
                        listing.unsafe, path)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"cannot read the archive {path}: {err}; check that it is a complete .tar or .tar.gz") from None


def _check_size(member: tarfile.TarInfo, path: Path, limit: int) -> None:
    if member.size > limit or member.issparse():
        raise DataError(f"{path}: member {member.name} declares {member.size:,} bytes"
                        f"{' (a sparse file)' if member.issparse() else ''}, more than the {limit:,}-byte limit per "
                        "image; raise CNNZOO_MAX_IMAGE_MB if the archive is trusted")


def _drain(tar: tarfile.TarFile) -> None:
    """Read the compressed stream to its end: gzip checks its CRC and length only there."""
    stream = tar.fileobj
    while stream is not None and stream.read(1 << 20):
        pass


def image_files(path: Path) -> dict[str, Path | bytes]:
    """Relative POSIX name -> file path (a folder) or bytes (an archive) of every image, sorted by name.

    The one way cnnzoo lists an image folder or reads a .tar(.gz): classification decodes the
    same files in worker processes (`read_folder`), denoising reads them whole.
    """
    if path.is_dir():
        return {name: path / name for name in list_folder(path).files}
    if not is_archive(path):
        raise DataError(f"{path} is not a folder or a .tar(.gz) archive")
    return dict(sorted(iter_archive(path, Listing([], set()))))


def _strip_wrapper(listing: Listing) -> str:
    """The prefix of a single folder that wraps everything (e.g. `cifar10/train/...`), or ''."""
    tops = {n.split("/", 1)[0] for n in listing.files} | {d.split("/", 1)[0] for d in listing.dirs}
    deep = all(n.count("/") >= 2 for n in listing.files)
    if len(tops) == 1 and deep and next(iter(tops)).lower() not in SPLIT_NAMES:
        return next(iter(tops)) + "/"
    return ""


def _classes_under(listing: Listing, prefix: str) -> list[str]:
    depth = prefix.count("/")
    return sorted(d[len(prefix):] for d in listing.dirs if d.startswith(prefix) and d.count("/") == depth)


def _check_classes(listing: Listing, prefix: str, classes: list[str], source: str) -> None:
    counts = {c: 0 for c in classes}
    for name in listing.files:
        if name.startswith(prefix) and name.count("/") > prefix.count("/"):
            counts[name[len(prefix):].split("/", 1)[0]] += 1
    for c, n in counts.items():
        if n == 0:
            extra = listing.others.get(prefix + c, 0)
            hint = f" ({extra} files with other extensions)" if extra else ""
            raise DataError(f"class folder {source}/{prefix}{c} has no images{hint}; add images or remove the folder")


def layout(listing: Listing, source: str) -> tuple[str, dict[str, str], list[str]]:
    """(wrapper prefix, {split: prefix}, classes); checks empty classes and split mismatches."""
    wrap = _strip_wrapper(listing)
    tops = _classes_under(listing, wrap)
    found = {SPLIT_NAMES[t.lower()]: f"{wrap}{t}/" for t in tops if t.lower() in SPLIT_NAMES}
    splits = {s: found[s] for s in ("train", "val", "test") if s in found}  # report train's problems first
    splits = splits or {"all": wrap}  # without train/ (only test/, say) it can still be evaluated
    first = next(iter(splits.values()))
    classes = _classes_under(listing, first)
    if len(classes) < 2:
        raise DataError(f"{source} needs one sub-folder per class (at least 2) under {first or './'}; found {classes}")
    for split, prefix in splits.items():
        found = _classes_under(listing, prefix)
        if found != classes:
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise DataError(f"{first.removeprefix(wrap).rstrip('/')}/{split} class mismatch in {source}: {split} lacks "
                            f"{missing}, has extra {extra}; give {split}/ the same class folders as "
                            f"{first.removeprefix(wrap)}")
        _check_classes(listing, prefix, classes, source)
    return wrap, splits, classes


def _assign(listing: Listing, splits: dict[str, str], classes: list[str]) -> tuple[list[str], list[str], list[int]]:
    """For every image file at class depth: its split and class index."""
    index = {c: i for i, c in enumerate(classes)}
    names, split_of, labels = [], [], []
    for name in listing.files:
        for split, prefix in splits.items():
            rest = name[len(prefix):].split("/")
            if name.startswith(prefix) and len(rest) >= 2 and rest[0] in index:
                names.append(name)
                split_of.append(split)
                labels.append(index[rest[0]])
                break
    return names, split_of, labels


def stack_images(arrays: list[np.ndarray], names: list[str], source: str) -> torch.Tensor:
    """uint8 [N, C, H, W]; grey images are repeated to 3 channels when any image has colour."""
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        examples = {}
        for a, n in zip(arrays, names):
            examples.setdefault(a.shape[:2], n)
        shown = ", ".join(f"{h}x{w} ({n})" for (h, w), n in list(examples.items())[:3])
        raise DataError(f"images in {source} have different sizes: {shown}; pass image_size=N to resize them")
    channels = max(a.shape[2] for a in arrays)
    out = np.empty((len(arrays), *arrays[0].shape[:2], channels), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a  # broadcasting repeats a grey image's one channel
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _decode_folder(path: Path, size: int | None, num_workers: int) -> tuple[Listing, dict[str, int], list, list]:
    """Decode every image file; returns the listing, {name: position}, arrays and failure reasons."""
    if is_archive(path):
        listing = Listing([], set())
        arrays, reasons = decode_many(iter_archive(path, listing), size=size, num_workers=num_workers,
                                      what=f"decoding {path.name}")
        position = {n: i for i, n in enumerate(listing.files)}
        listing.files.sort()
        return listing, position, arrays, reasons
    listing = list_folder(path)
    position = {n: i for i, n in enumerate(listing.files)}
    items: list[Item] = [(str(path / n), None) for n in listing.files]
    arrays, reasons = decode_many(items, size=size, num_workers=num_workers, what=f"decoding {path.name}",
                                  total=len(items))
    return listing, position, arrays, reasons


def read_folder(path: Path, *, size: int | None, num_workers: int) -> dict:
    """Decode an image folder or archive into {"classes", "splits", "bad_images"} (cache payload form)."""
    source = str(path)
    listing, position, arrays, reasons = _decode_folder(path, size, num_workers)
    _, splits, classes = layout(listing, source)
    names, split_of, labels = _assign(listing, splits, classes)
    order = [position[n] for n in names]
    shown = [f"{source}:{n}" if is_archive(path) else str(path / n) for n in names]
    bad = [(s, reasons[i]) for s, i in zip(shown, order) if reasons[i] is not None]
    good = [k for k, i in enumerate(order) if reasons[i] is None]
    if not good:
        raise DataError(f"no image in {source} could be read (first: {bad[0][0]}: {bad[0][1]})")
    images = stack_images([arrays[order[k]] for k in good], [shown[k] for k in good], source)
    split_arr = np.array(split_of)[good]
    label_t = torch.tensor(labels, dtype=torch.long)[good]
    out = {}
    for split in splits:
        idx = torch.from_numpy(np.nonzero(split_arr == split)[0])
        out[split] = {"images": images[idx], "labels": label_t[idx]}
    return {"classes": classes, "splits": out, "bad_images": [list(b) for b in bad], "total": len(names)}

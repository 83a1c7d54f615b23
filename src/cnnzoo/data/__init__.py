"""Datasets as uint8 tensors, a device-resident loader and whole-batch device augmentation.

`load_dataset(spec)` gives a `DatasetBundle` (train / val / test `ImageSplit`s of uint8
`[N, C, H, W]` images); `DeviceLoader` batches a split on the training device; `BatchAugment`
augments and normalises a whole batch there; `normalize` is the eval-time preprocessing.
"""

from ..errors import DataError
from .augment import BatchAugment, augment_policy, crop_flip, cutout, random_resized_crop, sample_beta
from .bundle import DatasetBundle, ImageSplit, channel_stats, stratified_split
from .datasets import NAMES, load_dataset
from .loader import DeviceLoader, derive_seed, epoch_permutation
from .transforms import center_crop, normalize, resize_uint8

__all__ = [
    "NAMES", "BatchAugment", "augment_policy", "DataError", "DatasetBundle", "DeviceLoader", "ImageSplit", "center_crop",
    "channel_stats", "crop_flip", "cutout", "default_augment", "derive_seed", "epoch_permutation", "load_dataset",
    "normalize", "random_resized_crop", "resize_uint8", "sample_beta", "stratified_split",
]


def default_augment(bundle: DatasetBundle, **overrides) -> BatchAugment:
    """BatchAugment with the dataset's usual crop and flip (`augment_policy`); overrides win."""
    opts = dict(mean=bundle.mean, std=bundle.std, num_classes=bundle.num_classes, **augment_policy(bundle))
    opts.update(overrides)
    return BatchAugment(**opts)

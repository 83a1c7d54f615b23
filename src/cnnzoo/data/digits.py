"""scikit-learn's handwritten digits (1,797 8x8 images, UCI optdigits test set): the offline default.

The 0..16 intensities are scaled to 0..255 and the images resized to 32x32 with bilinear
interpolation (so LeNet-style 32x32 models take them as they are). The test split is fixed
(20%, stratified, independent of the run's seed) so every run is judged on the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from .transforms import resize_uint8

TEST_FRACTION = 0.2
TEST_SEED = 0
SIZE = 32


def read_digits(size: int | None = None) -> dict:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.from_numpy(np.round(raw.images * (255 / 16)).astype(np.uint8))[:, None]
    images = resize_uint8(images, size or SIZE)
    labels = torch.from_numpy(raw.target.astype(np.int64))
    return {"classes": [str(i) for i in range(10)], "splits": {"all": {"images": images, "labels": labels}},
            "bad_images": [], "total": len(labels)}

"""Top-k predictions for image files, with the preprocessing stored in the checkpoint.

Each file is decoded like the training images were (cnnzoo.data.decode: alpha composited on
white, 16-bit scaled), converted to the model's channel count, resized so its shorter side
is the training input size and centre-cropped, then normalised with the training statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from ..export.formats import check_backend, onnx_runtime_model
from ..export.fuse import fast_inference_model
from .inference import model_from_checkpoint, read_checkpoint
from .runtime import resolve_device


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] | None  # (class, probability), best first
    error: str | None = None


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files given, with folders expanded (recursively, sorted) to the image files inside."""
    from ..data.decode import IMAGE_EXTENSIONS

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{item} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item} does not exist; give image files or folders of them")
    return files


def to_model_input(array: np.ndarray, in_chans: int, size: tuple[int, int]) -> torch.Tensor:
    """uint8 H x W x C -> uint8 [in_chans, H', W'] at the training size."""
    from ..data.decode import match_channels, resize_center_crop

    array = match_channels(array, in_chans)
    if size[0] == size[1]:
        array = resize_center_crop(array, size[0])
    tensor = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    if tuple(tensor.shape[1:]) != tuple(size):
        tensor = torch.nn.functional.interpolate(tensor[None].float(), size=size, mode="bilinear",
                                                 align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return tensor


def predict_files(checkpoint: str | Path, inputs: Sequence[str | Path], *, topk: int = 5, batch_size: int = 64,
                  device: str = "auto", trust: bool = False, ckpt: dict | None = None,
                  fast: bool = True, backend: str = "torch") -> list[Prediction]:
    """`ckpt`: the checkpoint already read (or published weights as one, engine.weights_init).

    `fast`: run the fast inference form (BatchNorm folded, channels_last; the same top-k, the
    probabilities within ~1e-6); `inference_mode` always. `backend` "onnxruntime": that form
    exported to ONNX in memory and run by ONNX Runtime on the CPU (cnnzoo[export]).
    """
    from ..data.decode import decode_image
    from ..data.transforms import normalize

    ckpt = ckpt if ckpt is not None else read_checkpoint(checkpoint, trust=trust)
    if ckpt.get("task", "classify") != "classify":
        raise DataError(f"{checkpoint} is a {ckpt.get('task')!r} checkpoint; predict is for classifiers")
    files = image_files(inputs)
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt, dev)
    prep, classes = ckpt["preprocessing"], list(ckpt["classes"])
    in_chans, size = int(prep["input_size"][0]), (int(prep["input_size"][1]), int(prep["input_size"][2]))
    check_backend(backend, dev)
    if fast:  # BatchNorm folded into the convolutions, channels_last (cnnzoo.export.fuse)
        sample = torch.randn(1, in_chans, *size, generator=torch.Generator().manual_seed(0)).to(dev)
        model = fast_inference_model(model, sample, channels_last=backend == "torch")
    if backend == "onnxruntime":
        model = onnx_runtime_model(model, (in_chans, *size))
        fast = False  # ONNX Runtime takes plain NCHW arrays
    k = max(1, min(topk, len(classes)))
    results: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        chunk, tensors = files[start:start + batch_size], []
        readable: list[int] = []
        for i, path in enumerate(chunk):
            try:
                tensors.append(to_model_input(decode_image(str(path)), in_chans, size))
                readable.append(i)
            except Exception as err:  # Pillow raises many types for broken files
                results.append(Prediction(str(path), None, f"unreadable image ({type(err).__name__}: {err})"))
        if not tensors:
            continue
        x = normalize(torch.stack(tensors).to(dev), prep["mean"], prep["std"])
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            probs = model(x).float().softmax(dim=1).cpu()
        values, indices = probs.topk(k, dim=1)
        for row, i in enumerate(readable):
            top = [(classes[j], float(p)) for p, j in zip(values[row].tolist(), indices[row].tolist())]
            results.append(Prediction(str(chunk[i]), top))
    order = {str(p): n for n, p in enumerate(files)}
    return sorted(results, key=lambda r: order[r.path])

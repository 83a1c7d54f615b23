"""torchvision and timm for the benchmarks that compare with them (the `reference` extra).

The torchvision 0.28 wheel that installs beside torch 2.13.0+cpu is a CUDA build whose compiled
ops do not register on a CPU-only torch; defining the two op schemas it looks for first lets
the import succeed (done only when the plain import fails). cnnzoo never imports either.
"""

from __future__ import annotations

import torch

_SCHEMAS: list = []  # the Library objects must stay alive for the schemas to stay defined


def torchvision_module():
    try:
        import torchvision
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SCHEMAS.append(lib)
        import torchvision
    return torchvision


def timm_module():
    torchvision_module()  # timm imports torchvision
    import timm

    return timm

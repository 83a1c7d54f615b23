"""Normalisation layers beyond torch's own."""

from __future__ import annotations

from torch import nn


class ShiftOnlyBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose scale stays at 1 (frozen) and whose shift trains: the airbench choice
    (Jordan 2024, arXiv 2404.00498). A following convolution can absorb any scale, so a learnt
    one only adds a direction the optimiser wanders in; the shifts are instead trained with a
    larger learning rate (`optim.norm_lr_scale`, 64 in airbench).

    `momentum` is torch's (the weight of the new batch statistics): airbench's "0.6" is 0.4 here.
    """

    def __init__(self, num_features: int, eps: float = 1e-12, momentum: float = 0.4):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)

"""The contract every cnnzoo classifier follows (see README, "Model contract").

`forward_features` maps images to a feature map, `forward_head` pools and classifies it,
`reset_classifier` swaps the head for another number of classes. Models with auxiliary
classifiers return `AuxLogits` in training mode only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..layers.head import ClassifierHead
from ..registry import ModelCfg
from .features import (
    FeatureInfo,
    FeatureListNet,
    collect_intermediates,
    resolve_indices,
)


class AuxLogits(NamedTuple):
    """Training-mode output of models with auxiliary heads (GoogLeNet, Inception v3).

    The engine adds `weight * cross_entropy(aux)` for each auxiliary output.
    """

    logits: torch.Tensor
    aux: tuple[torch.Tensor, ...]
    weight: float


class ZooModel(nn.Module):
    """Base class: a feature extractor followed by a `ClassifierHead` named `head`.

    Subclasses build their body, set `num_features`, and call `_init_head`. Models whose
    head is more than pool+dropout+linear (VGG, AlexNet) override `forward_head`.
    """

    # Instances set `num_classes`, `in_chans` and `num_features`. They are not annotated here:
    # under `from __future__ import annotations` a class annotation is the string 'int', which
    # torch.jit.script cannot resolve ("Unknown type annotation: 'int'").
    default_cfg = {}  # a ModelCfg, set by create_model
    feature_info = FeatureInfo([])  # each family declares its stages (models/features.py)

    def _init_head(self, num_classes: int, drop_rate: float = 0.0, pool_type: str = "avg") -> None:
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate, pool_type)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, *,
                              stop_early: bool = False, intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of the declared stages (`feature_info`), timm's signature.

        `indices`: None for all stages, n for the last n, or a sequence of stage indices.
        Returns (final feature map, maps) or, with `intermediates_only`, the maps alone;
        `stop_early` (with `intermediates_only`) skips the layers after the last map asked for.
        """
        take = resolve_indices(len(self.feature_info), indices)
        final, maps = collect_intermediates(self, x, take, stop_early and intermediates_only)
        return maps if intermediates_only else (final, maps)

    def as_backbone(self, out_indices: int | Sequence[int] | None = None) -> FeatureListNet:
        """This model without its classifier, returning the maps at `out_indices`."""
        return FeatureListNet(self, out_indices)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer; 0 classes gives pooled features (an identity head)."""
        self.head.reset(num_classes)
        self._set_num_classes(num_classes)

    def _set_num_classes(self, num_classes: int) -> None:
        """Record a new class count on the model and in its `default_cfg` (set by `create_model`)."""
        self.num_classes = num_classes
        if isinstance(self.default_cfg, ModelCfg):
            self.default_cfg = self.default_cfg.replace(num_classes=num_classes)


class AuxClassifierModel(ZooModel):
    """A model whose `aux_heads` (a ModuleDict keyed by the names of `features` children)
    classify intermediate maps during training, as in GoogLeNet and Inception v3.

    Auxiliary logits are returned (as `AuxLogits`) only in training mode with a classifier.
    """

    # Subclasses set `features` (nn.Sequential), `aux_heads` (nn.ModuleDict), `aux_weight` (float).

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxLogits:
        if not (self.training and len(self.aux_heads) and self.num_classes > 0):
            return self.forward_head(self.forward_features(x))
        aux = []
        for name, stage in self.features.named_children():
            x = stage(x)
            if name in self.aux_heads:
                aux.append(self.aux_heads[name](x))
        return AuxLogits(self.forward_head(x), tuple(aux), self.aux_weight)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for head in self.aux_heads.values():
            head.reset(num_classes)

"""Optimisers: SGD (momentum, Nesterov), AdamW, RMSprop, and RMSprop as TensorFlow computes it.

Inception v3 was trained with TensorFlow's RMSProp (decay 0.9, epsilon 1.0). TensorFlow adds
epsilon inside the square root, sqrt(ms + eps), and starts the mean square at 1; torch's
RMSprop adds it outside, sqrt(ms) + eps, and starts at 0. With eps = 1.0 the two differ by a
lot, so `rmsprop_tf` reproduces the TensorFlow update (the same finding as timm's RMSpropTF).

`sgd_scaled` is Nesterov SGD in airbench's units (Jordan 2024, arXiv 2404.00498): `lr` and
`weight_decay` are given per 1024 examples of a summed loss and per unit of momentum gain, so
that they keep their meaning when the batch size or the momentum changes. With the engine's
mean loss over a batch of B, torch's SGD gets lr' = lr x B / (1024 (1 + 1/(1 - momentum))) and
weight decay wd' = wd / lr: the decay of a step, lr' x wd' = wd x B / (1024 (1 + 1/(1 - momentum))),
does not depend on the learning rate (decoupled, as in Loshchilov & Hutter's SGDW), while the
schedule still scales both. `norm_lr_scale` (airbench: 64 for its batch-norm shifts) multiplies
the lr of normalisation-layer parameters and divides their weight decay, leaving their decay
per step unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

from .config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Trainable parameters, optionally with biases and norm weights (all 1-d tensors) undecayed.

    Decaying the scale of a normalisation layer or a bias regularises nothing useful (the
    following layer can undo it), as argued in Goyal et al. 2017 and used by timm.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def scale_norm_groups(groups: list[dict], model: nn.Module, scale: float, lr: float) -> list[dict]:
    """Each group split into its normalisation-layer parameters (lr x scale, weight decay / scale)
    and the rest; empty groups dropped."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    out = []
    for group in groups:
        norm = [p for p in group["params"] if id(p) in norm_ids]
        rest = [p for p in group["params"] if id(p) not in norm_ids]
        if rest:
            out.append({**group, "params": rest})
        if norm:
            out.append({**group, "params": norm, "lr": group.get("lr", lr) * scale,
                        "weight_decay": group["weight_decay"] / scale})
    return out


def scaled_sgd_settings(lr: float, weight_decay: float, momentum: float, batch_size: int) -> tuple[float, float]:
    """(torch lr, torch weight decay) of `sgd_scaled` for a mean loss over `batch_size` examples."""
    per_example = lr / (1024 * (1 + 1 / (1 - momentum)))
    return per_example * batch_size, weight_decay / lr


def build_optimizer(model: nn.Module, cfg: OptimConfig, *, batch_size: int = 1024) -> Optimizer:
    """The optimiser of `cfg` over the trainable parameters; `batch_size` matters to sgd_scaled only."""
    lr, weight_decay = cfg.lr, cfg.weight_decay
    if cfg.name == "sgd_scaled":
        lr, weight_decay = scaled_sgd_settings(cfg.lr, cfg.weight_decay, cfg.momentum, batch_size)
    groups = param_groups(model, weight_decay, cfg.no_decay_norm_bias)
    if cfg.norm_lr_scale != 1:
        groups = scale_norm_groups(groups, model, cfg.norm_lr_scale, lr)
    if cfg.name == "sgd_scaled":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps or 1e-8)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps or 1e-8, momentum=cfg.momentum)
    if cfg.name == "rmsprop_tf":
        return RMSpropTF(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps or 1.0, momentum=cfg.momentum)
    raise ValueError(f"unknown optimiser {cfg.name!r}")  # the config's Literal type prevents this


class RMSpropTF(Optimizer):
    """TensorFlow's RMSProp: ms <- alpha ms + (1 - alpha) g^2 (ms starts at 1);
    mom <- momentum mom + lr g / sqrt(ms + eps); p <- p - mom. Weight decay adds wd * p to g."""

    def __init__(self, params, lr: float = 0.045, alpha: float = 0.9, eps: float = 1.0,
                 momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                square_avg = state["square_avg"]
                square_avg.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                update = grad / square_avg.add(group["eps"]).sqrt_()
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buf)
        return loss


def freeze_backbone(model: nn.Module) -> list[str]:
    """Stop gradients everywhere but the classifier; returns the names of what still trains."""
    classifier = model.get_classifier()
    trainable = {id(p) for p in classifier.parameters()}
    if not trainable:
        raise ValueError("the model's classifier has no parameters (num_classes=0?)")
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in trainable)
        if id(p) in trainable:
            names.append(name)
    return names


def set_train_mode(model: nn.Module, frozen_backbone: bool) -> None:
    """model.train(), except a frozen backbone stays in eval mode (BN statistics fixed, no dropout)."""
    if not frozen_backbone:
        model.train()
        return
    model.eval()
    model.get_classifier().train()

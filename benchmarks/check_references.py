"""Compare cnnzoo's models with torchvision / timm, where those libraries are installed.

For each registered model with a reference, build both and compare the parameter count and
the multiset of parameter shapes (a stronger check than the count: same layers, same sizes).
Optionally (--outputs) copies the reference weights into cnnzoo's model when both state
dicts list the same shapes in the same order, and compares the outputs on one random batch.

    python benchmarks/check_references.py [--outputs] [PATTERN]

Neither library is a dependency of cnnzoo; this script is for maintainers.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections import Counter

import torch
from _references import timm_module, torchvision_module

import cnnzoo

# cnnzoo name -> (library, reference name, builder kwargs)
REFERENCES = {
    "alexnet": ("torchvision", "alexnet", {}),
    **{n: ("torchvision", n, {}) for n in (
        "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
        "densenet121", "densenet169", "densenet201", "densenet161", "mobilenet_v2", "mobilenet_v3_large",
        "mobilenet_v3_small")},
    "googlenet": ("torchvision", "googlenet", dict(aux_logits=True, init_weights=True)),
    "inception_v3": ("torchvision", "inception_v3", dict(aux_logits=True, init_weights=True)),
    "inception_v4": ("timm", "inception_v4", {}),
    "inception_resnet_v2": ("timm", "inception_resnet_v2", {}),
    "xception": ("timm", "legacy_xception", {}),
    "mobilenet_v1": ("timm", "mobilenetv1_100", {}),
    "pnasnet5large": ("timm", "pnasnet5large", {}),
    "seresnet18": ("timm", "seresnet18", {}),
    "seresnet34": ("timm", "seresnet34", {}),
    "seresnet50": ("timm", "seresnet50", {}),
    "seresnet101": ("timm", "seresnet101", {}),
    "seresnet152": ("timm", "seresnet152", {}),
    "seresnext50_32x4d": ("timm", "seresnext50_32x4d", {}),
}


def build_reference(library: str, name: str, kwargs: dict) -> torch.nn.Module:
    if library == "torchvision":
        return torchvision_module().models.get_model(name, weights=None, **kwargs)
    return timm_module().create_model(name, pretrained=False, **kwargs)


def shapes(model: torch.nn.Module) -> Counter:
    return Counter(tuple(p.shape) for p in model.parameters())


def compare_outputs(ours, ref, size) -> str:
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    ours_keys = [k for k in ours_sd if not k.endswith("num_batches_tracked")]
    ref_keys = [k for k in ref_sd if not k.endswith("num_batches_tracked")]
    if [ours_sd[k].shape for k in ours_keys] != [ref_sd[k].shape for k in ref_keys]:
        return "outputs: state dicts differ in order, not compared"
    ours.load_state_dict({**ours_sd, **{k: ref_sd[r] for k, r in zip(ours_keys, ref_keys)}})
    x = torch.randn(2, *size)
    with torch.no_grad():
        diff = (ours.eval()(x) - ref.eval()(x)).abs().max().item()
    return f"outputs: max |diff| {diff:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*")
    parser.add_argument("--outputs", action="store_true", help="also copy weights and compare outputs")
    args = parser.parse_args()
    failures = 0
    for name, (library, ref_name, kwargs) in REFERENCES.items():
        if not fnmatch.fnmatch(name, args.pattern) or name not in cnnzoo.list_models():
            continue
        try:
            ref = build_reference(library, ref_name, kwargs)
        except ImportError as err:
            print(f"{name:24s} skipped: {err}")
            continue
        ours = cnnzoo.create_model(name)
        n_ours, n_ref = (sum(p.numel() for p in m.parameters()) for m in (ours, ref))
        same_shapes = shapes(ours) == shapes(ref)
        ok = n_ours == n_ref and same_shapes
        failures += not ok
        line = f"{name:24s} {'OK  ' if ok else 'FAIL'} ours {n_ours:>12,}  {library}:{ref_name} {n_ref:>12,}  shapes {'same' if same_shapes else 'DIFFER'}"
        if args.outputs and ok:
            line += "  " + compare_outputs(ours, ref, cnnzoo.model_info(name)["input_size"])
        print(line, flush=True)
    print(f"{failures} mismatch(es)")


if __name__ == "__main__":
    main()

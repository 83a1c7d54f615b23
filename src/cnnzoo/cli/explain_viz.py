"""`cnnzoo explain gradcam | attention | kernels | features | depthwise`: the pictures of what a
trained network does, registered as topics of `cnnzoo explain` beside `conv` and `receptive-field`.

Why a module of its own: these topics load a trained model and draw with matplotlib (an
optional extra), while the arithmetic topics in explain.py need neither; each topic here is a
thin wrapper over cnnzoo.viz.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._text import count
from ..errors import CnnzooError


@dataclass
class Explainable:
    """A model to explain with what preprocessing its images need."""

    label: str
    model: nn.Module
    classes: list[str]
    mean: list[float]
    std: list[float]
    input_size: tuple[int, int, int]
    out_dir: Path  # where pictures go unless -o says otherwise


def register_topics(sub: argparse._SubParsersAction) -> None:
    _register_gradcam(sub)
    _register_attention(sub)
    _register_kernels(sub)
    _register_features(sub)
    _register_depthwise(sub)


def _model_arguments(p: argparse.ArgumentParser, images: bool) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint written by `cnnzoo train`, or bare weights with --model, or a registered "
                        "model name (untrained weights)")
    if images:
        p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of them")
    p.add_argument("--model", metavar="NAME", help="the architecture of bare weights (a state dict or safetensors)")
    p.add_argument("-o", "--out", metavar="DIR", type=Path,
                   help="output folder (default: explain/ beside the checkpoint, or ./explain)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in the checkpoint (trusted files only)")


def _register_gradcam(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gradcam", help="Grad-CAM: where a classifier looks, one overlay PNG per image",
                       description="Grad-CAM (Selvaraju et al. 2017) of the predicted class (or --class) at the last "
                                   "spatial feature map, or at --layer (a name from `cnnzoo summary`).")
    _model_arguments(p, images=True)
    p.add_argument("--layer", metavar="NAME", help="the layer to explain (default: the last map larger than 1x1)")
    p.add_argument("--class", dest="target", metavar="CLASS", help="explain this class instead of the prediction")
    p.add_argument("--topk", type=int, default=3, help="classes named on each picture (default 3)")
    p.set_defaults(func=run_gradcam)


def _register_attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="BAM/CBAM spatial maps, SE/GE excitations, SK branch weights",
                       description="Draw what the attention modules of an SE/CBAM/BAM/GE/SK network do on the given "
                                   "images: spatial maps and channel excitations of the last module of each stage "
                                   "(images with the same predicted class are averaged).")
    _model_arguments(p, images=True)
    p.set_defaults(func=run_attention)


def _register_kernels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernels", help="the first layer's kernels as an image grid (the AlexNet figure)",
                       description="The kernels of the first convolution, each stretched to its own range.")
    _model_arguments(p, images=False)
    p.set_defaults(func=run_kernels)


def _register_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="the feature maps of one layer for one image",
                       description="Every channel (up to --max) of a layer's output for an image.")
    _model_arguments(p, images=True)
    p.add_argument("--layer", metavar="NAME", help="a name from `cnnzoo summary` (default: Grad-CAM's layer)")
    p.add_argument("--max", dest="max_maps", type=int, default=64, help="channels drawn (default 64)")
    p.set_defaults(func=run_features)


def _register_depthwise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("depthwise", help="near-zero (dead) depthwise kernels per layer; several models: one table",
                       description="For each depthwise convolution, the kernels whose largest |weight| is below "
                                   "THRESHOLD x the largest in the layer. One model: a per-layer table and a plot; "
                                   "several (e.g. ReLU vs ReLU6 vs linear-bottleneck runs): one comparison table.")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT_OR_MODEL")
    p.add_argument("--model", metavar="NAME", help="the architecture of bare weights")
    p.add_argument("--threshold", type=float, default=None, help="relative threshold (default 0.01)")
    p.add_argument("-o", "--out", metavar="DIR", type=Path, help="output folder for the plot")
    p.add_argument("--trust-checkpoint", action="store_true")
    p.set_defaults(func=run_depthwise)


# ------------------------------------------------------------------------------ loading


def load_explainable(spec: str, *, model_name: str | None = None, trust: bool = False) -> Explainable:
    """A cnnzoo checkpoint, bare weights with `model_name`, or a registered model name (untrained)."""
    path = Path(spec)
    if path.is_file() and model_name is None:
        return _from_checkpoint(path, trust)
    if path.is_file():
        return _from_weights(path, model_name, trust)
    from ..registry import list_models

    if spec in list_models():
        return _registered(spec)
    raise CnnzooError(f"{spec} is neither a file nor a registered model name (see `cnnzoo list`)")


def _from_checkpoint(path: Path, trust: bool) -> Explainable:
    from ..engine.inference import model_from_checkpoint, read_checkpoint

    ckpt = read_checkpoint(path, trust=trust)
    prep = ckpt["preprocessing"]
    return Explainable(f"{path} ({ckpt['model_name']})", model_from_checkpoint(ckpt), list(ckpt.get("classes") or []),
                       list(prep["mean"]), list(prep["std"]), tuple(prep["input_size"]), path.parent / "explain")


def _from_weights(path: Path, model_name: str, trust: bool) -> Explainable:
    from ..engine.weights_init import read_state_dict

    state, _ = read_state_dict(path, trust=trust)
    target = _registered(model_name)
    try:
        target.model.load_state_dict(state)
    except RuntimeError as err:
        raise CnnzooError(f"{path} does not fit {model_name}: {' '.join(str(err).split())[:200]}") from None
    target.label, target.out_dir = f"{path} ({model_name})", path.parent / "explain"
    return target


def _registered(name: str) -> Explainable:
    from ..registry import create_model, model_info

    info = model_info(name)
    model = create_model(name).eval()
    classes = [str(i) for i in range(getattr(model, "num_classes", 0) or 0)]
    return Explainable(f"{name} (untrained)", model, classes, list(info["mean"]), list(info["std"]),
                       tuple(info["input_size"]), Path("explain"))


def read_images(target: Explainable, inputs: list[str]) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    """(files, uint8 images at the model's size, the same normalised) for image files/folders."""
    from ..data.decode import decode_image
    from ..data.transforms import normalize
    from ..engine.predict import image_files, to_model_input

    files = image_files(inputs)
    c, h, w = target.input_size
    shown = []
    for path in files:
        try:
            shown.append(to_model_input(decode_image(str(path)), c, (h, w)))
        except Exception as err:  # Pillow raises many types for broken files
            raise CnnzooError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
    shown_batch = torch.stack(shown)
    return files, shown_batch, normalize(shown_batch.float(), target.mean, target.std)


def _out_dir(args: argparse.Namespace, target: Explainable) -> Path:
    out = args.out or target.out_dir
    out.mkdir(parents=True, exist_ok=True)
    return out


def _class_names(target: Explainable, n: int) -> list[str]:
    return target.classes if len(target.classes) == n else [str(i) for i in range(n)]


# ------------------------------------------------------------------------------ topics


def run_gradcam(args: argparse.Namespace) -> int:
    from .. import viz

    target = load_explainable(args.checkpoint, model_name=args.model, trust=args.trust_checkpoint)
    files, shown, x = read_images(target, args.images)
    targets = None
    if args.target is not None:
        if args.target not in target.classes:
            raise CnnzooError(f"--class {args.target!r} is not one of the model's classes: "
                              f"{', '.join(target.classes[:20])}")
        targets = [target.classes.index(args.target)] * len(files)
    cam = viz.gradcam(target.model, x, args.layer, classes=target.classes or None, targets=targets)
    out = _out_dir(args, target)
    print(f"{target.label}: Grad-CAM at layer {cam.layer} ({cam.layer_size[0]}x{cam.layer_size[1]})")
    for i, path in enumerate(files):
        plot = viz.plot_gradcam(shown[i], cam, i, out / f"{path.stem}-gradcam.png", topk=args.topk, title=path.name)
        top = ", ".join(f"{name} {100 * p:.1f}%" for name, p in cam.top(i, args.topk))
        print(f"{path}: {top} -> {plot.path}")
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from .. import viz

    target = load_explainable(args.checkpoint, model_name=args.model, trust=args.trust_checkpoint)
    files, shown, x = read_images(target, args.images)
    with torch.no_grad():
        logits = target.model(x)
    names = _class_names(target, logits.shape[1])
    labels = [names[p] for p in logits.argmax(dim=1).tolist()]
    plots = viz.plot_attention(target.model, x, shown, _out_dir(args, target), labels)
    if not plots:
        raise CnnzooError(f"{target.label} has no attention modules (SE, CBAM, BAM, GE, SK); try an se_*, cbam_*, "
                          "bam_*, ge_* or sk* model from `cnnzoo list`")
    for path, label in zip(files, labels):
        print(f"{path}: predicted {label}")
    for plot in plots:
        print(f"wrote {plot.path} ({count(plot.panels, 'panel')})")
    return 0


def run_kernels(args: argparse.Namespace) -> int:
    from .. import viz

    target = load_explainable(args.checkpoint, model_name=args.model, trust=args.trust_checkpoint)
    plot = viz.plot_first_layer_kernels(target.model, _out_dir(args, target) / "kernels.png")
    print(f"{target.label}: {count(plot.panels, 'first-layer kernel')} -> {plot.path}")
    return 0


def run_features(args: argparse.Namespace) -> int:
    from .. import viz

    target = load_explainable(args.checkpoint, model_name=args.model, trust=args.trust_checkpoint)
    files, _, x = read_images(target, args.images)
    layer = args.layer or viz.default_target_layer(target.model, x[:1])
    out = _out_dir(args, target)
    for i, path in enumerate(files):
        maps = viz.feature_maps(target.model, x[i], layer)
        title = f"{path.name}: {layer}, {maps.shape[0]} channels of {maps.shape[1]}x{maps.shape[2]}"
        plot = viz.plot_feature_maps(maps, out / f"{path.stem}-{layer.replace('.', '_')}.png", title, args.max_maps)
        print(f"{path}: layer {layer} -> {plot.path} ({count(plot.panels, 'channel')} drawn)")
    return 0


def run_depthwise(args: argparse.Namespace) -> int:
    from .. import viz
    from ..viz.kernels import NEAR_ZERO
    from .table import format_table

    threshold = NEAR_ZERO if args.threshold is None else args.threshold
    if not 0 < threshold < 1:
        raise CnnzooError(f"--threshold must be between 0 and 1, got {threshold}")
    targets = [load_explainable(s, model_name=args.model, trust=args.trust_checkpoint) for s in args.checkpoints]
    for target in targets:
        if not viz.depthwise_health(target.model, threshold):
            raise CnnzooError(f"{target.label} has no depthwise convolutions (try mobilenet_*, xception*, pnasnet*)")
    if len(targets) > 1:
        table = viz.compare_depthwise({t.label: t.model for t in targets}, threshold)
        print(format_table(table.headers, table.rows, right_align={2, 3, 4, 5}) + "\n" + table.note)
        return 0
    target = targets[0]
    layers = viz.depthwise_health(target.model, threshold)
    table = viz.depthwise_table(layers, threshold)
    print(f"{target.label}\n\n" + format_table(table.headers, table.rows, right_align={2, 3, 4}) + "\n" + table.note)
    if viz.has_matplotlib():
        plot = viz.plot_depthwise_health(layers, _out_dir(args, target) / "depthwise.png", target.label, threshold)
        print(f"plot: {plot.path}")
    return 0

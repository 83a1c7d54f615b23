"""Key-name converters: torchvision and timm state dicts -> cnnzoo's parameter names.

Each family has one function that renames keys by what they mean (which layer of which
block), never by their position in the file, so a file from another architecture fails with
named missing/unexpected keys instead of loading silently into the wrong layers. Where the
publisher's name is an index into an `nn.Sequential` (torchvision's VGG, AlexNet and
MobileNets), the index is decoded from that publisher's layout: which sub-layers a block
has is read from the keys present, not assumed from the order of the tensors.

`CONVERTERS[(source, family)]` gives the function; `check_state` compares a converted dict
with a model and raises one `WeightsError` naming every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping

import torch

from .entry import WeightsError

State = dict[str, torch.Tensor]
Converter = Callable[[Mapping[str, torch.Tensor]], State]
Rules = Iterable[tuple[str, "str | Callable[[re.Match], str]"]]


def rename(state: Mapping[str, torch.Tensor], rules: Rules) -> State:
    """Apply every (regex, replacement) rule, in order, to every key."""
    rules = [(re.compile(pattern), repl) for pattern, repl in rules]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def identity(state: Mapping[str, torch.Tensor]) -> State:
    """cnnzoo's own names (a cnnzoo checkpoint's state dict, or a file `weights convert` wrote)."""
    return dict(state)


# --- torchvision -------------------------------------------------------------------------------

def tv_resnet(state: Mapping[str, torch.Tensor]) -> State:
    """ResNet/ResNeXt (torchvision, and timm's plain ResNets): only the classifier is named apart."""
    return rename(state, [(r"^fc\.", "head.fc.")])


def tv_densenet(state: Mapping[str, torch.Tensor]) -> State:
    """DenseNet; the published files still use the pre-0.3 names `norm.1` for `norm1` (torchvision
    renames them in `_load_state_dict` the same way)."""
    return rename(state, [
        (r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2."),
        (r"^classifier\.", "head.fc."),
    ])


_ALEXNET = {"features.0": "features.conv1", "features.3": "features.conv2", "features.6": "features.conv3",
            "features.8": "features.conv4", "features.10": "features.conv5",
            "classifier.1": "head.pre_logits.fc1", "classifier.4": "head.pre_logits.fc2", "classifier.6": "head.fc"}
_VGG_HEAD = {"classifier.0": "head.pre_logits.fc1", "classifier.3": "head.pre_logits.fc2", "classifier.6": "head.fc"}


def _module_map(state: Mapping[str, torch.Tensor], table: Mapping[str, str]) -> State:
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[f"{table.get(module, module)}.{param}"] = value
    return out


def tv_alexnet(state: Mapping[str, torch.Tensor]) -> State:
    """AlexNet: torchvision's `features.<i>`/`classifier.<i>` indices -> cnnzoo's layer names."""
    return _module_map(state, _ALEXNET)


def tv_vgg(state: Mapping[str, torch.Tensor]) -> State:
    """VGG (± BN): `features.<i>` is an index into [conv, (bn), relu]* with a max-pool closing
    each stage, so a conv whose index follows the previous conv's block directly is in the same
    stage and a gap of one (the pool) starts the next: conv<stage>_<n>(.conv/.bn)."""
    conv_idx = sorted({int(m.group(1)) for k, v in state.items()
                       if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and v.dim() == 4})
    with_bn = any(re.fullmatch(rf"features\.{conv_idx[0] + 1}\.running_mean", k) for k in state) if conv_idx else False
    step = 3 if with_bn else 2
    table, stage, n = {}, 1, 0
    for prev, idx in zip([None] + conv_idx, conv_idx):
        if prev is not None and idx - prev != step:
            stage, n = stage + 1, 0
        n += 1
        name = f"features.conv{stage}_{n}"
        table[f"features.{idx}"] = f"{name}.conv"
        if with_bn:
            table[f"features.{idx + 1}"] = f"{name}.bn"
    return _module_map(state, {**table, **_VGG_HEAD})


def _block_layers(state: Mapping[str, torch.Tensor], prefix: str) -> list[str]:
    """The sub-module indices under `prefix` that hold tensors, in numeric order."""
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return [str(i) for i in sorted(found)]


def tv_mobilenet_v2(state: Mapping[str, torch.Tensor]) -> State:
    """MobileNetV2: `features.0` stem, `features.1..17` inverted residuals, `features.18` 1x1 head.

    An inverted residual's `conv` holds [expand ConvBNReLU,] depthwise ConvBNReLU, projection
    conv, BN; the first block has no expansion, which is read from its number of sub-layers.
    """
    last = max(int(i) for i in _block_layers(state, "features."))
    table = {"features.0.0": "stem.conv", "features.0.1": "stem.bn",
             f"features.{last}.0": "conv_head.conv", f"features.{last}.1": "conv_head.bn", "classifier.1": "head.fc"}
    for i in range(1, last):
        subs = _block_layers(state, f"features.{i}.conv.")
        names = (["conv_pw"] if len(subs) == 4 else []) + ["conv_dw", "conv_pwl.conv", "conv_pwl.bn"]
        for sub, name in zip(subs, names, strict=True):
            if name in ("conv_pw", "conv_dw"):
                table[f"features.{i}.conv.{sub}.0"] = f"blocks.{i - 1}.{name}.conv"
                table[f"features.{i}.conv.{sub}.1"] = f"blocks.{i - 1}.{name}.bn"
            else:
                table[f"features.{i}.conv.{sub}"] = f"blocks.{i - 1}.{name}"
    return _module_map(state, table)


def tv_mobilenet_v3(state: Mapping[str, torch.Tensor]) -> State:
    """MobileNetV3: `features.<i>.block.<j>` holds [expand,] depthwise, [squeeze-excite,] project;
    an SE layer is recognised by its `fc1`, the expansion by there being three convolutions."""
    last = max(int(i) for i in _block_layers(state, "features."))
    table = {"features.0.0": "stem.conv", "features.0.1": "stem.bn", f"features.{last}.0": "conv_last.conv",
             f"features.{last}.1": "conv_last.bn", "classifier.0": "conv_head", "classifier.3": "classifier"}
    for i in range(1, last):
        prefix = f"features.{i}.block."
        subs = _block_layers(state, prefix)
        se = [s for s in subs if f"{prefix}{s}.fc1.weight" in state]
        convs = [s for s in subs if s not in se]
        names = (["conv_pw"] if len(convs) == 3 else []) + ["conv_dw", "conv_pwl"]
        for sub, name in zip(convs, names, strict=True):
            table[f"{prefix}{sub}.0"] = f"blocks.{i - 1}.{name}.conv"
            table[f"{prefix}{sub}.1"] = f"blocks.{i - 1}.{name}.bn"
        for sub in se:
            table[f"{prefix}{sub}.fc1"] = f"blocks.{i - 1}.attn.fc1"
            table[f"{prefix}{sub}.fc2"] = f"blocks.{i - 1}.attn.fc2"
    return _module_map(state, table)


def tv_googlenet(state: Mapping[str, torch.Tensor]) -> State:
    """GoogLeNet: the body moves under `features`, aux1/aux2 become the heads after 4a/4d."""
    return rename(state, [
        (r"^(conv\d|inception\d[a-e])\.", r"features.\1."),
        (r"^aux1\.", "aux_heads.inception4a."), (r"^aux2\.", "aux_heads.inception4d."),
        (r"^(aux_heads\.\w+)\.fc2\.", r"\1.fc."),
        (r"^fc\.", "head.fc."),
    ])


# Inception v3 branch names (torchvision = timm) -> cnnzoo's branch<k>[.<i>[.branch<j>]].
_V3_BRANCHES = {
    "branch1x1": "branch1", "branch5x5_1": "branch2.0", "branch5x5_2": "branch2.1",
    "branch3x3dbl_1": "branch3.0", "branch3x3dbl_2": "branch3.1", "branch3x3dbl_3": "branch3.2",
    "branch_pool": "branch4.1", "branch7x7_1": "branch2.0", "branch7x7_2": "branch2.1", "branch7x7_3": "branch2.2",
    **{f"branch7x7dbl_{i}": f"branch3.{i - 1}" for i in range(1, 6)},
    "branch3x3_2a": "branch2.1.branch1", "branch3x3_2b": "branch2.1.branch2",
    "branch3x3dbl_3a": "branch3.2.branch1", "branch3x3dbl_3b": "branch3.2.branch2",
}
# Blocks whose branches are numbered differently: the reductions 6a and 7a, and 7b/7c's 3x3_1.
_V3_SPECIAL = {
    "6a": {"branch3x3": "branch1", "branch3x3dbl_1": "branch2.0", "branch3x3dbl_2": "branch2.1",
           "branch3x3dbl_3": "branch2.2"},
    "7a": {"branch3x3_1": "branch1.0", "branch3x3_2": "branch1.1",
           **{f"branch7x7x3_{i}": f"branch2.{i - 1}" for i in range(1, 5)}},
    "7b": {"branch3x3_1": "branch2.0"}, "7c": {"branch3x3_1": "branch2.0"},
}
_V3_STEM = {"Conv2d_1a_3x3": "conv1", "Conv2d_2a_3x3": "conv2", "Conv2d_2b_3x3": "conv3",
            "Conv2d_3b_1x1": "conv4", "Conv2d_4a_3x3": "conv5"}


def _v3_mixed(match: re.Match) -> str:
    block, branch = match.group(1), match.group(2)
    name = _V3_SPECIAL.get(block, {}).get(branch) or _V3_BRANCHES[branch]
    return f"features.mixed_{block}.{name}."


def tv_inception_v3(state: Mapping[str, torch.Tensor]) -> State:
    """Inception v3 (torchvision and timm share these names): Mixed_<b>.<branch> -> mixed_<b>.branch<k>."""
    return rename(state, [
        (r"^(Conv2d_\w+?)\.", lambda m: f"features.stem.{_V3_STEM[m.group(1)]}."),
        (r"^Mixed_(\w+?)\.(branch\w+?)\.", _v3_mixed),
        (r"^AuxLogits\.", "aux_heads.mixed_6e."),
        (r"^fc\.", "head.fc."),
    ])


# --- timm --------------------------------------------------------------------------------------

def timm_senet(state: Mapping[str, torch.Tensor]) -> State:
    """timm's SE-ResNet/SE-ResNeXt: a ResNet whose blocks call their SE module `se`."""
    return rename(state, [(r"\.se\.", ".attn."), (r"^fc\.", "head.fc.")])


def timm_sknet(state: Mapping[str, torch.Tensor]) -> State:
    """timm's SK-ResNeXt: conv-bn pairs are ConvNormAct modules, the SK paths and their attention
    sit under `conv2.paths`/`conv2.attn`."""
    return rename(state, [
        (r"\.conv([13])\.conv\.", r".conv\1."), (r"\.conv([13])\.bn\.", r".bn\1."),
        (r"\.conv2\.paths\.", ".conv2.branches."),
        (r"\.conv2\.attn\.fc_reduce\.", ".conv2.fc_reduce.conv."), (r"\.conv2\.attn\.bn\.", ".conv2.fc_reduce.bn."),
        (r"\.conv2\.attn\.fc_select\.", ".conv2.fc_select."),
        (r"^fc\.", "head.fc."),
    ])


def timm_mobilenet_v1(state: Mapping[str, torch.Tensor]) -> State:
    """timm's MobileNet V1 (an EfficientNet builder): stages of blocks `blocks.<s>.<b>` -> one
    flat `blocks.<n>`, n counted from the number of blocks each stage has in the file."""
    stages = _block_layers(state, "blocks.")
    offsets, total = {}, 0
    for s in stages:
        offsets[s] = total
        total += len(_block_layers(state, f"blocks.{s}."))
    return rename(state, [
        (r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn."),
        (r"^blocks\.(\d+)\.(\d+)\.", lambda m: f"blocks.{offsets[m.group(1)] + int(m.group(2))}."),
        (r"\.conv_dw\.", ".dw.conv."), (r"\.bn1\.", ".dw.bn."), (r"\.conv_pw\.", ".pw.conv."), (r"\.bn2\.", ".pw.bn."),
        (r"^classifier\.", "head.fc."),
    ])


def _branch_shift(match: re.Match) -> str:
    """timm's Inception-v4/ResNet-v2 number branches from 0, cnnzoo from 1."""
    return f".branch{int(match.group(1)) + 1}"


# timm inception_v4 `features.<i>` -> cnnzoo block; sub-layer renames of the C block.
_V4_BLOCKS = {0: "stem.conv1", 1: "stem.conv2", 2: "stem.conv3", 3: "mixed_3a", 4: "mixed_4a", 5: "mixed_5a",
              **{6 + i: f"inception_a{i + 1}" for i in range(4)}, 10: "reduction_a",
              **{11 + i: f"inception_b{i + 1}" for i in range(7)}, 18: "reduction_b",
              **{19 + i: f"inception_c{i + 1}" for i in range(3)}}
_V4_C_BRANCHES = {"branch1_0": "branch2.0", "branch1_1a": "branch2.1.branch1", "branch1_1b": "branch2.1.branch2",
                  "branch2_0": "branch3.0", "branch2_1": "branch3.1", "branch2_2": "branch3.2",
                  "branch2_3a": "branch3.3.branch1", "branch2_3b": "branch3.3.branch2"}


def timm_inception_v4(state: Mapping[str, torch.Tensor]) -> State:
    """timm's Inception-v4: `features.<i>` -> named blocks; Mixed-3a's conv is its second branch
    (the first is a max-pool), Mixed-5a's its first."""
    return rename(state, [
        (r"^features\.(\d+)\.", lambda m: f"features.{_V4_BLOCKS[int(m.group(1))]}."),
        (r"\.branch(\d)(?=\.)", _branch_shift),
        (r"\.(branch[12]_\w+?)\.", lambda m: f".{_V4_C_BRANCHES[m.group(1)]}."),
        (r"^(features\.mixed_3a)\.conv\.", r"\1.branch2."), (r"^(features\.mixed_5a)\.conv\.", r"\1.branch1."),
        (r"^last_linear\.", "head.fc."),
    ])


_IRV2_STEM = {"1a": "stem.conv1", "2a": "stem.conv2", "2b": "stem.conv3", "3b": "stem.conv4", "4a": "stem.conv5",
              "7b": "conv_7b"}


def timm_inception_resnet_v2(state: Mapping[str, torch.Tensor]) -> State:
    """timm's Inception-ResNet-v2: repeat/repeat_1/repeat_2 -> block_a/b/c<n>, block8 is the
    tenth C block; a residual block's towers sit under `towers`, its 1x1 `conv2d` is `proj`."""
    return rename(state, [
        (r"^conv2d_(\w\w)\.", lambda m: f"features.{_IRV2_STEM[m.group(1)]}."),
        (r"^mixed_5b\.", "features.mixed_5b."), (r"^mixed_6a\.", "features.reduction_a."),
        (r"^mixed_7a\.", "features.reduction_b."),
        (r"^repeat\.(\d+)\.", lambda m: f"features.block_a{int(m.group(1)) + 1}."),
        (r"^repeat_1\.(\d+)\.", lambda m: f"features.block_b{int(m.group(1)) + 1}."),
        (r"^repeat_2\.(\d+)\.", lambda m: f"features.block_c{int(m.group(1)) + 1}."),
        (r"^block8\.", "features.block_c10."),
        (r"^(features\.block_\w+?)\.branch(\d)\.", lambda m: f"{m.group(1)}.towers.branch{int(m.group(2)) + 1}."),
        (r"^(features\.(?:mixed|reduction)_\w+?)\.branch(\d)(?=\.)", lambda m: f"{m.group(1)}.branch{int(m.group(2)) + 1}"),
        (r"^(features\.block_\w+?)\.conv2d\.", r"\1.proj."),
        (r"^classif\.", "head.fc."),
    ])


def _xception_rep(match: re.Match) -> str:
    """timm's `rep` Sequentials hold [relu,] sep, bn, relu, sep, bn, ... (3 per unit; the first
    block starts without the relu); cnnzoo's hold [relu,] sep(dw, pw+bn), relu, ... (2 per unit)."""
    block, index, rest = match.group(1), int(match.group(2)), match.group(3)
    is_sep = rest.startswith(("conv1.", "pointwise."))
    sep_index = index if is_sep else index - 1
    start, unit = sep_index % 3, sep_index // 3
    ours = f"{block}.rep.{start + 2 * unit}"
    if is_sep:
        return f"{ours}.dw.conv." + rest[len("conv1."):] if rest.startswith("conv1.") else f"{ours}.pw.conv." + rest[len("pointwise."):]
    return f"{ours}.pw.bn.{rest}"


def timm_xception(state: Mapping[str, torch.Tensor]) -> State:
    """timm's legacy_xception (Cadene's port of the Keras weights)."""
    return rename(state, [
        (r"^(block\d+)\.rep\.(\d+)\.(.*)$", _xception_rep),
        (r"^(block\d+)\.skip\.", r"\1.shortcut.conv."), (r"^(block\d+)\.skipbn\.", r"\1.shortcut.bn."),
        (r"^(conv[34])\.conv1\.", r"\1.dw.conv."), (r"^(conv[34])\.pointwise\.", r"\1.pw.conv."),
        (r"^bn([34])\.", r"conv\1.pw.bn."), (r"^conv([12])\.", r"conv\1.conv."), (r"^bn([12])\.", r"conv\1.bn."),
        (r"^(block\d+|conv\d)\.", r"features.\1."),
        (r"^(fc|last_linear)\.", "head.fc."),
    ])


_PNAS_SEP = {"separable_1.depthwise_conv2d": "1.dw.conv", "separable_1.pointwise_conv2d": "1.pw.conv", "bn_sep_1": "2",
             "separable_2.depthwise_conv2d": "4.dw.conv", "separable_2.pointwise_conv2d": "4.pw.conv", "bn_sep_2": "5"}


def timm_pnasnet(state: Mapping[str, torch.Tensor]) -> State:
    """timm's PNASNet-5-Large: cell_stem_0/1 and cell_<n> -> cells.<i>; comb_iter_<k>_<side> ->
    b<k>_<side>; separable branches [relu, sep, bn, relu, sep, bn] keep their Sequential slots."""
    return rename(state, [
        (r"^conv_0\.", "stem."),
        (r"^cell_stem_(\d)\.", r"cells.\1."), (r"^cell_(\d+)\.", lambda m: f"cells.{int(m.group(1)) + 2}."),
        (r"\.conv_1x1\.conv\.", ".proj_right.1."), (r"\.conv_1x1\.bn\.", ".proj_right.2."),
        (r"\.conv_prev_1x1\.path_([12])\.conv\.", r".proj_left.path_\1."),
        (r"\.conv_prev_1x1\.final_path_bn\.", ".proj_left.bn."),
        (r"\.conv_prev_1x1\.conv\.", ".proj_left.1."), (r"\.conv_prev_1x1\.bn\.", ".proj_left.2."),
        (r"\.comb_iter_(\d)_(left|right)\.", r".b\1_\2."),
        (r"\.(b\d_(?:left|right))\.(separable_\d\.\w+_conv2d|bn_sep_\d)\.", lambda m: f".{m.group(1)}.{_PNAS_SEP[m.group(2)]}."),
        (r"\.(b\d_(?:left|right))\.conv\.", r".\1.1."), (r"\.(b\d_(?:left|right))\.bn\.", r".\1.2."),
        (r"^last_linear\.", "head.fc."),
    ])


# (source, cnnzoo family) -> converter. timm's ResNets and Inception v3 use torchvision's names.
CONVERTERS: dict[tuple[str, str], Converter] = {
    ("torchvision", "alexnet"): tv_alexnet, ("torchvision", "vgg"): tv_vgg,
    ("torchvision", "resnet"): tv_resnet, ("torchvision", "resnext"): tv_resnet,
    ("torchvision", "densenet"): tv_densenet, ("torchvision", "mobilenet_v2"): tv_mobilenet_v2,
    ("torchvision", "mobilenet_v3"): tv_mobilenet_v3, ("torchvision", "googlenet"): tv_googlenet,
    ("torchvision", "inception_v3"): tv_inception_v3,
    ("timm", "resnet"): tv_resnet, ("timm", "resnext"): tv_resnet, ("timm", "inception_v3"): tv_inception_v3,
    ("timm", "senet"): timm_senet, ("timm", "sknet"): timm_sknet, ("timm", "mobilenet_v1"): timm_mobilenet_v1,
    ("timm", "inception_v4"): timm_inception_v4, ("timm", "inception_resnet"): timm_inception_resnet_v2,
    ("timm", "xception"): timm_xception, ("timm", "pnasnet"): timm_pnasnet,
}


def converter_for(source: str, family: str) -> Converter:
    if source == "cnnzoo":
        return identity
    try:
        return CONVERTERS[(source, family)]
    except KeyError:
        known = sorted({s for s, f in CONVERTERS if f == family})
        raise WeightsError(
            f"no {source} converter for the {family} family" + (f" (known: {', '.join(known)})" if known else "")
        ) from None


def sources_for(family: str) -> list[str]:
    """The publishers whose files can be converted into this family."""
    return [s for s, f in CONVERTERS if f == family]


def state_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' when `state` fits `expected` exactly, else the missing/unexpected/mis-shaped keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                    for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
    return "; ".join(parts)


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str) -> None:
    problems = state_problems(expected, state)
    if problems:
        raise WeightsError(f"{what}: {problems}")

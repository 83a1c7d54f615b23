"""The table of published weights cnnzoo knows: torchvision, timm, akamaster and DnCNN files.

Every value here is copied from its publisher: torchvision 0.28's `Weights` enums (URL,
`acc@1`, file size, resize/crop sizes), timm 1.0's `pretrained_cfg`s (Hub repository or
release URL, input size, crop fraction, interpolation, mean/std, licence), the akamaster
files (`best_prec1` stored in each) and the DnCNN repository. Nothing is computed at import.

Two conventions are reproduced rather than patched over:
- torchvision's GoogLeNet and Inception v3 weights were trained (ported from TensorFlow) on
  inputs scaled to [-1, 1]; torchvision converts ImageNet-normalised input back inside the
  model (`transform_input=True`). cnnzoo's models have no such step, so these entries stamp
  mean = std = 0.5, which is the same arithmetic done before the network.
- timm's MobileNet V1 uses ReLU6 (TF-slim's choice); the paper's ReLU stays cnnzoo's default
  and the entry builds the model with `act_layer=nn.ReLU6`.
"""

from __future__ import annotations

import difflib
import fnmatch

from torch import nn

from ..registry import IMAGENET_MEAN, IMAGENET_STD
from .entry import Preprocessing, WeightsEntry, WeightsError

INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
TV_BASE = "https://download.pytorch.org/models/"
TV_LICENSE = "BSD-3-Clause (torchvision); ImageNet terms of access apply"
TV_TOP1 = "torchvision 0.28 Weights.meta['_metrics']['ImageNet-1K']['acc@1']"
TIMM_TOP1 = "timm publishes top-1 in results/results-imagenet.csv of its repository (not in the package); not recorded"
HUB_HASH = "Hugging Face Hub file: no hash in the URL (the Hub's LFS sha256 is not recorded here)"
NAME_HASH = "first hex digits of the file's sha256, in its name (torch.hub convention)"


def _tv(arch: str, tag: str, file: str, top1: float, size_mb: float, *, resize: int = 256, crop: int = 224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, default: bool = False, notes: str = "") -> WeightsEntry:
    return WeightsEntry(
        tag=f"{arch}.{tag}", architecture=arch, source="torchvision", url=TV_BASE + file,
        sha256=file.rsplit("-", 1)[1].split(".")[0], hash_note=NAME_HASH, license=TV_LICENSE, format="pth",
        preprocessing=Preprocessing((3, crop, crop), tuple(mean), tuple(std), round(crop / resize, 4), "bilinear"),
        classes="imagenet1k", top1=top1, top1_source=TV_TOP1, size_bytes=int(size_mb * 2**20),
        default=default, upstream_name=arch, notes=notes,
    )


def _timm(arch: str, timm_tag: str, *, tag: str | None = None, url: str | None = None, size: int = 224,
          crop_pct: float = 0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD, model_args=(), default: bool = True,
          notes: str = "") -> WeightsEntry:
    upstream, source_tag = timm_tag.split(".", 1)
    hub_url = f"https://huggingface.co/timm/{timm_tag}/resolve/main/model.safetensors"
    sha = url.rsplit("-", 1)[1].split(".")[0] if url else None
    return WeightsEntry(
        tag=f"{arch}.{tag or source_tag}", architecture=arch, source="timm", url=url or hub_url, sha256=sha,
        hash_note=NAME_HASH if url else HUB_HASH, license="Apache-2.0 (timm pretrained_cfg)",
        format="pth" if url else "safetensors",
        preprocessing=Preprocessing((3, size, size), tuple(mean), tuple(std), crop_pct, "bicubic"),
        classes="imagenet1k", top1=None, top1_source=TIMM_TOP1, model_args=tuple(model_args),
        default=default, upstream_name=timm_tag, notes=notes,
    )


def _akamaster(depth: int, file: str, top1: float, size: int) -> WeightsEntry:
    return WeightsEntry(
        tag=f"resnet{depth}_cifar.akamaster", architecture=f"resnet{depth}_cifar", source="akamaster",
        url=f"https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{file}",
        sha256=file.rsplit("-", 1)[1].split(".")[0], hash_note=NAME_HASH + " (akamaster)",
        license="BSD-2-Clause", format="th",
        # Trained on CIFAR-10 normalised with the ImageNet statistics (see the repository's trainer.py).
        preprocessing=Preprocessing((3, 32, 32), IMAGENET_MEAN, IMAGENET_STD, 1.0, "bilinear"),
        classes="cifar10", top1=top1, top1_source="CIFAR-10 test accuracy, 'best_prec1' stored in the file",
        size_bytes=size, default=True, upstream_name=f"resnet{depth}",
        notes="option-A shortcuts; keys saved from nn.DataParallel ('module.' prefix)",
    )


_GOOGLE_NOTE = "trained on [-1, 1] inputs (torchvision: transform_input=True); mean = std = 0.5 is the same scaling"

TORCHVISION = (
    _tv("alexnet", "tv_in1k", "alexnet-owt-7be5be79.pth", 56.522, 233.087, default=True),
    _tv("vgg11", "tv_in1k", "vgg11-8a719046.pth", 69.02, 506.84, default=True),
    _tv("vgg13", "tv_in1k", "vgg13-19584684.pth", 69.928, 507.545, default=True),
    _tv("vgg16", "tv_in1k", "vgg16-397923af.pth", 71.592, 527.796, default=True),
    _tv("vgg19", "tv_in1k", "vgg19-dcbb9e9d.pth", 72.376, 548.051, default=True),
    _tv("vgg11_bn", "tv_in1k", "vgg11_bn-6002323d.pth", 70.37, 506.881, default=True),
    _tv("vgg13_bn", "tv_in1k", "vgg13_bn-abd245e5.pth", 71.586, 507.59, default=True),
    _tv("vgg16_bn", "tv_in1k", "vgg16_bn-6c64b313.pth", 73.36, 527.866, default=True),
    _tv("vgg19_bn", "tv_in1k", "vgg19_bn-c79401a0.pth", 74.218, 548.143, default=True),
    _tv("resnet18", "tv_in1k", "resnet18-f37072fd.pth", 69.758, 44.661, default=True),
    _tv("resnet34", "tv_in1k", "resnet34-b627a593.pth", 73.314, 83.275, default=True),
    _tv("resnet50", "tv_in1k", "resnet50-0676ba61.pth", 76.13, 97.781),
    _tv("resnet50", "tv2_in1k", "resnet50-11ad3fa6.pth", 80.858, 97.79, resize=232, default=True),
    _tv("resnet101", "tv_in1k", "resnet101-63fe2227.pth", 77.374, 170.511),
    _tv("resnet101", "tv2_in1k", "resnet101-cd907fc2.pth", 81.886, 170.53, resize=232, default=True),
    _tv("resnet152", "tv_in1k", "resnet152-394f9c45.pth", 78.312, 230.434),
    _tv("resnet152", "tv2_in1k", "resnet152-f82ba261.pth", 82.284, 230.474, resize=232, default=True),
    _tv("resnext50_32x4d", "tv_in1k", "resnext50_32x4d-7cdf4587.pth", 77.618, 95.789),
    _tv("resnext50_32x4d", "tv2_in1k", "resnext50_32x4d-1a0047aa.pth", 81.198, 95.833, resize=232, default=True),
    _tv("resnext101_32x8d", "tv_in1k", "resnext101_32x8d-8ba56ff5.pth", 79.312, 339.586),
    _tv("resnext101_32x8d", "tv2_in1k", "resnext101_32x8d-110c445d.pth", 82.834, 339.673, resize=232,
        default=True),
    _tv("densenet121", "tv_in1k", "densenet121-a639ec97.pth", 74.434, 30.845, default=True),
    _tv("densenet161", "tv_in1k", "densenet161-8d451a50.pth", 77.138, 110.369, default=True),
    _tv("densenet169", "tv_in1k", "densenet169-b2777c0a.pth", 75.6, 54.708, default=True),
    _tv("densenet201", "tv_in1k", "densenet201-c1103571.pth", 76.896, 77.373, default=True),
    _tv("mobilenet_v2", "tv_in1k", "mobilenet_v2-b0353104.pth", 71.878, 13.555),
    _tv("mobilenet_v2", "tv2_in1k", "mobilenet_v2-7ebf99e0.pth", 72.154, 13.598, resize=232, default=True),
    _tv("mobilenet_v3_large", "tv_in1k", "mobilenet_v3_large-8738ca79.pth", 74.042, 21.114),
    _tv("mobilenet_v3_large", "tv2_in1k", "mobilenet_v3_large-5c1a4163.pth", 75.274, 21.107, resize=232,
        default=True),
    _tv("mobilenet_v3_small", "tv_in1k", "mobilenet_v3_small-047dcff4.pth", 67.668, 9.829, default=True),
    _tv("googlenet", "tv_in1k", "googlenet-1378be20.pth", 69.778, 49.731, mean=INCEPTION_MEAN,
        std=INCEPTION_STD, default=True, notes=_GOOGLE_NOTE + "; the file includes the auxiliary heads"),
    _tv("inception_v3", "tv_in1k", "inception_v3_google-0cc3c7bd.pth", 77.294, 103.903, resize=342, crop=299,
        mean=INCEPTION_MEAN, std=INCEPTION_STD, default=True, notes=_GOOGLE_NOTE),
)

_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"

TIMM = (
    _timm("inception_v4", "inception_v4.tf_in1k", size=299, mean=INCEPTION_MEAN, std=INCEPTION_STD,
          notes="ported from TF-slim"),
    _timm("inception_resnet_v2", "inception_resnet_v2.tf_in1k", size=299, crop_pct=0.8975,
          mean=INCEPTION_MEAN, std=INCEPTION_STD, notes="ported from TF-slim"),
    _timm("inception_resnet_v2", "inception_resnet_v2.tf_ens_adv_in1k", size=299, crop_pct=0.8975,
          mean=INCEPTION_MEAN, std=INCEPTION_STD, default=False, notes="ensemble adversarial training (TF)"),
    _timm("xception", "legacy_xception.tf_in1k", size=299, crop_pct=0.8975, mean=INCEPTION_MEAN,
          std=INCEPTION_STD, url=_RELEASES + "v0.1-cadene/xception-43020ad28.pth",
          notes="timm's legacy_xception (Keras weights via Cadene)"),
    _timm("mobilenet_v1", "mobilenetv1_100.ra4_e3600_r224_in1k", mean=INCEPTION_MEAN, std=INCEPTION_STD,
          model_args=(("act_layer", nn.ReLU6),), notes="ReLU6 as timm/TF-slim (act_layer=nn.ReLU6)"),
    _timm("pnasnet5large", "pnasnet5large.tf_in1k", size=331, crop_pct=0.911, mean=INCEPTION_MEAN,
          std=INCEPTION_STD, model_args=(("padding", "tf_same"),),
          notes="ported from TF-slim: TF's asymmetric 'same' padding (padding='tf_same')"),
    _timm("seresnet50", "seresnet50.ra2_in1k", url=_RELEASES + "v0.1-weights/seresnet50_ra_224-8efdb4bb.pth"),
    _timm("seresnext50_32x4d", "seresnext50_32x4d.racm_in1k",
          url=_RELEASES + "v0.1-weights/seresnext50_32x4d_racm-a304a460.pth"),
    _timm("sknet50", "skresnext50_32x4d.ra_in1k", notes="timm's skresnext50_32x4d"),
    _timm("resnet50", "resnet50.a1_in1k", crop_pct=0.95, default=False,
          url=_RELEASES + "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth", notes="ResNet strikes back, A1 recipe"),
)

OTHERS = (
    _akamaster(20, "resnet20-12fca82f.th", 91.78, 1_099_231),
    _akamaster(32, "resnet32-d509ac18.th", 92.78, 1_890_043),
    _akamaster(44, "resnet44-014dd654.th", 93.14, 2_680_855),
    _akamaster(56, "resnet56-4bfd9763.th", 93.62, 3_471_733),
    WeightsEntry(
        tag="dncnn.official_sigma25", architecture="dncnn", source="official",
        url="https://github.com/cszn/DnCNN/raw/master/TrainingCodes/dncnn_pytorch/models/DnCNN_sigma25/model.pth",
        sha256="1cbd0af9c6f83b2f2a8254fb21ad0c09e4771e042805544d7e886f71eb4a8b8c",
        hash_note="no hash published; sha256 of the file as distributed in ../shared/weights/dncnn",
        license="not stated in github.com/cszn/DnCNN (research code)", format="legacy-pickle",
        preprocessing=None, classes=None, top1=None,
        top1_source="not a classifier: the paper reports 30.44 dB PSNR on Set12 at sigma=25",
        size_bytes=2_265_746, default=True, upstream_name="DnCNN (TrainingCodes/dncnn_pytorch)",
        model_args=(("bn_eps", 1e-4),),
        notes="DnCNN-S, grey, sigma=25; a whole-module pickle read by the restricted unpickler",
    ),
)

ENTRIES: tuple[WeightsEntry, ...] = TORCHVISION + TIMM + OTHERS

_BY_TAG = {entry.tag: entry for entry in ENTRIES}


def list_weights(pattern: str = "*") -> list[WeightsEntry]:
    """Entries whose tag or architecture matches a shell-style pattern, sorted by tag."""
    return [e for tag, e in sorted(_BY_TAG.items())
            if fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(e.architecture, pattern)]


def get_weights(tag: str) -> WeightsEntry:
    """The entry named `tag` (`<architecture>.<source tag>`); unknown tags suggest close ones."""
    if tag in _BY_TAG:
        return _BY_TAG[tag]
    close = difflib.get_close_matches(tag, list(_BY_TAG), n=3)
    same_arch = [t for t in _BY_TAG if t.split(".")[0] == tag.split(".")[0]]
    hint = close or same_arch
    raise WeightsError(f"unknown weights {tag!r}" + (f"; did you mean {', '.join(hint)}?" if hint
                                                     else "; see `cnnzoo weights list`"))


def default_weights(arch: str) -> WeightsEntry:
    """The architecture's default entry (the publisher's best, torchvision's DEFAULT)."""
    for entry in ENTRIES:
        if entry.architecture == arch and entry.default:
            return entry
    raise WeightsError(f"no published weights for {arch!r}; `cnnzoo weights list` shows the architectures that have some")

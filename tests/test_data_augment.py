"""Device batch augmentation and the device loader: shapes, ranges, that each op really acts, determinism, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.data import (BatchAugment, DeviceLoader, ImageSplit, crop_flip, cutout, normalize, random_resized_crop,
                         sample_beta)

ID = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # normalisation that leaves x / 255


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(123)
    return torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8, generator=g), torch.arange(64) % 10


def test_normalize_formula():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).double().view(1, 3, 1, 1), torch.tensor(std).double().view(1, 3, 1, 1)
    ref = (x.double() / 255 - m) / s
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, atol=1e-5)


def test_shapes_dtypes_and_range(batch):
    x, y = batch
    aug = BatchAugment(**ID, crop_padding=2, hflip=True, cutout=4)
    out, targets = aug(x, y, gen())
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.equal(targets, y)
    assert out.min() >= 0 and out.max() <= 1


def _matches_shift(out: torch.Tensor, img: torch.Tensor, pad: int) -> set[tuple[int, int, bool]]:
    padded = F.pad(img, (pad,) * 4)
    h, w = img.shape[-2:]
    found = set()
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flip in (False, True):
                if torch.equal(out, crop.flip(-1) if flip else crop):
                    found.add((dy - pad, dx - pad, flip))
    return found


def test_crop_and_flip_really_happen_and_are_exact(batch):
    x, _ = batch
    out = crop_flip(x, 3, True, gen(1))
    seen = [_matches_shift(out[i], x[i], 3) for i in range(len(x))]
    assert all(seen), "every output must be a padded crop (maybe flipped) of its input"
    shifts = {s for found in seen for s in found}
    assert any(s[2] for s in shifts) and any(not s[2] for s in shifts)
    assert len({(dy, dx) for dy, dx, _ in shifts}) > 10  # many different offsets, not a fixed one


def test_flip_only_gives_input_or_mirror(batch):
    x, _ = batch
    out = crop_flip(x, 0, True, gen(2))
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))])
    same = torch.tensor([torch.equal(out[i], x[i]) for i in range(len(x))])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_cutout_zeros_one_square():
    x = torch.ones(200, 3, 20, 20)
    out = cutout(x, 6, gen(3))
    zeros = out[:, 0] == 0
    assert bool((zeros == (out == 0).all(1)).all())  # same square in every channel
    counts = zeros.sum((1, 2))
    assert counts.max() == 36 and (counts <= 36).all() and (counts > 0).all()
    for i in range(len(x)):
        rows, cols = zeros[i].any(1).nonzero().flatten(), zeros[i].any(0).nonzero().flatten()
        assert len(rows) * len(cols) == counts[i]  # a filled rectangle (a square clipped by the border)
        assert rows.max() - rows.min() + 1 == len(rows) and len(rows) <= 6 and len(cols) <= 6


def test_cutout_happens_after_normalisation(batch):
    x, y = batch
    out, _ = BatchAugment(mean=(0.5,) * 3, std=(0.25,) * 3, cutout=4)(x, y, gen())
    assert int((out == 0).all(1).sum((1, 2)).min()) >= 1


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixing_targets_sum_to_one_and_match_the_pixels(kind):
    n, k = 32, 5
    values = torch.arange(n, dtype=torch.uint8) * 7  # every image one constant value
    x = values.view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    y = torch.arange(n) % k
    aug = BatchAugment(**ID, num_classes=k, mixup_alpha=1.0 if kind != "cutmix" else 0.0,
                       cutmix_alpha=1.0 if kind != "mixup" else 0.0)
    for seed in range(4):
        out, soft = aug(x, y, gen(seed))
        assert soft.shape == (n, k) and torch.allclose(soft.sum(1), torch.ones(n))
        own = soft[torch.arange(n), y]  # weight of each sample's own class (partner may share it)
        assert (own >= 0).all() and (own <= 1 + 1e-6).all()
        # the mean pixel of a mixed image is lam * own value + (1 - lam) * partner value
        mean_pix = out.mean((1, 2, 3)) * 255
        assert torch.all(mean_pix >= values.min() - 1e-3) and torch.all(mean_pix <= values.max() + 1e-3)


def test_mixup_lambda_consistent_with_targets():
    n, k = 16, 16
    x = (torch.arange(n, dtype=torch.uint8) * 10).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    y = torch.arange(n)  # distinct classes: the soft target reveals lam and the partner
    out, soft = BatchAugment(**ID, num_classes=k, mixup_alpha=0.4)(x, y, gen(5))
    lam = soft[torch.arange(n), y]
    partner = torch.where(lam < 1 - 1e-6, (soft - F.one_hot(y, k) * lam).argmax(1), y)
    expect = lam * x[:, 0, 0, 0].float() + (1 - lam) * x[partner, 0, 0, 0].float()
    assert torch.allclose(out[:, 0, 0, 0] * 255, expect, atol=1e-3)


def test_cutmix_box_area_matches_lambda():
    n = 8
    x = (torch.arange(n, dtype=torch.uint8) * 30).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    y = torch.arange(n)  # distinct values and classes: own pixels and own target weight can be compared
    for seed in range(5):
        out, soft = BatchAugment(**ID, num_classes=n, cutmix_alpha=1.0)(x, y, gen(seed))
        own_pixels = (out * 255 - x.float()).abs().lt(1e-3).all(1).float().mean((1, 2))
        assert torch.allclose(own_pixels, soft[y, y], atol=1e-6)
        assert (own_pixels < 1).any()  # a box was really pasted


def test_random_resized_crop_identity_and_shapes(batch):
    x, _ = batch
    same = random_resized_crop(x, (12, 12), gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(same, x.float(), atol=1e-3)  # a full-image box at the same size is the image
    flipped = random_resized_crop(x, (12, 12), gen(), hflip=True, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    is_flip = torch.tensor([torch.allclose(flipped[i], x[i].float().flip(-1), atol=1e-3) for i in range(len(x))])
    assert 10 < int(is_flip.sum()) < 54
    out = random_resized_crop(x, (7, 9), gen())
    assert out.shape == (64, 3, 7, 9) and out.min() >= 0 and out.max() <= 255
    assert not torch.allclose(out[0], out[1])


def test_random_resized_crop_takes_a_box_of_the_asked_area():
    ramp = torch.arange(64, dtype=torch.uint8) * 4
    x = torch.stack([ramp.view(1, 64).expand(64, 64), ramp.view(64, 1).expand(64, 64)])[None]  # column, row
    out = random_resized_crop(x.expand(200, 2, 64, 64), (32, 32), gen(4), scale=(0.25, 0.25), ratio=(1.0, 1.0))
    x0, y0 = out[:, 0, 0, 0] / 4, out[:, 1, 0, 0] / 4
    assert torch.allclose(out[:, 0], (x0.view(-1, 1, 1) + torch.arange(32)) * 4, atol=1e-3)  # 32 columns, in order
    assert torch.allclose(out[:, 1], (y0.view(-1, 1, 1) + torch.arange(32).view(32, 1)) * 4, atol=1e-3)
    assert x0.min() >= 0 and x0.max() <= 32 and len(set(x0.tolist())) > 15


def test_same_seed_same_batch_different_seed_different(batch):
    x, y = batch
    aug = BatchAugment(mean=(0.5,) * 3, std=(0.2,) * 3, crop_padding=2, hflip=True, cutout=3, mixup_alpha=0.5,
                       cutmix_alpha=1.0, num_classes=10)
    a, ya = aug(x, y, gen(7))
    b, yb = aug(x, y, gen(7))
    c, _ = aug(x, y, gen(8))
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)


def test_beta_sampler_moments():
    g = gen(0)
    for alpha in (0.2, 1.0, 2.0):
        s = sample_beta(alpha, 50_000, g)
        assert (s >= 0).all() and (s <= 1).all()
        assert s.mean().item() == pytest.approx(0.5, abs=0.01)
        assert s.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_invalid_options():
    with pytest.raises(ValueError, match="num_classes"):
        BatchAugment(**ID, mixup_alpha=1.0)
    with pytest.raises(ValueError, match="either"):
        BatchAugment(**ID, crop_padding=4, random_resized_crop=(8, 8))


# ---------- DeviceLoader ----------

def _split(n: int = 50) -> ImageSplit:
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen(9))
    return ImageSplit(images, torch.arange(n) % 7)


def _loader(split: ImageSplit, **kw) -> DeviceLoader:
    aug = BatchAugment(mean=(0.5,) * 3, std=(0.2,) * 3, crop_padding=2, hflip=True, cutout=2, mixup_alpha=0.3,
                       num_classes=7)
    opts = dict(shuffle=True, device="cpu", augment=aug, mean=aug.mean, std=aug.std, seed=11)
    opts.update(kw)
    return DeviceLoader(split, 8, **opts)


def test_loader_covers_every_sample_once_per_epoch():
    split = _split()
    loader = _loader(split, augment=None)
    labels = [y for _, y in loader]
    assert len(labels) == len(loader) == 7 and sum(len(y) for y in labels) == 50
    first = torch.cat(labels)
    second = torch.cat([y for _, y in loader])  # the loader moved on to epoch 1 by itself
    assert sorted(first.tolist()) == sorted(split.labels.tolist()) and not torch.equal(first, second)
    assert loader.state_dict() == {"epoch": 2, "position": 0, "seed": 11, "batches_per_chunk": 1, "world_size": 1}
    assert len(_loader(split, drop_last=True)) == 6


def test_loader_order_is_a_pure_function_of_seed_and_epoch():
    split = _split()
    a, b = _loader(split), _loader(split)
    a.set_epoch(3)
    b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("chunk", [1, 3])
def test_loader_exact_resume_mid_epoch(chunk):
    split = _split()
    straight = _loader(split, batches_per_chunk=chunk)
    straight.set_epoch(2)
    reference = list(straight)
    first = _loader(split, batches_per_chunk=chunk)
    first.set_epoch(2)
    it = iter(first)
    done = [next(it) for _ in range(4)]  # stops inside the second chunk when chunk == 3
    state = first.state_dict()
    assert state == {"epoch": 2, "position": 4, "seed": 11, "batches_per_chunk": chunk, "world_size": 1}
    resumed = _loader(split, seed=0, batches_per_chunk=5)  # seed and chunking come back from the state
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # calling it again on resume keeps the position
    rest = list(resumed)
    assert len(done) + len(rest) == len(reference)
    for (x, y), (xr, yr) in zip(done + rest, reference):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_chunked_loader_gives_the_same_plain_batches():
    split = _split()
    plain = [b for b in _loader(split, augment=None, batches_per_chunk=1)]
    chunked = [b for b in _loader(split, augment=None, batches_per_chunk=4)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, chunked))
    x, y = next(iter(_loader(split, batches_per_chunk=4)))
    assert x.shape == (8, 3, 8, 8) and y.shape == (8, 7) and torch.allclose(y.sum(1), torch.ones(8))


def test_loader_channels_last_and_eval_normalisation():
    split = _split()
    loader = _loader(split, augment=None, shuffle=False, channels_last=True)
    x, y = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, normalize(split.images[:8], loader.mean, loader.std)) and torch.equal(y, split.labels[:8])
    x_aug, _ = next(iter(_loader(split, channels_last=False)))
    assert x_aug.is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_on_cuda_matches_cpu_order():
    split = _split()
    cpu, cuda = _loader(split, augment=None), _loader(split, augment=None, device="cuda")
    for (xc, yc), (xg, yg) in zip(cpu, cuda):
        assert xg.is_cuda and torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu())
    aug = _loader(split, device="cuda")
    x, y = next(iter(aug))
    assert x.is_cuda and y.shape == (8, 7)

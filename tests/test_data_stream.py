"""Streaming image folders: the same batches as the in-memory path, resumable, shardable, chosen by budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.data import DataError, DeviceLoader, default_augment, load_dataset
from cnnzoo.data.stream import StreamLoader, open_stream, should_stream

SIZE = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream") / "imgs"
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def loaders(folder, split="train", augment=True, **stream_kw):
    bundle = load_dataset(str(folder), image_size=SIZE, val_fraction=0.2, num_workers=0, cache_dir=folder.parent)
    streamed = open_stream(str(folder), image_size=SIZE, val_fraction=0.2, seed=0, num_workers=0)
    assert (streamed.classes, streamed.mean, streamed.std) == (bundle.classes, bundle.mean, bundle.std)
    aug = default_augment(bundle) if augment else None
    common = {"shuffle": augment, "augment": aug, "mean": bundle.mean, "std": bundle.std, "device": "cpu", "seed": 4}
    return (DeviceLoader(getattr(bundle, split), 4, **common),
            StreamLoader(getattr(streamed, split), 4, **stream_kw, **common))


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("split, augment, workers", [("train", True, 0), ("test", False, 1)])
def test_streamed_batches_equal_the_in_memory_ones(folder, split, augment, workers):
    memory, stream = loaders(folder, split, augment, num_workers=workers)
    a, b = batches(memory), batches(stream)
    assert len(a) == len(b) == len(stream) > 1
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_a_stream_resumes_mid_epoch_and_takes_its_share(folder):
    _, stream = loaders(folder, num_workers=0)
    full = batches(stream)
    _, again = loaders(folder, num_workers=0)
    iterator = iter(again)
    next(iterator), next(iterator)
    state = again.state_dict()
    _, resumed = loaders(folder, num_workers=0)
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == len(full) - 2 and all(torch.equal(x, y) for (x, _), (y, _) in zip(rest, full[2:]))
    with pytest.raises(ValueError, match="in-memory loader"):
        resumed.load_state_dict({**state, "kind": None})
    _, shard = loaders(folder, num_workers=0)
    shard.shard(1, 2, train=True)
    assert shard.batch_size == 2 and len(batches(shard)) == len(shard)


def test_streaming_is_chosen_by_budget_or_flag(folder, tmp_path):
    assert not should_stream(str(folder), "auto", 1.0, SIZE)  # 30 images of 16 px: far below 1 GB
    assert should_stream(str(folder), "auto", 1e-6, SIZE)
    assert not should_stream(str(folder), "off", 1e-6, SIZE) and should_stream(str(folder), "on", 8, SIZE)
    with pytest.raises(DataError, match="needs data.image_size"):
        should_stream(str(folder), "on", 8, None)
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"")
    with pytest.raises(DataError, match="an archive cannot be read out of order"):
        should_stream(str(archive), "on", 8, SIZE)


def test_an_unreadable_streamed_image_is_named_or_skipped(folder, tmp_path):
    broken = tmp_path / "imgs"
    for c in ("a", "b"):
        (broken / "train" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (SIZE, SIZE), (40 * i, 0, 0)).save(broken / "train" / c / f"{i}.png")
    (broken / "train" / "b" / "0.png").write_bytes(b"not a png")  # the statistics sample skips it
    streamed = open_stream(str(broken), image_size=SIZE, val_fraction=0.0, seed=0, num_workers=0)
    common = {"shuffle": False, "augment": None, "mean": streamed.mean, "std": streamed.std, "device": "cpu",
              "num_workers": 0}
    with pytest.raises(DataError, match="b/0.png"):
        batches(StreamLoader(streamed.train, 16, **common))
    skipping = StreamLoader(streamed.train, 16, on_bad_image="skip", **common)
    assert sum(len(y) for _, y in batches(skipping)) == len(streamed.train) - 1 and len(skipping.skipped) == 1


def test_training_streams_through_the_cli(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(folder), "--image-size", "32", "--stream", "on", "--workers", "1",
                 "--epochs", "1", "--batch-size", "8", "--progress", "off", "--no-report", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["loader"]["kind"] == "stream" and ckpt["fingerprint"].startswith("stream-")
    assert "test (" in capsys.readouterr().err

"""The single-process parts of data-parallel training: shares of the data, refusals, the launcher's
command line, the reduction of evaluation sums and the CPU SyncBatchNorm's arithmetic.
(Real multi-process runs: tests/test_distributed_runs.py, marked slow.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.cli.main import main
from cnnzoo.data import ImageSplit
from cnnzoo.data.loader import DeviceLoader, epoch_permutation, eval_share, rank_share
from cnnzoo.engine.config import Config, ConfigError, config_from_dict
from cnnzoo.engine.distributed import (
    Distributed,
    GlobalBatchNorm,
    Launch,
    check_config,
    convert_sync_batchnorm,
    micro_batches,
    strip_launcher_flags,
)
from cnnzoo.engine.resume import ResumeError
from cnnzoo.tasks.classification import ClassificationEvaluator


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (11, 3), (2, 4)])
def test_shares_follow_distributed_sampler(n, world):
    order = torch.randperm(n)
    shares = [rank_share(order, r, world, pad=True) for r in range(world)]
    assert {len(s) for s in shares} == {-(-n // world)}  # ceil(n / world) each
    seen = torch.cat(shares)
    assert set(seen.tolist()) == set(order.tolist())  # padding repeats the first items, loses none
    cut = [rank_share(order, r, world, pad=False) for r in range(world)]
    assert {len(s) for s in cut} == {n // world} and len(set(torch.cat(cut).tolist())) == n // world * world
    every = torch.cat([eval_share(n, r, world) for r in range(world)])
    assert sorted(every.tolist()) == list(range(n))  # evaluation: each sample exactly once


def test_the_processes_kth_batches_make_the_kth_global_batch():
    order, world, per = epoch_permutation(40, seed=5, epoch=2), 2, 4
    shares = [rank_share(order, r, world, pad=True) for r in range(world)]
    for k in range(40 // (world * per)):
        union = torch.cat([s[k * per:(k + 1) * per] for s in shares])
        assert sorted(union.tolist()) == sorted(order[k * world * per:(k + 1) * world * per].tolist())


def _loader(n=11, batch=4, **kw):
    split = ImageSplit(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
                       torch.arange(n))
    return DeviceLoader(split, batch, device="cpu", mean=(0.0,), std=(1.0,), augment=None, **kw)


def test_a_sharded_loader_serves_its_share_and_refuses_another_world_size():
    train = _loader(shuffle=True, seed=1)
    train.shard(1, 2, train=True)
    labels = torch.cat([y for _, y in train])
    assert train.batch_size == 2 and len(train) == 3 and len(labels) == 6
    assert labels.tolist() == rank_share(epoch_permutation(11, 1, 0), 1, 2, pad=True).tolist()
    with pytest.raises(ValueError, match="saved by 1 process"):
        train.load_state_dict(_loader(shuffle=True, seed=1).state_dict())
    test = _loader(shuffle=False)
    test.shard(0, 2, train=False)
    assert torch.cat([y for _, y in test]).tolist() == [0, 2, 4, 6, 8, 10]


def test_the_global_batch_must_divide_among_the_processes():
    cfg = config_from_dict({"data": {"batch_size": 63}})
    with pytest.raises(ConfigError, match="global batch 63 does not divide among 2 processes; choose a multiple of 2"):
        check_config(cfg, 2)
    check_config(config_from_dict({"data": {"batch_size": 64}, "optim": {"grad_accum": 4}}), 2)
    with pytest.raises(ConfigError, match="among 2 processes x 4 micro-batches"):
        check_config(config_from_dict({"data": {"batch_size": 36}, "optim": {"grad_accum": 4}}), 2)


def test_the_launcher_refuses_before_starting_anything(capsys):
    assert main(["train", "--nproc", "2", "--batch-size", "63"]) == 2
    assert "does not divide among 2 processes" in capsys.readouterr().err
    assert main(["train", "--nproc", "1", "--nnodes", "2"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err


def test_the_launcher_command_passes_the_rendezvous_through():
    argv = ["train", "--nproc", "2", "--epochs=3", "--nnodes=2", "--rdzv-endpoint", "10.0.0.1:29400", "--sync-bn"]
    assert strip_launcher_flags(argv) == ["train", "--epochs=3", "--sync-bn"]
    cmd = Launch(2, 2, None, "10.0.0.1:29400", "job").command(argv)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=2", "--rdzv-backend=c10d",
                       "--rdzv-endpoint=10.0.0.1:29400", "--rdzv-id=job", "-m", "cnnzoo", "train", "--epochs=3",
                       "--sync-bn"]
    static = Launch(1, 2, 1, "10.0.0.1:29400").command(["train"])
    assert "--rdzv-backend=static" in static and "--node-rank=1" in static
    assert "--standalone" in Launch(4).command(["train"])


def test_resuming_with_another_world_size_is_refused(tmp_path):
    with pytest.raises(ResumeError, match="trained by 1 process\\(es\\), this run has 2"):
        Distributed(rank=0, world_size=2).check_resume(tmp_path / "last.pt", {"step": 3})
    with pytest.raises(ResumeError, match="trained by 2 process\\(es\\), this run has 1.*--nproc 2"):
        Distributed().check_resume(tmp_path / "last.pt", {"distributed": {"world_size": 2, "rng": []}})
    Distributed().check_resume(tmp_path / "last.pt", {"step": 3})  # one process, as before


@pytest.mark.parametrize("n, world", [(10, 2), (2, 3)])  # (2, 3): one process sees no sample at all
def test_evaluation_sums_reduce_to_those_of_one_process(n, world):
    torch.manual_seed(1)
    logits, labels = torch.randn(n, 3), torch.randint(0, 3, (n,))
    whole = ClassificationEvaluator(list("abc"))
    whole.update(nn.Identity(), (logits, labels))
    parts = [ClassificationEvaluator(list("abc")) for _ in range(world)]
    for r, part in enumerate(parts):
        index = eval_share(n, r, world)
        if len(index):
            part.update(nn.Identity(), (logits[index], labels[index]))
    shares = []
    for part in parts:  # collect each process's packed sums, then hand every one the total (an all-reduce)
        part.reduce(lambda t: shares.append(t.clone()) or t)
    for part in parts:
        part.reduce(lambda t: sum(shares))
    for part in parts:
        assert part.compute() == pytest.approx(whole.compute(), rel=1e-6)
        assert part.count == n and torch.equal(part.report().confusion, whole.report().confusion)


def test_global_batch_norm_is_batch_norm_for_one_process():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    synced = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)), cuda=False)
    synced.load_state_dict(plain.state_dict())
    assert isinstance(synced[1], GlobalBatchNorm) and synced.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(6, 2, 5, 5, requires_grad=True)
    (plain(x) ** 2).sum().backward()
    grad, x.grad = x.grad.clone(), None
    out = synced[1].global_batch_norm(synced[0](x), lambda t: t)  # "all-reduce" over one process
    (out ** 2).sum().backward()
    assert torch.allclose(x.grad, grad, atol=1e-5)
    assert torch.allclose(synced[1].running_var, plain[1].running_var, atol=1e-6)
    assert torch.allclose(synced[1].running_mean, plain[1].running_mean, atol=1e-6)


def test_micro_batches_split_every_tensor_of_a_batch():
    batch = (torch.arange(10).view(10, 1), torch.arange(10))
    parts = micro_batches(batch, 4)
    assert [len(p[0]) for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat([p[1] for p in parts]), batch[1])
    assert micro_batches(batch, 1) == [batch]


def test_one_process_is_not_distributed():
    single = Distributed.from_env()
    assert not single.enabled and single.is_main and single.device("auto") is None
    assert single.global_count(32) == 32 and single.evaluator("e") == "e"
    assert Config().optim.grad_accum == 1 and not Config().runtime.sync_bn

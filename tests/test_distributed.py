"""Data-parallel training with torch.distributed: 2 gloo ranks on CPU against one process.

How the two runs are made comparable: under a process group, rank r seeds its window sampler with
``rank_seed(seed, Rank(r, 2, r))`` (child r of ``numpy.random.SeedSequence(seed).spawn(2)``). The
one-process reference replaces the sampler by :class:`UnionSampler`, which holds the two ranks'
samplers and concatenates what they draw, so that each of its batches (2b windows per task) is
exactly the union of the two ranks' batches (b windows per task each). Dropout is 0 and bf16 off,
so the only difference left is the order of floating-point sums.
"""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import promptrl
import promptrl.methods.base as base
import promptrl.methods.plm as plm
from promptrl.common.distributed import (
    Rank,
    active,
    backend_for,
    is_main,
    process_group_from_env,
    rank_seed,
    world,
)
from promptrl.data.datasets import create_datasets
from promptrl.data.windows import Segment, SegmentSampler
from promptrl.methods.baselines.finetune import FineTune
from promptrl.methods.diffuser import pretrain_generator
from promptrl.methods.plm import PromptDT

WORLD = 2
TASKS = [6, 9]
SIZES = dict(embed_dim=16, n_layer=1, warmup_steps=2, context=20, dropout=0.0, bf16=False)  # 100-step episodes:
# a window of 20 steps starting in the last 19 is padded, so the mask matters
STEPS = 3
ATOL = 1e-6


class UnionSampler:
    """One sampler drawing, per batch, the union of what the ``WORLD`` ranks' samplers draw."""

    def __init__(self, histories, prompts, spec, seed=0):
        self.parts = [
            SegmentSampler(histories, prompts, spec, seed=rank_seed(seed, Rank(r, WORLD, r))) for r in range(WORLD)
        ]

    def sample(self, per_task, device="cpu"):
        assert per_task % WORLD == 0
        drawn = [part.sample(per_task // WORLD, device) for part in self.parts]
        history = Segment(*(torch.cat(c) for c in zip(*(h for h, _ in drawn))))  # (WORLD * B, L, ...)
        if drawn[0][1] is None:
            return history, None
        return history, Segment(*(torch.cat(c) for c in zip(*(p for _, p in drawn))))


def data():
    suite = promptrl.load_suite("mw-reach")
    return suite, [suite.dataset(t, "expert") for t in TASKS]


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=WORLD)
    try:
        assert active() and world() == Rank(rank, WORLD, 0)
        suite, datasets = data()
        results = {}
        losses = []
        model = PromptDT(suite, seed=0, batch_per_task=4, **SIZES)
        model.learn(datasets, total_steps=STEPS, progress_bar=False, callback=lambda i: losses.append(i["loss"]))
        results["plm"], results["plm_losses"] = model.network.state_dict(), losses
        ft = FineTune(model, batch_size=8).learn(datasets, total_steps=STEPS, progress_bar=False)
        results["ft"] = ft.module.network.state_dict()
        # a callback asking to stop on rank 1 only stops both ranks after the same update
        stopper = PromptDT(suite, seed=0, batch_per_task=2, **SIZES)
        stopper.learn(
            datasets, total_steps=5, progress_bar=False, callback=lambda i: not (rank == 1 and i["step"] == 2)
        )
        results["stopped_at"] = stopper.settings.steps_trained
        pd = pretrain_generator(
            model,
            datasets,
            Path(out) / "generator",
            2,
            save_steps=1,
            recipe={"batch_size": 4},
            progress_bar=False,
            n_steps=4,
            hidden=16,
        )
        results["generator"] = pd.model.state_dict()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Train on 2 gloo ranks (torch.multiprocessing.spawn); each rank's results by name."""
    root = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root / "minari"))  # the spawned ranks inherit it
        create_datasets(promptrl.load_suite("mw-reach"), "expert", tasks=TASKS, episodes=1)
        mp.spawn(_worker, args=(str(root / "init"), str(root)), nprocs=WORLD)
    return root, [torch.load(root / f"rank{r}.pt") for r in range(WORLD)]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_equal_one_process_on_the_union_batch(two_ranks, monkeypatch):
    root, ranks = two_ranks
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
    suite, datasets = data()
    assert max_difference(ranks[0]["plm"], ranks[1]["plm"]) == 0.0  # DDP keeps the ranks' weights equal
    assert ranks[0]["plm_losses"] == ranks[1]["plm_losses"]  # every rank logs the global loss

    monkeypatch.setattr(plm, "SegmentSampler", UnionSampler)
    losses = []
    model = PromptDT(suite, seed=0, batch_per_task=4 * WORLD, **SIZES)
    model.learn(datasets, total_steps=STEPS, progress_bar=False, callback=lambda i: losses.append(i["loss"]))
    assert max_difference(model.network.state_dict(), ranks[0]["plm"]) < ATOL
    assert losses == pytest.approx(ranks[0]["plm_losses"], abs=ATOL)

    # The batches have padding, and the ranks' counts of valid steps differ: a per-rank mean would differ.
    sampler = UnionSampler(*_sampler_arguments(model, datasets), seed=0)
    counts = []
    for _ in range(STEPS):
        history, _ = sampler.sample(4 * WORLD)
        counts.append(history.mask.view(WORLD, -1).sum(1).tolist())  # per rank
    assert all(sum(c) < history.mask.numel() for c in counts)
    assert any(c[0] != c[1] for c in counts)

    monkeypatch.setattr(base, "SegmentSampler", UnionSampler)  # FineTune (Prompt-DT-FT-Full) likewise
    start = copy.deepcopy(model)  # the PLM the ranks fine-tuned
    start.network.load_state_dict(ranks[0]["plm"])
    ft = FineTune(start, batch_size=8 * WORLD)
    ft.learn(datasets, total_steps=STEPS, progress_bar=False)
    assert max_difference(ft.module.network.state_dict(), ranks[0]["ft"]) < ATOL


def _sampler_arguments(model, datasets):
    from promptrl.data.episodes import as_task_episodes

    s = model.settings
    episodes = as_task_episodes(datasets, s.obs_dim, s.act_dim, "datasets")
    return episodes, episodes, model._segment_spec()


def test_a_stop_on_one_rank_stops_all_and_rank_0_writes(two_ranks):
    root, ranks = two_ranks
    assert [r["stopped_at"] for r in ranks] == [2, 2]
    assert max_difference(ranks[0]["generator"], ranks[1]["generator"]) == 0.0
    # the generator folder rank 0 wrote holds the ranks' common weights
    weights = load_file(str(root / "generator" / "model.safetensors"))
    assert max_difference(weights, ranks[0]["generator"]) == 0.0
    assert not (root / "generator.tmp").exists()


def test_outside_torchrun_nothing_changes(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group_from_env("cpu") as device:
        assert device == "cpu" and not dist.is_initialized() and world() == Rank(0, 1, 0) and is_main()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node=1: one process, no group either
    with process_group_from_env("cpu") as device:
        assert device == "cpu" and not dist.is_initialized()
    assert backend_for("cpu") == "gloo" and backend_for("cuda:1") == "nccl"


def test_rank_seeds():
    assert rank_seed(5, Rank(0, 1, 0)) == 5  # one process keeps its seed
    seeds = [rank_seed(5, Rank(r, 4, 0)) for r in range(4)]
    assert len(set(seeds)) == 4 and seeds == [rank_seed(5, Rank(r, 4, 0)) for r in range(4)]


def test_torchrun_train_plm_writes_one_model_and_resumes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the autouse fixture's MINARI_DATASETS_PATH included
    env["PYTHONPATH"] = os.pathsep.join([str(Path(promptrl.__file__).parents[1]), env.get("PYTHONPATH", "")])
    create_datasets(promptrl.load_suite("mw-reach"), "expert", episodes=1)
    out = tmp_path / "run"
    args = ["mw-reach", "--checkpoint-steps", "2", "--log-steps", "2", "--threads", "1", "--embed-dim", "16"]
    args += ["--n-layer", "1", "--batch-per-task", "2", "--context", "6", "--out", str(out)]

    def torchrun(steps: int) -> str:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}"]
        command += ["-m", "promptrl", "train", "plm", "--steps", str(steps), *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    printed = torchrun(4)
    assert printed.count("0/4 steps done") == 1 and printed.count("done: ") == 1  # rank 0 alone prints
    rows = (out / "progress.csv").read_text().splitlines()
    assert rows[0] == "step,loss,seconds" and [r.split(",")[0] for r in rows[1:]] == ["2", "4"]  # written once
    assert sorted(p.name for p in out.iterdir() if (p / "config.json").is_file()) == ["checkpoint", "final"]
    assert PromptDT.from_pretrained(out / "final").settings.steps_trained == 4
    printed = torchrun(6)
    assert printed.count("4/6 steps done") == 1
    rows = [r.split(",") for r in (out / "progress.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["2", "4", "6"] and all(math.isfinite(float(r[1])) for r in rows)
    assert PromptDT.load_checkpoint(out / "checkpoint").settings.steps_trained == 6
    assert PromptDT.from_pretrained(out / "final").settings.steps_trained == 6

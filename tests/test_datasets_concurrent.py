"""Processes that create the same Minari datasets at once all succeed, and one copy is written."""

import multiprocessing

import minari

from promptrl.data.datasets import create_datasets, dataset_exists, datasets_root

DATASET = "promptrl/mw-reach/task06-expert-v0"


def _create(barrier, queue) -> None:
    barrier.wait()  # both start together, so both find the dataset missing
    try:
        queue.put(("ok", create_datasets("mw-reach", "expert", tasks=[6], episodes=2)))
    except Exception as err:  # reported to the test, which fails on it
        queue.put(("error", repr(err)))


def test_two_processes_create_the_same_dataset(minari_root):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_create, args=(barrier, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert [status for status, _ in results] == ["ok", "ok"], results
    assert sorted(len(created) for _, created in results) == [0, 1]  # one wrote it, the other waited and reused it
    assert dataset_exists(DATASET) and list(minari.list_local_datasets()) == [DATASET]
    assert minari.load_dataset(DATASET).total_episodes == 2
    leftovers = [p.name for p in datasets_root().rglob("*") if p.name.startswith(".promptrl-scratch")]
    assert not leftovers, leftovers
    assert (datasets_root() / "promptrl" / "mw-reach" / ".task06-expert-v0.lock").is_file()

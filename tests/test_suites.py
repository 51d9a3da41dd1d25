import json

import pytest

import promptrl
from promptrl.tasks.spec import available_suites, load_spec, parse_spec


def expand(ranges):
    out = []
    for r in ranges:
        out += list(range(r[0], r[1] + 1)) if isinstance(r, tuple) else [r]
    return out


# Table 3 and Table 7 of the Prompt Diffuser paper.
TABLE3 = {
    "cheetah-dir": ([0, 1], [0, 1]),
    "cheetah-vel": (expand([(0, 1), (3, 6), (8, 14), (16, 22), (24, 25), (27, 39)]), [2, 7, 15, 23, 26]),
    "ant-dir": (expand([(0, 5), (7, 16), (18, 22), (24, 29), (31, 40), (42, 49)]), [6, 17, 23, 30, 41]),
    "mw-reach": (expand([(1, 5), 7, 8, (10, 14), (17, 19)]), [6, 9, 15, 16, 20]),
    "ant-dir-ood": ([8, 13, 16, 20, 22, 26, 32, 37], [1, 4, 41]),
}


def test_every_suite_has_a_spec():
    assert available_suites() == sorted(TABLE3)


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_split_matches_paper(name):
    suite = promptrl.load_suite(name)
    train, test = TABLE3[name]
    assert suite.train_tasks == train
    assert suite.test_tasks == test
    assert suite.split("all") == list(range(len(suite.tasks)))


def test_task_parameters():
    vel = promptrl.load_suite("cheetah-vel")
    assert len(vel.tasks) == 40
    assert vel.tasks[0] == [0.075] and vel.tasks[-1] == [3.0]
    steps = [b[0] - a[0] for a, b in zip(vel.tasks, vel.tasks[1:])]
    assert max(steps) - min(steps) < 1e-5
    assert promptrl.load_suite("cheetah-dir").tasks == [[1.0], [-1.0]]
    ant, ood = promptrl.load_suite("ant-dir"), promptrl.load_suite("ant-dir-ood")
    assert len(ant.tasks) == 50 and ant.tasks == ood.tasks
    assert all(0 <= g[0] < 6.2832 for g in ant.tasks)
    assert len(promptrl.load_suite("mw-reach").tasks) == 21


@pytest.mark.parametrize(
    "name,horizon,target,scale",
    [
        ("cheetah-dir", 200, 1500, 1000),
        ("cheetah-vel", 200, 0, 500),
        ("ant-dir", 200, 500, 500),
        ("mw-reach", 100, 900, 900),
    ],
)
def test_horizon_and_rtg(name, horizon, target, scale):
    suite = promptrl.load_suite(name)
    assert (suite.horizon, suite.rtg_target, suite.rtg_scale) == (horizon, target, scale)


def test_unknown_suite():
    with pytest.raises(ValueError, match="unknown suite 'cheetah-run'.*cheetah-vel"):
        promptrl.load_suite("cheetah-run")


@pytest.mark.parametrize("task", [-1, 40, 2.0, "2", True])
def test_bad_task(task):
    suite = promptrl.load_suite("cheetah-vel")
    with pytest.raises(ValueError, match=r"task must be an integer in \[0, 39\]"):
        suite.make_env(task)


def test_bad_quality_and_split():
    suite = promptrl.load_suite("cheetah-vel")
    with pytest.raises(ValueError, match="quality must be one of"):
        suite.dataset_id(2, "good")
    with pytest.raises(ValueError, match="split must be one of"):
        suite.datasets("validation")


def test_malformed_spec():
    data = json.loads(
        (load_spec("cheetah-vel").__class__ and open(promptrl.tasks.spec.spec_dir() / "cheetah-vel.json")).read()
    )
    parse_spec(data)
    with pytest.raises(ValueError, match="missing keys \\['horizon'\\]"):
        parse_spec({k: v for k, v in data.items() if k != "horizon"})
    with pytest.raises(ValueError, match="'test_tasks' must be task ids"):
        parse_spec({**data, "test_tasks": [2, 99]})
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        parse_spec({**data, "colour": "red"})
    with pytest.raises(ValueError, match="'episodes'"):
        parse_spec({**data, "episodes": {"expert": 3}})

import json

import numpy as np
import pytest

import promptrl
from promptrl.tasks.spec import available_suites, load_spec, parse_spec, spec_dir


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


# The Meta-World families added beside the paper's: the first 23 ML1 train tasks, mw-reach's test tasks.
MW_FAMILIES = {
    "mw-push": 750.0,
    "mw-pick-place": 650.0,
}
MW_TEST = [6, 9, 15, 16, 20]
MW_VALIDATION = [0, 21, 22]


def test_every_suite_has_a_spec():
    assert available_suites() == sorted([*TABLE3, *MW_FAMILIES])


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_split_matches_paper(name):
    suite = promptrl.load_suite(name)
    train, test = TABLE3[name]
    assert suite.train_tasks == train
    assert suite.test_tasks == test
    assert suite.split("all") == list(range(len(suite.tasks)))
    assert suite.validation_tasks == [] and suite.split("validation") == []


@pytest.mark.parametrize("name", sorted(MW_FAMILIES))
def test_metaworld_family_split_horizon_and_rtg(name):
    suite = promptrl.load_suite(name)
    assert len(suite.tasks) == 23 and all(len(goal) == 6 for goal in suite.tasks)
    assert suite.test_tasks == MW_TEST
    assert suite.validation_tasks == suite.split("validation") == MW_VALIDATION
    # train is every other task: the three splits partition the 23 tasks
    assert suite.train_tasks == sorted(set(range(23)) - set(MW_TEST) - set(MW_VALIDATION))
    assert (suite.horizon, suite.rtg_target, suite.rtg_scale) == (100, MW_FAMILIES[name], MW_FAMILIES[name])
    assert (suite.spec.obs_dim, suite.spec.act_dim) == (39, 4)


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


def test_check_tasks_names_the_argument_and_every_id_outside():
    spec = promptrl.load_suite("cheetah-vel").spec
    assert spec.check_tasks([np.int64(2), 39]) == [2, 39]
    with pytest.raises(
        ValueError, match=r"--tasks: suite 'cheetah-vel' has tasks 0 to 39, got \[40, -1, True\] outside"
    ):
        spec.check_tasks([2, 40, -1, True], "--tasks")
    # a task given twice would evaluate (or record) it twice under the same episode indices
    with pytest.raises(ValueError, match=r"--tasks: expected each task id once, got \[2\] more than once"):
        spec.check_tasks([2, 7, 2], "--tasks")
    with pytest.raises(ValueError, match=r"tasks: expected a list of task ids, got 2"):
        spec.check_tasks(2)


def test_bad_quality_and_split():
    suite = promptrl.load_suite("cheetah-vel")
    with pytest.raises(ValueError, match="quality must be one of"):
        suite.dataset_id(2, "good")
    # "validation" is a split: cheetah-vel has none, so it loads no datasets
    assert suite.split("validation") == [] and suite.datasets("validation") == []
    assert promptrl.load_suite("mw-push").split("validation") == MW_VALIDATION
    for bad in ("valid", "Test", "val"):
        with pytest.raises(ValueError, match=f"split must be one of .*'validation'.*got '{bad}'"):
            suite.datasets(bad)


def cheetah_vel_data() -> dict:
    return json.loads((spec_dir() / "cheetah-vel.json").read_text())


def test_malformed_spec():
    """Each error of ``parse_spec`` names the field, its value and what was expected."""
    data = cheetah_vel_data()
    parsed = parse_spec(data)
    assert parsed.test_tasks == [2, 7, 15, 23, 26] and parsed.source is None
    assert parsed.tasks == load_spec("cheetah-vel").tasks
    cases = [
        ({k: v for k, v in data.items() if k != "horizon"}, "'horizon' is a required field in <root>"),
        ({**data, "colour": "red"}, "'colour' was unexpected"),
        ({**data, "horizon": 0}, "field 'horizon' = 0: expected a number >= 1"),
        ({**data, "horizon": "200"}, "field 'horizon' = \"200\": expected a value of type integer"),
        ({**data, "rtg_scale": 0}, "field 'rtg_scale' = 0: expected"),
        ({**data, "name": "Cheetah Vel"}, "field 'name' = \"Cheetah Vel\": expected"),
        (
            {**data, "split": {**data["split"], "test": [2, 99]}},
            "field 'split.test' = [2, 99]: expected task ids in [0, 39]",
        ),
        (
            {**data, "datasets": {**data["datasets"], "episodes": {"expert": 3}}},
            "'medium' is a required field in datasets.episodes",
        ),
        (
            {**data, "tasks": [[0.5], [1.0, 2.0]]},
            "field 'tasks.1' = [1.0, 2.0]: expected 1 numbers like task 0's goal",
        ),
        (
            {**data, "env": {**data["env"], "task": {}}},
            "field 'env.task' = {}: expected exactly one of goal_kwarg, goal_kwargs, index_kwarg, hook",
        ),
        (
            {**data, "expert": {"policy": "sac"}},
            'field \'expert\' = {"policy": "sac"}: expected a scripted expert',
        ),
        (
            {**data, "expert": {**data["expert"], "goal_sampling": {"uniform": [[0.0, 0.0], [3.1, 3.1]]}}},
            "field 'expert.goal_sampling' = {\"uniform\": [[0.0, 0.0], [3.1, 3.1]]}: expected goals of 1 numbers",
        ),
    ]
    for bad, *messages in cases:
        with pytest.raises(ValueError, match=r"^suite spec <dict>: ") as info:
            parse_spec(bad)
        for message in messages:
            assert message in str(info.value), (message, str(info.value))
    with pytest.raises(ValueError, match="suite spec <dict>: expected a JSON object, got list"):
        parse_spec([data])

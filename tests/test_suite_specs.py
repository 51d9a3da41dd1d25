"""Suite spec files: a bad spec is a clear ``ValueError`` at load, before any compute, naming the field
and its value; a good one loads from its path, with its env, expert and task application."""

import json
import os
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import jsonschema
import numpy as np
import pytest

import promptrl
from promptrl.data.datasets import create_datasets, datasets_root
from promptrl.experiments.cli import main
from promptrl.tasks.spec import available_suites, load_spec, schema_path, spec_dir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "point_robot"
POINT_ROBOT_ID = "tutorial/PointRobot-v0"


@pytest.fixture(autouse=True)
def promptrl_home(tmp_path, monkeypatch) -> Path:
    """Runs and models of every test go to a folder of its own."""
    home = tmp_path / "home"
    monkeypatch.setenv("PROMPTRL_HOME", str(home))
    return home


@pytest.fixture
def point_robot(tmp_path, monkeypatch) -> Path:
    """The point-robot example copied to a folder of its own; its module and env id are forgotten for
    the test, so loading it imports ``point_robot.py`` from beside the copied spec."""
    folder = tmp_path / "suite"
    folder.mkdir()
    for name in ("point-robot.json", "point_robot.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    monkeypatch.delitem(sys.modules, "point_robot", raising=False)
    monkeypatch.delitem(gym.registry, POINT_ROBOT_ID, raising=False)
    return folder / "point-robot.json"


def example() -> dict:
    """The point-robot example's spec data."""
    return json.loads((EXAMPLE / "point-robot.json").read_text())


def write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def edited(point_robot: Path, filename: str = "edited.json", **changes) -> Path:
    """A copy of the point-robot spec beside the original (so its module is found) with ``changes``."""
    return write(point_robot.with_name(filename), {**example(), **changes})


# ----------------------------------------------------------------------------- errors of the file itself
def test_missing_and_unknown_field(point_robot):
    data = example()
    del data["horizon"]
    with pytest.raises(ValueError, match=r"^suite spec no-horizon\.json: 'horizon' is a required field in <root>"):
        promptrl.load_suite(write(point_robot.with_name("no-horizon.json"), data))
    with pytest.raises(ValueError, match=r"^suite spec colour\.json: .*'colour' was unexpected"):
        promptrl.load_suite(edited(point_robot, "colour.json", colour="red"))
    with pytest.raises(ValueError, match=r"^suite spec edited\.json: .*'colour' was unexpected\) in env$"):
        promptrl.load_suite(edited(point_robot, env={**example()["env"], "colour": "red"}))
    # inside the expert (one of two forms) the error names the field and the forms it may take
    with pytest.raises(ValueError, match=r"field 'expert' = \{\"policy\": \"scripted\".*: expected a scripted expert"):
        promptrl.load_suite(edited(point_robot, expert={**example()["expert"], "gain": 10.0}))


def test_task_id_out_of_range(point_robot):
    split = {**example()["split"], "test": [1, 4, 10]}
    with pytest.raises(ValueError, match=r"field 'split\.test' = \[1, 4, 10\]: expected task ids in \[0, 9\]"):
        promptrl.load_suite(edited(point_robot, split=split))


@pytest.mark.parametrize(
    "split,message",
    [
        (
            {"train": [0, 1, 2], "test": [2, 3]},
            r"field 'split\.test' = \[2, 3\]: expected no task of split\.train \(or set split\.train_test_overlap\), "
            r"got \[2\]",
        ),
        (
            {"train": [0, 1], "validation": [3], "test": [2, 3], "train_test_overlap": True},
            r"field 'split\.test' = \[2, 3\]: expected no task of split\.validation, got \[3\]",
        ),
        (
            {"train": [0, 1], "validation": [1, 5], "test": [2]},
            r"field 'split\.validation' = \[1, 5\]: expected no task of split\.train, got \[1\]",
        ),
    ],
)
def test_overlapping_split(point_robot, split, message):
    with pytest.raises(ValueError, match=message):
        promptrl.load_suite(edited(point_robot, split=split))


def test_train_test_overlap_is_allowed_when_declared(point_robot):
    suite = promptrl.load_suite(
        edited(point_robot, split={"train": [0, 1, 2], "test": [2, 3], "train_test_overlap": True})
    )
    assert (suite.train_tasks, suite.validation_tasks, suite.test_tasks) == ([0, 1, 2], [], [2, 3])


def test_goal_kwargs_of_the_wrong_length_and_dataset_id_without_quality(point_robot):
    env = {**example()["env"], "task": {"goal_kwargs": ["x", "y", "z"]}}
    with pytest.raises(
        ValueError, match=r"field 'env\.task\.goal_kwargs' = \['x', 'y', 'z'\]: expected one name per goal entry \(2\)"
    ):
        promptrl.load_suite(edited(point_robot, env=env))
    datasets = {**example()["datasets"], "id": "tutorial/point-robot/task{task:02d}-v0"}
    with pytest.raises(
        ValueError,
        match=r"field 'datasets\.id' = 'tutorial/point-robot/task\{task:02d\}-v0': "
        r"expected exactly the fields \{task\} and \{quality\}",
    ):
        promptrl.load_suite(edited(point_robot, datasets=datasets))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"horizon": 20.0}, r"field 'horizon' = 20\.0: expected a value of type integer"),
        ({"obs_dim": 2.0}, r"field 'obs_dim' = 2\.0: expected a value of type integer"),
        ({"split": {"train": [0, 2, 3, 5, 6, 8, 9], "test": [1, 4, 7.0]}}, r"field 'split\.test\.2' = 7\.0"),
    ],
)
def test_whole_numbers_written_as_floats_are_not_integers(point_robot, changes, message):
    """JSON Schema counts 2.0 as an integer; a spec's ids and sizes must be written as integers."""
    with pytest.raises(ValueError, match=message):
        promptrl.load_suite(edited(point_robot, **changes))


@pytest.mark.parametrize(
    "template,reason",
    [
        ("task{task:02d-{quality}-v0", "unmatched '{' in format spec"),
        ("task{task:s}-{quality}-v0", "Unknown format code"),
    ],
)
def test_a_dataset_id_that_does_not_format_is_named(point_robot, template, reason):
    datasets = {**example()["datasets"], "id": template}
    with pytest.raises(ValueError, match=rf"field 'datasets\.id' = .*a Python format string \({reason}"):
        promptrl.load_suite(edited(point_robot, datasets=datasets))


def test_not_json_and_a_built_in_name(point_robot):
    broken = write(point_robot.with_name("broken.json"), point_robot.read_text()[:-20])
    with pytest.raises(ValueError, match=r"^suite spec broken\.json: not valid JSON: "):
        promptrl.load_suite(broken)
    with pytest.raises(
        ValueError,
        match=r"suite spec clash\.json: field 'name' = 'cheetah-vel': expected a name that no built-in suite has",
    ):
        promptrl.load_suite(edited(point_robot, "clash.json", name="cheetah-vel"))
    with pytest.raises(FileNotFoundError, match="suite spec file .*missing.json' not found"):
        promptrl.load_suite(point_robot.with_name("missing.json"))


# ----------------------------------------------------------------------------- errors against what the spec names
def test_env_id_that_does_not_exist(point_robot):
    env = {"id": "tutorial/NoSuchRobot-v0", "task": {"goal_kwarg": "goal"}}
    with pytest.raises(
        ValueError,
        match=r"field 'env' = 'tutorial/NoSuchRobot-v0' .*expected an env that gym\.make can build for task 0, got Na",
    ):
        promptrl.load_suite(edited(point_robot, env=env))
    # an entry point whose module is nowhere: the error names the env field and the module
    env = {"id": "tutorial/NoSuchRobot-v0", "entry_point": "no_such_robot:RobotEnv", "task": {"goal_kwarg": "goal"}}
    with pytest.raises(ValueError, match=r"field 'env' = 'tutorial/NoSuchRobot-v0' .*'no_such_robot'"):
        promptrl.load_suite(edited(point_robot, env=env))
    assert "tutorial/NoSuchRobot-v0" not in gym.registry


@pytest.mark.parametrize(
    "entry_point,message",
    [
        (
            "no_such_module:toward_goal",
            r"module 'no_such_module' is neither importable nor a file no_such_module\.py beside",
        ),
        ("point_robot:away_from_goal", r"module 'point_robot' has no attribute 'away_from_goal'"),
    ],
)
def test_expert_entry_point_that_does_not_import(point_robot, entry_point, message):
    expert = {**example()["expert"], "entry_point": entry_point}
    with pytest.raises(ValueError, match=rf"field 'expert\.entry_point' = '{entry_point}': .*{message}"):
        promptrl.load_suite(edited(point_robot, expert=expert))


def test_expert_kwargs_the_factory_does_not_take(point_robot):
    """The scripted expert is built once (task 0) when the suite loads, so a wrong kwarg is named then."""
    expert = {**example()["expert"], "kwargs": {"gian": 10}}
    with pytest.raises(
        ValueError,
        match=r"'expert\.kwargs' = \{'gian': 10\}: expected a factory .* for task 0 it raised TypeError: .*'gian'",
    ):
        promptrl.load_suite(edited(point_robot, expert=expert))


def test_a_suite_that_is_no_name_or_path():
    with pytest.raises(TypeError, match=r"suite: expected a built-in suite's name, a spec file's path, .* got dict"):
        promptrl.load_suite({"name": "cheetah-vel"})


@pytest.mark.parametrize("key,space", [("obs_dim", "observation"), ("act_dim", "action")])
def test_sizes_that_differ_from_the_env(point_robot, key, space):
    with pytest.raises(
        ValueError, match=rf"field '{key}' = 3: expected the size of the env's {space} space, which has shape \(2,\)"
    ):
        promptrl.load_suite(edited(point_robot, **{key: 3}))


def test_cli_rejects_a_bad_spec_before_writing_data(point_robot, capsys):
    assert main(["data", str(edited(point_robot, obs_dim=3)), "--episodes", "1", "--tasks", "1"]) == 2
    assert "field 'obs_dim' = 3" in capsys.readouterr().err
    assert not any(datasets_root().iterdir())


@pytest.mark.parametrize(
    "env_id,goal_kwarg,tasks,obs_dim,act_dim,message",
    [
        # a 2-D observation like the point robot's, but one action
        (
            "MountainCarContinuous-v0",
            "goal_velocity",
            [[0.0], [0.05]],
            2,
            1,
            r"action_space has shape \[2\], expected \[1\]",
        ),
        # three observations, one action: the observation is checked first
        ("Pendulum-v1", "g", [[9.8], [10.0]], 3, 1, r"observation_space has shape \[2\], expected \[3\]"),
    ],
)
def test_datasets_whose_spaces_differ_from_the_env(point_robot, env_id, goal_kwarg, tasks, obs_dim, act_dim, message):
    """Real point-robot datasets, then a spec of another env that names them by the same id template."""
    assert create_datasets(point_robot, "expert", tasks=[1], episodes=2) == ["tutorial/point-robot/task01-expert-v0"]
    promptrl.load_suite(point_robot)  # its own datasets have its spaces
    other = {
        **example(),
        "name": "other-env",
        "env": {"id": env_id, "task": {"goal_kwargs": [goal_kwarg]}},
        "tasks": tasks,
        "split": {"train": [0], "test": [1]},
        "obs_dim": obs_dim,
        "act_dim": act_dim,
    }
    del other["expert"]
    path = write(point_robot.with_name("other-env.json"), other)
    with pytest.raises(
        ValueError, match=rf"^dataset 'tutorial/point-robot/task01-expert-v0' of suite 'other-env': its {message}"
    ):
        promptrl.load_suite(path)


# ----------------------------------------------------------------------------- specs that load
def test_point_robot_loads_from_its_path(point_robot):
    suite = promptrl.load_suite(point_robot)
    assert suite.ref == str(point_robot.resolve()) and suite.spec.source == point_robot.resolve()
    assert suite.spec.cli_arg == "point-robot.json"
    assert Path(sys.modules["point_robot"].__file__).resolve() == point_robot.with_name("point_robot.py").resolve()
    assert (len(suite.tasks), suite.train_tasks, suite.validation_tasks, suite.test_tasks) == (
        10,
        [0, 2, 3, 5, 6, 8],
        [9],
        [1, 4, 7],
    )
    env = suite.make_env(4)
    obs, info = env.reset(seed=0)
    assert obs.shape == (2,) and env.spec.max_episode_steps == 20
    np.testing.assert_allclose(info["goal"], suite.tasks[4])
    # the scripted expert (also from point_robot.py) is handed the goal and heads for it
    action, _ = suite.expert(4).predict(obs, deterministic=True)
    step = np.asarray(action, dtype=np.float64)
    assert np.dot(step, np.asarray(suite.tasks[4]) - obs) > 0


def test_stock_gymnasium_env_with_per_task_kwargs(tmp_path):
    spec = {
        **json.loads((spec_dir() / "cheetah-dir.json").read_text()),
        "name": "my-cheetah-dir",
        "env": {
            "id": "HalfCheetah-v5",
            "kwargs": {"ctrl_cost_weight": 0.05},
            "task": {"goal_kwargs": ["forward_reward_weight"]},
        },
        "tasks": [[1.0], [-1.0]],
        "obs_dim": 17,
        "act_dim": 6,
        "datasets": {
            "id": "me/my-cheetah-dir/task{task:02d}-{quality}-v0",
            "episodes": {"expert": 2, "medium": 2, "random": 2},
        },
        "expert": {
            "policy": "sac",
            "weights": "cheetah-dir",
            "features": "goal",
            "goal_sampling": {"choice": [[-1.0], [1.0]]},
        },
    }
    suite = promptrl.load_suite(write(tmp_path / "my-cheetah-dir.json", spec))
    mine, builtin = suite.make_env(1), promptrl.load_suite("cheetah-dir").make_env(1)
    assert mine.unwrapped._forward_reward_weight == -1.0 and mine.unwrapped._ctrl_cost_weight == 0.05
    assert suite.make_env(0).unwrapped._forward_reward_weight == 1.0
    assert mine.spec.max_episode_steps == builtin.spec.max_episode_steps == 200
    # the same reward as the built-in family: d * v_x - 0.05 |a|^2
    obs_mine, _ = mine.reset(seed=3)
    obs_builtin, _ = builtin.reset(seed=3)
    np.testing.assert_array_equal(obs_mine, obs_builtin)
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (5, 6)).astype(np.float32)
    rewards = np.array([[mine.step(a)[1], builtin.step(a)[1]] for a in actions])
    np.testing.assert_allclose(rewards[:, 0], rewards[:, 1], rtol=1e-6, atol=1e-7)
    assert np.ptp(rewards[:, 0]) > 0.01  # the steps differ, so equality is not trivial


HOOK = """
import numpy as np

calls = []


def set_goal(env, goal):
    calls.append(list(goal))
    env.goal = np.asarray(goal, dtype=np.float64)
"""


def test_hook_applies_the_task(point_robot, monkeypatch):
    monkeypatch.delitem(sys.modules, "goal_hook", raising=False)
    write(point_robot.with_name("goal_hook.py"), HOOK)
    env = {
        "id": "tutorial/HookedPointRobot-v0",
        "entry_point": "point_robot:PointRobotEnv",
        "task": {"hook": "goal_hook:set_goal"},
    }
    monkeypatch.delitem(gym.registry, env["id"], raising=False)
    suite = promptrl.load_suite(edited(point_robot, "hooked.json", name="hooked-point-robot", env=env))
    calls = sys.modules["goal_hook"].calls
    assert calls == [suite.tasks[0]]  # load_suite's env check made task 0
    made = suite.make_env(3)
    assert calls[-1] == suite.tasks[3]
    np.testing.assert_allclose(made.unwrapped.goal, suite.tasks[3])
    obs, info = made.reset(seed=0)
    np.testing.assert_allclose(info["goal"], suite.tasks[3])
    obs, reward, *_ = made.step(np.zeros(2, dtype=np.float32))
    assert reward == pytest.approx(-np.linalg.norm(obs - np.asarray(suite.tasks[3])))


@pytest.mark.parametrize("name", ["cheetah-vel", "ant-dir"])
def test_builtins_apply_the_task_index(name):
    suite = promptrl.load_suite(name)
    assert suite.spec.env.task == {"index_kwarg": "task"}
    task = suite.test_tasks[1]
    env = suite.make_env(task)
    assert env.unwrapped.task == task
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(info["goal"], suite.tasks[task])


# ----------------------------------------------------------------------------- the schema and the file cache
@pytest.mark.parametrize(
    "path", [*sorted(spec_dir().glob("*.json")), EXAMPLE / "point-robot.json"], ids=lambda p: p.stem
)
def test_spec_files_validate_against_the_schema(path):
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(path.read_text()), schema, cls=jsonschema.Draft202012Validator)


def test_every_built_in_is_a_spec_file():
    assert available_suites() == sorted(p.stem for p in spec_dir().glob("*.json"))
    assert all(load_spec(name).ref == name == load_spec(name).cli_arg for name in available_suites())


def test_load_spec_sees_a_changed_file(point_robot):
    assert load_spec(point_robot).horizon == 20
    assert load_spec(str(point_robot)) is load_spec(point_robot)  # cached while the file is unchanged
    before = point_robot.stat()
    edited(point_robot, "point-robot.json", horizon=200)
    if point_robot.stat().st_mtime_ns == before.st_mtime_ns:  # a coarse clock: make the change visible
        os.utime(point_robot, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert load_spec(point_robot).horizon == 200
    assert promptrl.load_suite(point_robot).make_env(1).spec.max_episode_steps == 200


# ----------------------------------------------------------------------------- the command line
def test_cli_suites_lists_a_spec_file(point_robot, capsys):
    assert main(["suites", str(point_robot)]) == 0
    out = capsys.readouterr().out
    row = (
        "| point-robot | tutorial/PointRobot-v0 | 10 | 6 | [9] | [1, 4, 7] | 20 | -3 / 10 | 2 / 2 | scripted | 0 / 30 |"
    )
    assert row in out.splitlines()
    assert "cheetah-vel" not in out  # only the spec asked for


def test_cli_rejects_a_missing_spec_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "no-such.json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "suite spec file 'no-such.json' not found" in captured.err and captured.out == ""


# ----------------------------------------------------------------------------- two spec folders, one name
def test_same_module_name_from_another_folder_is_an_error(point_robot, tmp_path):
    promptrl.load_suite(point_robot)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(EXAMPLE / "point_robot.py", other / "point_robot.py")
    spec = write(other / "point-robot-2.json", {**example(), "name": "point-robot-2"})
    with pytest.raises(
        ValueError, match=r"a module 'point_robot' is already loaded from another file than point_robot\.py"
    ):
        promptrl.load_suite(spec)


def test_env_id_registered_for_another_entry_point_is_an_error(point_robot, monkeypatch):
    monkeypatch.delitem(gym.registry, "tutorial/Taken-v0", raising=False)
    gym.register(id="tutorial/Taken-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv")
    try:
        env = {**example()["env"], "id": "tutorial/Taken-v0"}
        with pytest.raises(ValueError, match=r"field 'env\.id' = 'tutorial/Taken-v0'.*registered for 'gymnasium"):
            promptrl.load_suite(edited(point_robot, env=env))
    finally:
        del gym.registry["tutorial/Taken-v0"]


# ----------------------------------------------------------------------------- datasets without an expert
def test_a_spec_without_expert_uses_existing_datasets(point_robot):
    """A suite whose data exists already (any Minari datasets of the ids its template names) needs no
    expert: it loads, trains and says clearly what is missing when a dataset is not there."""
    create_datasets(point_robot, "expert", tasks=[0, 2], episodes=2)
    data = {k: v for k, v in example().items() if k != "expert"}
    spec = write(
        point_robot.with_name("data-only.json"), {**data, "name": "data-only", "split": {"train": [0, 2], "test": [4]}}
    )
    suite = promptrl.load_suite(spec)
    assert suite.spec.expert is None
    assert [d.total_episodes for d in suite.datasets("train")] == [2, 2]
    model = promptrl.PromptDT(suite, embed_dim=16, n_layer=1, context=5, prompt_length=2, batch_per_task=2)
    model.learn(suite.datasets("train"), total_steps=2, progress_bar=False)
    assert model.settings.steps_trained == 2
    with pytest.raises(FileNotFoundError, match=r"task04-expert-v0.*the suite's spec has no expert to create it"):
        suite.dataset(4)
    with pytest.raises(ValueError, match=r"suite 'data-only' has no expert in its spec: its datasets must exist"):
        create_datasets(suite, "expert", tasks=[4], episodes=1)
    assert create_datasets(suite, "random", tasks=[4], episodes=1) == ["tutorial/point-robot/task04-random-v0"]

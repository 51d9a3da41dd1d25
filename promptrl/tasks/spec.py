"""Suite spec files as plain, validated data: a suite is a JSON file of the schema ``suite.schema.json``.

The built-in suites are the files in ``promptrl/tasks/specs/``; a user's suite is any file of the
same schema, loaded by its path (``load_spec("path/to/my-suite.json")``).

>>> from promptrl.tasks.spec import load_spec
>>> spec = load_spec("cheetah-vel")
>>> len(spec.tasks), spec.test_tasks, spec.horizon
(40, [2, 7, 15, 23, 26], 200)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import numbers
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import jsonschema

QUALITIES = ("expert", "medium", "random")
SPLITS = ("train", "validation", "test", "all")
TASK_APPLICATIONS = ("goal_kwarg", "goal_kwargs", "index_kwarg", "hook")


@dataclass(frozen=True)
class EnvSpec:
    """The env family of a suite and how a task reaches it."""

    id: str
    """Gymnasium id (registered from :attr:`entry_point` when it is not registered yet)."""
    task: dict[str, Any]
    """How a task is applied: one of ``{"goal_kwarg": name}``, ``{"goal_kwargs": [names]}``,
    ``{"index_kwarg": name}`` or ``{"hook": "module:function"}``."""
    entry_point: str | None = None
    """``"module:Class"`` of the env, or None for an id registered elsewhere."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of every ``gym.make`` of the family."""


@dataclass(frozen=True)
class ExpertSpec:
    """The policy behind a suite's expert and medium datasets."""

    policy: str
    """``"scripted"`` (a function of the observation, handed the true goal) or ``"sac"`` (a trained actor)."""
    entry_point: str | None = None
    """Scripted: ``"module:factory"``, called as ``factory(goal, **kwargs)``; returns ``obs -> action``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Scripted: keyword arguments of the factory."""
    medium_noise: float = 0.0
    """Scripted: std of the Gaussian action noise of the medium policy."""
    weights: str | None = None
    """SAC: a shipped expert's name, or a ``.safetensors`` path relative to the spec file."""
    features: str = "goal"
    """SAC: ``"goal"`` (observation and goal) or ``"ant-frame"`` (the observation in the goal direction's frame)."""
    goal_sampling: dict[str, Any] | None = None
    """SAC: training goals, ``{"uniform": [low, high]}`` or ``{"choice": [goals]}``."""


@dataclass(frozen=True)
class SuiteSpec:
    """The data of one suite spec file (see ``suite.schema.json`` for the file's format)."""

    name: str
    """Suite name, e.g. ``"cheetah-vel"``; names its results and model folders."""
    description: str
    """One line on the reward and the task parameter."""
    env: EnvSpec
    """The env family and how a task is applied."""
    goal_name: str
    """What a task's goal vector means (``"velocity"``, ``"angle"``, ...)."""
    tasks: list[list[float]]
    """Goal vector of every task, indexed by task id."""
    train_tasks: list[int]
    """Task ids used for pre-training."""
    validation_tasks: list[int]
    """Task ids held out for choices (checkpoints, temperatures, rules); may be empty."""
    test_tasks: list[int]
    """Task ids held out for few-shot adaptation and evaluation."""
    horizon: int
    """Episode length (the env's time limit)."""
    rtg_target: float
    """Return-to-go the Decision Transformer is conditioned on at evaluation."""
    rtg_scale: float
    """Divisor applied to returns-to-go before they enter the model."""
    obs_dim: int
    """Observation size."""
    act_dim: int
    """Action size."""
    dataset_id: str
    """Minari dataset id template with ``{task}`` and ``{quality}`` fields."""
    episodes: dict[str, int]
    """Default number of episodes per task for each dataset quality."""
    expert: ExpertSpec | None
    """The policy that writes the expert and medium datasets; None when they exist already."""
    provenance: str
    """Where the numbers come from."""
    source: Path | None = None
    """The spec file (relative paths in the spec are relative to its folder); None for a spec built in Python."""

    @property
    def env_id(self) -> str:
        """Gymnasium id of the env family."""
        return self.env.id

    @property
    def ref(self) -> str:
        """What :func:`load_spec` loads this spec from: a built-in suite's name, or its file's path."""
        if self.source is None or self.source.parent == spec_dir().resolve():
            return self.name
        return str(self.source)

    @property
    def cli_arg(self) -> str:
        """How commands quoted in cards and results name this suite: a built-in suite's name, or its
        spec file's name (never a machine's path)."""
        return self.name if self.ref == self.name else self.source.name

    def split(self, split: str) -> list[int]:
        """Task ids of ``"train"``, ``"validation"``, ``"test"`` or ``"all"``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split == "all":
            return list(range(len(self.tasks)))
        return list({"train": self.train_tasks, "validation": self.validation_tasks, "test": self.test_tasks}[split])

    def check_task(self, task: int) -> int:
        """``task`` if it is a task id of this suite, else a ``ValueError`` naming the valid range."""
        if not isinstance(task, int) or isinstance(task, bool) or not 0 <= task < len(self.tasks):
            raise ValueError(
                f"task must be an integer in [0, {len(self.tasks) - 1}] for suite {self.name!r}, got {task!r}"
            )
        return task

    def check_tasks(self, tasks: Sequence[int], argument: str = "tasks") -> list[int]:
        """``tasks`` as a list if each is a task id of this suite, given once, else a ``ValueError``
        naming ``argument``, the suite's ids and every id outside them or repeated."""
        try:
            tasks = list(tasks)
        except TypeError:
            raise ValueError(f"{argument}: expected a list of task ids, got {tasks!r}") from None
        repeated = sorted({t for i, t in enumerate(tasks) if t in tasks[:i]}, key=repr)
        if repeated:
            raise ValueError(f"{argument}: expected each task id once, got {repeated} more than once")
        outside = [
            t
            for t in tasks
            if not isinstance(t, numbers.Integral) or isinstance(t, bool) or not 0 <= t < len(self.tasks)
        ]
        if outside:
            raise ValueError(
                f"{argument}: suite {self.name!r} has tasks 0 to {len(self.tasks) - 1}, got {outside} outside them"
            )
        return [int(t) for t in tasks]

    def task_dataset_id(self, task: int, quality: str) -> str:
        """Minari id of a task's dataset, e.g. ``promptrl/cheetah-vel/task02-expert-v0``."""
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        return self.dataset_id.format(task=self.check_task(task), quality=quality)

    def make_env(self, task: int, **kwargs: Any) -> gym.Env:
        """The env of ``task``, limited to the suite's horizon (the envs of the built-in suites are
        registered by ``import promptrl``; a spec's ``env.entry_point`` is registered here). The env
        keeps the suite and task as ``promptrl_suite`` (:attr:`ref`) and ``promptrl_task``, which a
        :class:`~promptrl.wrappers.PromptWrapper` reads to find a task's ``"expert"`` prompt."""
        goal = self.tasks[self.check_task(task)]
        how, value = next(iter(self.env.task.items()))
        task_kwargs: dict[str, Any] = {}
        if how == "goal_kwarg":
            task_kwargs = {value: list(goal)}
        elif how == "goal_kwargs":
            task_kwargs = dict(zip(value, goal))
        elif how == "index_kwarg":
            task_kwargs = {value: task}
        self._register()
        limit = kwargs.pop("max_episode_steps", self.horizon)
        env = gym.make(self.env.id, max_episode_steps=limit, **{**self.env.kwargs, **task_kwargs, **kwargs})
        if how == "hook":
            import_entry_point(value, self.source)(env.unwrapped, list(goal))
        env.unwrapped.promptrl_suite, env.unwrapped.promptrl_task = self.ref, task  # for quality-name prompts
        return env

    def _register(self) -> None:
        if self.env.entry_point is None:
            return
        import_entry_point(self.env.entry_point, self.source)  # importable: a clear error here, not in gym.make
        registered = gym.registry.get(self.env.id)
        if registered is None:
            gym.register(id=self.env.id, entry_point=self.env.entry_point)
        elif registered.entry_point != self.env.entry_point:
            raise ValueError(
                f"suite spec {self.name!r}: field 'env.id' = {self.env.id!r}: expected an id not registered yet or "
                f"registered for {self.env.entry_point!r}, but it is registered for {registered.entry_point!r}"
            )

    def check_env(self) -> None:
        """Make the env of the first task and check it against the spec (an unknown id, a failing
        task application or different space sizes are a ``ValueError`` naming the field)."""
        try:
            env = self.make_env(0)
        except (gym.error.Error, ImportError, TypeError, ValueError) as err:
            raise ValueError(
                f"suite spec {self.name!r}: field 'env' = {self.env.id!r} with task {self.env.task}: "
                f"expected an env that gym.make can build for task 0, got {type(err).__name__}: {err}"
            ) from err
        try:
            sizes = {"obs_dim": env.observation_space.shape, "act_dim": env.action_space.shape}
        finally:
            env.close()
        for key, shape in sizes.items():
            if shape != (getattr(self, key),):
                raise ValueError(
                    f"suite spec {self.name!r}: field {key!r} = {getattr(self, key)}: expected the size of the "
                    f"env's {'observation' if key == 'obs_dim' else 'action'} space, which has shape {shape}"
                )


def import_entry_point(entry_point: str, source: Path | None = None) -> Any:
    """The object ``"module:name"`` names. A module that is not importable is looked for as
    ``<module>.py`` beside the spec file ``source``. A ``ValueError`` names what was not found."""
    module_name, _, attribute = entry_point.partition(":")
    beside = None if source is None else source.parent / (module_name.replace(".", "/") + ".py")
    loaded = sys.modules.get(module_name)
    if beside is not None and beside.is_file() and loaded is not None:
        origin = getattr(loaded, "__file__", None)
        if origin is None or Path(origin).resolve() != beside.resolve():
            raise ValueError(
                f"entry point {entry_point!r}: a module {module_name!r} is already loaded from another file than "
                f"{beside.name} beside {source.name}; give the modules of different suites different names"
            )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if beside is None or not beside.is_file():
            where = "" if source is None else f" nor a file {beside.name} beside {source.name}"
            raise ValueError(
                f"entry point {entry_point!r}: module {module_name!r} is neither importable{where}"
            ) from err
        loader = importlib.util.spec_from_file_location(module_name, beside)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        loader.loader.exec_module(module)
    if not hasattr(module, attribute):
        raise ValueError(f"entry point {entry_point!r}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


def spec_dir() -> Path:
    """The folder holding the built-in suite spec files."""
    return Path(__file__).parent / "specs"


def schema_path() -> Path:
    """The JSON Schema of suite spec files."""
    return Path(__file__).parent / "suite.schema.json"


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    """The schema's validator, with "integer" meaning a JSON number written without a fraction or exponent
    (JSON Schema also counts ``2.0`` as an integer; a task id, horizon or size given so would load as a float)."""
    schema = json.loads(schema_path().read_text())
    strict = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict)(schema)


def available_suites() -> list[str]:
    """Names of the built-in suites."""
    return sorted(p.stem for p in spec_dir().glob("*.json"))


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_spec(data: dict[str, Any], source: str | Path | None = None) -> SuiteSpec:
    """Validate a spec's JSON data against the schema and the rules it cannot state (task ids in
    range, disjoint splits, equal-length goals, the dataset id's fields); returns a :class:`SuiteSpec`.
    Errors are ``ValueError`` naming the field, its value and what was expected."""
    source = None if source is None else Path(source)
    where = f"suite spec {source.name if source else '<dict>'}"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors[:5]:
            if err.validator == "required":
                lines.append(f"{where}: {err.message.replace('property', 'field')} in {_field(err.absolute_path)}")
            elif err.validator == "additionalProperties":
                lines.append(f"{where}: {err.message} in {_field(err.absolute_path)}")
            else:
                lines.append(
                    f"{where}: field {_field(err.absolute_path)!r} = {_shown(err.instance)}: expected {_expected(err)}"
                )
        raise ValueError("\n".join(lines))
    n = len(data["tasks"])
    width = len(data["tasks"][0])
    for i, goal in enumerate(data["tasks"]):
        if len(goal) != width:
            raise ValueError(
                f"{where}: field 'tasks.{i}' = {_shown(goal)}: expected {width} numbers like task 0's goal"
            )
    split = data["split"]
    for key in ("train", "validation", "test"):
        bad = [t for t in split.get(key, []) if not 0 <= t < n]
        if bad:
            raise ValueError(f"{where}: field 'split.{key}' = {split[key]}: expected task ids in [0, {n - 1}]")
    pairs = [("train", "validation"), ("validation", "test")]
    if not split.get("train_test_overlap", False):
        pairs.append(("train", "test"))
    for a, b in pairs:
        shared = sorted(set(split.get(a, [])) & set(split.get(b, [])))
        if shared:
            extra = "" if (a, b) != ("train", "test") else " (or set split.train_test_overlap)"
            raise ValueError(
                f"{where}: field 'split.{b}' = {split[b]}: expected no task of split.{a}{extra}, got {shared}"
            )
    goal_kwargs = data["env"]["task"].get("goal_kwargs")
    if goal_kwargs is not None and len(goal_kwargs) != width:
        raise ValueError(
            f"{where}: field 'env.task.goal_kwargs' = {goal_kwargs}: expected one name per goal entry ({width})"
        )
    template = data["datasets"]["id"]
    expected = f"{where}: field 'datasets.id' = {template!r}: expected exactly the fields {{task}} and {{quality}}"
    try:
        names = {f[1] for f in string.Formatter().parse(template) if f[1] is not None}
        if names == {"task", "quality"}:
            template.format(task=0, quality="expert")  # a format spec that fits an int task id and a str quality
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ValueError(f"{expected}, a Python format string ({err})") from None
    if names != {"task", "quality"}:
        raise ValueError(expected)
    expert = data.get("expert")
    if expert is not None and expert["policy"] == "sac":
        sampling = expert["goal_sampling"]
        lists = sampling.get("uniform", sampling.get("choice"))
        if any(len(g) != width for g in lists):
            raise ValueError(
                f"{where}: field 'expert.goal_sampling' = {_shown(sampling)}: expected goals of {width} numbers"
            )
    return SuiteSpec(
        name=data["name"],
        description=data["description"],
        env=EnvSpec(**data["env"]),
        goal_name=data["goal_name"],
        tasks=[list(map(float, g)) for g in data["tasks"]],
        train_tasks=list(split["train"]),
        validation_tasks=list(split.get("validation", [])),
        test_tasks=list(split["test"]),
        horizon=data["horizon"],
        rtg_target=float(data["rtg_target"]),
        rtg_scale=float(data["rtg_scale"]),
        obs_dim=data["obs_dim"],
        act_dim=data["act_dim"],
        dataset_id=template,
        episodes=dict(data["datasets"]["episodes"]),
        expert=None if expert is None else ExpertSpec(**expert),
        provenance=data["provenance"],
        source=None if source is None else source.resolve(),
    )


def _expected(err: jsonschema.ValidationError) -> str:
    """What the schema wanted, in words, from a jsonschema error."""
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "oneOf" and err.absolute_path and err.absolute_path[-1] == "expert":
        kinds = (
            'a scripted expert {"policy": "scripted", "entry_point", "medium_noise"[, "kwargs"]} or a SAC one '
            '{"policy": "sac", "weights", "goal_sampling"[, "features"]}'
        )
        policy = err.instance.get("policy") if isinstance(err.instance, dict) else None
        branch = (
            next(
                (
                    e
                    for e in err.context or []
                    if e.schema_path and e.schema_path[0] == ("scripted", "sac").index(policy)
                ),
                None,
            )
            if policy in ("scripted", "sac")
            else None
        )
        return kinds if branch is None else f"{kinds}; {_message(branch)}"
    if err.validator in ("minProperties", "maxProperties"):
        return "exactly one of " + ", ".join(schema.get("properties", {}))
    return _message(err)


def _message(err: jsonschema.ValidationError) -> str:
    """One schema rule in words (the field and value are named by the caller)."""
    rule, value = err.validator, err.validator_value
    words = {
        "type": lambda: f"a value of type {value}",
        "minimum": lambda: f"a number >= {value}",
        "exclusiveMinimum": lambda: f"a number > {value}",
        "pattern": lambda: f"a string matching {value}",
        "enum": lambda: f"one of {value}",
        "const": lambda: f"{value!r}",
        "minItems": lambda: f"at least {value} item(s)",
        "maxItems": lambda: f"at most {value} item(s)",
        "minLength": lambda: "a non-empty string",
        "uniqueItems": lambda: "no repeated items",
        "required": lambda: err.message.replace("property", "field"),
        "additionalProperties": lambda: f"no other fields ({err.message})",
    }
    return words[rule]() if rule in words else err.message


def _read(path: Path) -> SuiteSpec:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"suite spec {path.name}: not valid JSON: {err}") from err
    return parse_spec(data, path)


@functools.cache
def _load_file(path: Path, mtime_ns: int, size: int) -> SuiteSpec:
    spec = _read(path)
    builtin = path.parent == spec_dir().resolve()
    if builtin and spec.name != path.stem:
        raise ValueError(
            f"suite spec {path.name}: field 'name' = {spec.name!r}: expected the file's name {path.stem!r}"
        )
    if not builtin and spec.name in available_suites():
        raise ValueError(
            f"suite spec {path.name}: field 'name' = {spec.name!r}: expected a name that no built-in suite has"
        )
    return spec


def load_spec(suite: str | Path) -> SuiteSpec:
    """Read and validate a suite spec: a built-in suite's name (``"cheetah-vel"``) or a spec file's path."""
    if not isinstance(suite, (str, Path)):
        raise TypeError(
            f"suite: expected a built-in suite's name, a spec file's path, a SuiteSpec or a TaskSuite, got "
            f"{type(suite).__name__} {suite!r}"
        )
    path = Path(suite)
    if not (isinstance(suite, Path) or str(suite).endswith(".json") or path.is_file()):
        suites = available_suites()
        if suite not in suites:
            raise ValueError(f"unknown suite {suite!r}; choose one of {suites} or give a spec file's path (.json)")
        path = spec_dir() / f"{suite}.json"
    if not path.is_file():
        raise FileNotFoundError(f"suite spec file {str(suite)!r} not found")
    stat = path.stat()
    return _load_file(path.resolve(), stat.st_mtime_ns, stat.st_size)


def as_spec(suite: Any) -> SuiteSpec:
    """The :class:`SuiteSpec` of ``suite``: a spec, a built-in suite's name, a spec file's path, or
    anything holding one as ``.spec`` (a :class:`~promptrl.suites.TaskSuite`)."""
    if isinstance(suite, (str, Path)):
        return load_spec(suite)
    spec = getattr(suite, "spec", suite)
    if not isinstance(spec, SuiteSpec):
        raise TypeError(
            f"suite must be a suite name, a spec file's path, a SuiteSpec or a TaskSuite, got {type(suite).__name__}"
        )
    return spec

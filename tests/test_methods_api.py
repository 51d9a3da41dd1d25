"""The API every promptrl model shares: the ``total_steps`` budget of ``learn``, the training loop's
step counting and callback, the PromptWrapper observation spec, and the one Hub save/load path."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import promptrl
from promptrl.data.datasets import create_datasets
from promptrl.methods.baselines import (
    MTORL,
    Adaptor,
    FineTune,
    FixedPrompt,
    PromptTuningDT,
    SoftPrompt,
    VAEPromptGenerator,
)
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT, observation_dtype, observation_shapes
from promptrl.methods.training import training_budget
from promptrl.nn.diffusion import UPDATE_RULES, combine_gradients
from promptrl.wrappers import PromptWrapper, observation_space

TINY_PLM = dict(embed_dim=16, n_layer=1, batch_per_task=4, warmup_steps=5, context=6)
# Every adaptation method with tiny settings; SoftPrompt and PromptTuningDT learn one task (6).
METHODS = {
    "diffuser": (PromptDiffuser, dict(n_steps=4, hidden=16, batch_size=4)),
    "vae": (VAEPromptGenerator, dict(hidden=16, n_hidden=1, batch_size=4)),
    "soft": (SoftPrompt, dict(batch_size=4)),
    "adaptor": (Adaptor, dict(batch_size=4)),
    "prompt_tuning": (PromptTuningDT, dict(batch_size=4, population=4)),
    "finetune": (FineTune, dict(batch_size=4)),
    "fixed": (FixedPrompt, {}),
    "mt_orl": (MTORL, {}),
}
TRAINED = ["diffuser", "vae", "soft", "adaptor", "prompt_tuning", "finetune"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Datasets of mw-reach tasks 6 and 9 (one expert episode each) and tiny PLMs (with and without prompts)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        suite = promptrl.load_suite("mw-reach")
        create_datasets(suite, "expert", tasks=[6, 9], episodes=1)
        data = {t: suite.dataset(t, "expert") for t in (6, 9)}
        plm = PromptDT(suite, seed=0, **TINY_PLM).learn(list(data.values()), total_steps=3, progress_bar=False)
        mt_orl = PromptDT(suite, seed=0, use_prompt=False, **TINY_PLM).learn(
            list(data.values()), total_steps=3, progress_bar=False
        )
    return suite, data, plm, mt_orl


def build(name, world, **extra):
    _, _, plm, mt_orl = world
    cls, settings = METHODS[name]
    return cls(mt_orl if name == "mt_orl" else plm, seed=1, **{**settings, **extra})


def data_for(name, world):
    _, data, _, _ = world
    return data[6] if name in ("soft", "prompt_tuning") else list(data.values())


def state(model):
    return {k: v.detach().clone() for k, v in model._state_module().state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def observation(model, world, task=6, steps=2):
    """A PromptWrapper observation after a few steps (a PromptDT gets prompts from the task's dataset)."""
    prompt = world[1][task] if isinstance(model, PromptDT) else None
    env = PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=task), model, prompt=prompt, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        obs, *_ = env.step(model.predict(obs)[0])
    return env, obs


# ---------------------------------------------------------------------- total_steps
@pytest.mark.parametrize("name", TRAINED)
def test_total_steps_is_epochs_times_steps_per_epoch(world, name):
    data = data_for(name, world)
    by_epochs = build(name, world).learn(data, epochs=2, steps_per_epoch=2, progress_bar=False)
    by_total = build(name, world).learn(data, total_steps=4, progress_bar=False)
    assert by_epochs.settings.steps_trained == by_total.settings.steps_trained == 4
    assert_same_state(state(by_epochs), state(by_total))


@pytest.mark.parametrize("name", list(METHODS))
def test_total_steps_conflicts_with_epochs(world, name):
    data = data_for(name, world)
    for budget in (dict(epochs=2), dict(steps_per_epoch=3), dict(epochs=1, steps_per_epoch=1)):
        with pytest.raises(ValueError, match="give total_steps or epochs/steps_per_epoch, not both"):
            build(name, world).learn(data, total_steps=4, progress_bar=False, **budget)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"total_steps must be an integer > 0, got {bad!r}"):
            build(name, world).learn(data, total_steps=bad, progress_bar=False)


def test_training_budget():
    assert training_budget(None, 3, 7) == 21
    assert training_budget(5) == 5
    settings = METHODS["soft"][0].settings_class(epochs=4, steps_per_epoch=10)
    assert training_budget(None, settings=settings) == 40
    assert training_budget(None, steps_per_epoch=2, settings=settings) == 8
    with pytest.raises(ValueError, match="epochs must be an integer > 0, got 0"):
        training_budget(None, 0, 3)


def test_plm_total_steps(world):
    suite, data, _, _ = world
    model = PromptDT(suite, seed=0, **TINY_PLM)
    with pytest.raises(ValueError, match="total_steps must be an integer > 0, got 0"):
        model.learn(list(data.values()), total_steps=0)
    model.learn(list(data.values()), total_steps=3, progress_bar=False)
    assert model.settings.steps_trained == 3


# ---------------------------------------------------------------------- the training loop
@pytest.mark.parametrize("name", ["plm", "diffuser", "adaptor"])
def test_callback_steps_count_every_update_and_false_stops(world, name):
    suite, data, _, _ = world
    model = PromptDT(suite, seed=0, **TINY_PLM) if name == "plm" else build(name, world)
    seen = []
    model.learn(list(data.values()), total_steps=3, callback=lambda d: seen.append(d["step"]), progress_bar=False)
    model.learn(list(data.values()), total_steps=2, callback=lambda d: seen.append(d["step"]), progress_bar=False)
    assert seen == [1, 2, 3, 4, 5] and model.settings.steps_trained == 5
    stopped = []
    model.learn(
        list(data.values()),
        total_steps=10,
        callback=lambda d: stopped.append(d) or len(stopped) < 2,
        progress_bar=False,
    )
    assert len(stopped) == 2 and model.settings.steps_trained == 7
    assert stopped[0]["model"] is model and np.isfinite(stopped[0]["loss" if name != "diffuser" else "loss_dm"])
    with pytest.raises(TypeError, match="callback must be callable or None, got int"):
        model.learn(list(data.values()), total_steps=1, callback=3)


def test_non_finite_loss_stops_training(world):
    _, data, _, _ = world
    method = build("adaptor", world)
    method.loss = lambda history, prompt=None: Adaptor.loss(method, history, prompt) * float("nan")
    with pytest.raises(FloatingPointError, match="non-finite at step 1"):
        method.learn(list(data.values()), total_steps=3, progress_bar=False)
    assert not method._state_module().training  # back in eval mode after the error


# ---------------------------------------------------------------------- the observation spec
@pytest.mark.parametrize("use_prompt", [True, False])
def test_wrapper_space_is_what_predict_accepts(world, use_prompt):
    _, _, plm, mt_orl = world
    model = plm if use_prompt else mt_orl
    space = observation_space(model)
    shapes = observation_shapes(model.settings)
    s = model.settings
    assert shapes["states"] == (s.context, s.obs_dim) and shapes["timesteps"] == (s.context,)
    assert ("prompt_states" in shapes) == use_prompt
    if use_prompt:
        assert shapes["prompt_actions"] == (s.prompt_length, s.act_dim)
    assert set(space.spaces) == set(shapes)
    for key, box in space.spaces.items():
        assert box.shape == shapes[key] and box.dtype == np.dtype(observation_dtype(key)), key
    env, obs = observation(model, world)
    assert env.observation_space == space and space.contains(obs)
    action, _ = model.predict(obs)
    assert action.shape == (s.act_dim,)
    batched = {k: np.stack([v, v]) for k, v in obs.items()}
    assert model.predict(batched)[0].shape == (2, s.act_dim)
    for key, shape in shapes.items():  # predict refuses exactly what the space refuses
        wrong = {**obs, key: np.zeros((shape[0] + 1, *shape[1:]), observation_dtype(key))}
        assert not space.contains(wrong)
        with pytest.raises(ValueError, match=rf"observation\['{key}'\] must have shape"):
            model.predict(wrong)
        missing = {k: v for k, v in obs.items() if k != key}
        with pytest.raises(ValueError, match=f"observation is missing keys \\['{key}'\\]"):
            model.predict(missing)


def test_timesteps_must_be_integers(world):
    _, _, plm, _ = world
    _, obs = observation(plm, world)
    for key in ("timesteps", "prompt_timesteps"):
        with pytest.raises(TypeError, match=rf"observation\['{key}'\] must hold integers"):
            plm.predict({**obs, key: obs[key].astype(np.float32)})


# ---------------------------------------------------------------------- update rules
def test_update_rules_are_defined_once():
    from promptrl.methods.generator import GeneratorSettings

    assert UPDATE_RULES == ("projection", "dm", "dt", "sum")
    g_dm, g_dt = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    expected = {
        "projection": torch.tensor([1.0, 1.0]),  # the conflicting part of g_dt removed
        "dm": g_dm,
        "dt": g_dt,
        "sum": torch.tensor([0.0, 1.0]),
    }
    for rule in UPDATE_RULES:
        assert torch.equal(combine_gradients(g_dm, g_dt, rule), expected[rule]), rule
        assert GeneratorSettings(update=rule).update == rule
    with pytest.raises(ValueError, match="update must be one of \\('projection', 'dm', 'dt', 'sum'\\)"):
        GeneratorSettings(update="mean")
    with pytest.raises(ValueError, match="update must be one of"):
        combine_gradients(g_dm, g_dt, "mean")


# ---------------------------------------------------------------------- the Hub path
KINDS = ["plm", "plm_mt_orl", *METHODS]


def trained_model(kind, world):
    suite, data, plm, mt_orl = world
    if kind == "plm":
        return plm
    if kind == "plm_mt_orl":
        return mt_orl
    return build(kind, world).learn(data_for(kind, world), total_steps=2, progress_bar=False)


@pytest.mark.parametrize("kind", KINDS)
def test_hub_round_trip(world, tmp_path, kind):
    model = trained_model(kind, world)
    model.save_pretrained(tmp_path / kind)
    cls = type(model)
    loaded = cls.from_pretrained(tmp_path / kind)
    assert type(loaded) is cls and loaded.settings == model.settings
    assert_same_state(state(model), state(loaded))
    assert not loaded._state_module().training
    _, obs = observation(model, world)
    np.testing.assert_array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    saved = {p.relative_to(tmp_path / kind).as_posix() for p in (tmp_path / kind).rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors"} <= saved
    assert all(p.endswith((".json", ".safetensors", ".md")) for p in saved)  # no pickles
    if kind.startswith("plm"):
        return
    assert {"plm/config.json", "plm/model.safetensors"} <= saved
    model.save_method(tmp_path / "alone")  # without the PLM: loaded with plm=
    alone = cls.from_pretrained(tmp_path / "alone", plm=model._pretrained())
    assert_same_state(state(model), state(alone))
    with pytest.raises(FileNotFoundError, match="plm/config.json not found in .*: a method's folder holds its PLM"):
        cls.from_pretrained(tmp_path / "alone")
    with pytest.raises(TypeError, match="plm must be a PromptDT, got str"):
        cls.from_pretrained(tmp_path / "alone", plm="plm")


@pytest.mark.parametrize("kind", ["plm", "diffuser", "adaptor"])
def test_hub_errors(world, tmp_path, kind):
    model = trained_model(kind, world)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    cls, name = type(model), type(model).__name__
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "no_such_setting": 1}))
    with pytest.raises(
        ValueError, match=rf"config.json in .* is not a {name} config \(unknown keys \['no_such_setting'\]"
    ):
        cls.from_pretrained(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt config.json in"):
        cls.from_pretrained(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"config.json in .* is not a {name} config \(a JSON list\)"):
        cls.from_pretrained(folder)
    wider = {"plm": {"embed_dim": 32}, "diffuser": {"hidden": 32}, "adaptor": {"hidden": 8}}[kind]
    (folder / "config.json").write_text(json.dumps({**config, **wider}))
    with pytest.raises(ValueError, match="model.safetensors in .* does not match its config.json"):
        cls.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="corrupt model.safetensors in .* is corrupt"):
        cls.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found in"):
        cls.from_pretrained(folder)


def test_plm_config_needs_its_sizes(world, tmp_path):
    _, _, plm, _ = world
    plm.save_pretrained(tmp_path / "plm")
    config = json.loads((tmp_path / "plm" / "config.json").read_text())
    del config["obs_dim"]
    (tmp_path / "plm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"is not a PromptDT config \(unknown keys \[\], missing keys \['obs_dim'\]\)"):
        PromptDT.from_pretrained(tmp_path / "plm")


def test_train_plm_resumes_in_chunks_and_names_bad_counts(tmp_path):
    from promptrl.data.datasets import create_datasets
    from promptrl.methods.plm import train_plm

    suite = promptrl.load_suite("mw-reach")
    create_datasets(suite, "expert", tasks=suite.train_tasks, episodes=1)
    saves = []
    tiny = {"embed_dim": 16, "n_layer": 1, "batch_per_task": 2, "warmup_steps": 2, "context": 4}
    model = train_plm(
        suite,
        tmp_path,
        5,
        checkpoint_steps=2,
        on_checkpoint=lambda m: saves.append(m.settings.steps_trained),
        progress_bar=False,
        **tiny,
    )
    assert saves == [2, 4, 5] and model.settings.steps_trained == 5
    more = train_plm(
        suite,
        tmp_path,
        6,
        checkpoint_steps=2,
        on_checkpoint=lambda m: saves.append(m.settings.steps_trained),
        progress_bar=False,
    )
    assert saves == [2, 4, 5, 6] and more.settings.steps_trained == 6  # resumed from the checkpoint at step 5
    with pytest.raises(ValueError, match="checkpoint_steps must be an integer > 0, got 0"):
        train_plm(suite, tmp_path / "other", 3, checkpoint_steps=0, progress_bar=False, **tiny)


def test_compile_settings_are_checked_and_keep_the_plain_path_on_cpu(world):
    _, data, plm, _ = world
    with pytest.raises(ValueError, match="compile_chain must be True, False or one of"):
        PromptDiffuser(plm, compile_chain="fastest")
    plain = PromptDiffuser(plm, n_steps=4, hidden=16, batch_size=4, seed=3)
    compiled = PromptDiffuser(plm, n_steps=4, hidden=16, batch_size=4, seed=3, compile_chain=True)
    for pd in (plain, compiled):
        pd.learn(data[6], total_steps=2, progress_bar=False)
    a, b = (pd.generate_prompt(2, task=6) for pd in (plain, compiled))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)  # on CPU both run the plain chain


def test_plm_compile_setting_keeps_the_plain_path_on_cpu(world):
    _, data, _, _ = world
    plain, compiled = (
        PromptDT("mw-reach", seed=0, compile=flag, **TINY_PLM).learn(
            list(data.values()), total_steps=2, progress_bar=False
        )
        for flag in (False, True)
    )
    assert all(
        torch.equal(a, b) for a, b in zip(plain.network.state_dict().values(), compiled.network.state_dict().values())
    )

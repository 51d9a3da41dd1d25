import copy
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import promptrl
from promptrl.data.datasets import create_datasets
from promptrl.evaluation import evaluate
from promptrl.methods.plm import PromptDT
from promptrl.wrappers import PromptWrapper

TINY = dict(embed_dim=32, n_layer=1, batch_per_task=4, warmup_steps=5, context=8)
TASKS = [6, 9]


@pytest.fixture
def reach_data():
    suite = promptrl.load_suite("mw-reach")
    create_datasets(suite, "expert", tasks=TASKS, episodes=2)
    return suite, [suite.dataset(t, "expert") for t in TASKS]


@pytest.fixture
def trained(reach_data):
    suite, data = reach_data
    return PromptDT(suite, seed=0, **TINY).learn(data, total_steps=5, progress_bar=False)


def rollout_obs(model, task=6, steps=3, seed=0):
    env = PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=task), model, prompt="expert", seed=seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(model.predict(obs)[0])
    return env, obs


def test_learn_lowers_loss(reach_data):
    suite, data = reach_data
    losses = []
    PromptDT(suite, seed=0, **TINY).learn(
        data, total_steps=40, callback=lambda d: losses.append(d["loss"]), progress_bar=False
    )
    assert len(losses) == 40 and np.mean(losses[-8:]) < np.mean(losses[:8])


@pytest.mark.parametrize(
    "bf16, amx, expected", [(None, False, False), (None, True, True), (True, False, True), (False, True, False)]
)
def test_bf16_autocast_in_learn(reach_data, monkeypatch, bf16, amx, expected):
    """bf16=None (the default) autocasts only where bf16 is faster (here: a CPU with AMX units); True and
    False force it. The choice is not written into the config, so a saved model chooses again elsewhere."""
    suite, data = reach_data
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    model = PromptDT(suite, seed=0, bf16=bf16, **TINY)
    seen = []
    loss = model.loss
    model.loss = lambda *a: seen.append(torch.is_autocast_enabled("cpu")) or loss(*a)
    model.learn(data, total_steps=2, progress_bar=False)
    assert seen == [expected] * 2 and model.settings.bf16 is bf16


def test_callback_stops(reach_data):
    suite, data = reach_data
    model = PromptDT(suite, **TINY).learn(data, total_steps=10, callback=lambda d: d["step"] < 3, progress_bar=False)
    assert model.settings.steps_trained == 3


def test_wrapper_observation_and_history(trained):
    env, obs = rollout_obs(trained, steps=3)
    assert env.observation_space.contains(obs)
    assert obs["mask"].tolist() == [0] * 4 + [1] * 4
    assert obs["timesteps"][-4:].tolist() == [0, 1, 2, 3]
    assert obs["prompt_states"].shape == (5, 39)
    assert obs["rtg"][-1, 0] < obs["rtg"][-4, 0] == trained.settings.rtg_target


def test_batched_predict_equals_single(trained):
    _, a = rollout_obs(trained, task=6, seed=0)
    _, b = rollout_obs(trained, task=9, seed=1)
    batch = {k: np.stack([a[k], b[k]]) for k in a}
    actions, state = trained.predict(batch)
    assert state is None and actions.shape == (2, 4)
    np.testing.assert_allclose(actions[0], trained.predict(a)[0], atol=1e-5)
    np.testing.assert_allclose(actions[1], trained.predict(b)[0], atol=1e-5)


def test_bf16_inference_is_close_and_saved(trained, tmp_path):
    _, obs = rollout_obs(trained, task=6, seed=0)
    full, _ = trained.predict(obs)
    trained.settings.bf16_inference = True
    try:
        half, _ = trained.predict(obs)
        np.testing.assert_allclose(half, full, atol=0.05)
        assert half.dtype == np.float32
        trained.save_pretrained(tmp_path / "plm")
        assert PromptDT.from_pretrained(tmp_path / "plm").settings.bf16_inference
    finally:
        trained.settings.bf16_inference = False
    # settings can be overridden at load time; typos and architecture fields are errors
    trained.save_pretrained(tmp_path / "plm32")
    assert PromptDT.from_pretrained(tmp_path / "plm32", bf16_inference=True).settings.bf16_inference
    with pytest.raises(TypeError, match="unknown arguments \\['bf16_inferense'\\]"):
        PromptDT.from_pretrained(tmp_path / "plm32", bf16_inferense=True)
    with pytest.raises(ValueError, match="cannot be overridden"):
        PromptDT.from_pretrained(tmp_path / "plm32", embed_dim=64)


def test_save_load_roundtrip(trained, tmp_path):
    trained.save_pretrained(tmp_path / "plm")
    assert {p.name for p in (tmp_path / "plm").iterdir()} == {"config.json", "model.safetensors", "README.md"}
    card = (tmp_path / "plm" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: promptrl") and "Prompt-DT for mw-reach" in card
    loaded = PromptDT.from_pretrained(tmp_path / "plm")
    _, obs = rollout_obs(trained)
    np.testing.assert_array_equal(trained.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.settings == trained.settings


def test_bad_checkpoints(trained, tmp_path):
    folder = tmp_path / "plm"
    trained.save_pretrained(folder)
    other = PromptDT(promptrl.load_suite("mw-reach"), embed_dim=16, n_layer=1)
    other.save_pretrained(tmp_path / "other")
    (folder / "model.safetensors").replace(tmp_path / "keep.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        PromptDT.from_pretrained(folder)
    (tmp_path / "other" / "model.safetensors").replace(folder / "model.safetensors")
    with pytest.raises(ValueError, match="does not match its config.json"):
        PromptDT.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt model.safetensors"):
        PromptDT.from_pretrained(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt config.json"):
        PromptDT.from_pretrained(folder)


def test_bad_observations(trained):
    _, obs = rollout_obs(trained)
    with pytest.raises(TypeError, match="wrap the env with promptrl.PromptWrapper"):
        trained.predict(np.zeros(39))
    with pytest.raises(ValueError, match=r"observation\['states'\] must have shape \(8, 39\)"):
        trained.predict({**obs, "states": obs["states"][:, :-1]})
    with pytest.raises(TypeError, match=r"observation\['timesteps'\] must hold integers"):
        trained.predict({**obs, "timesteps": obs["timesteps"].astype(np.float32)})
    bad = obs["states"].copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        trained.predict({**obs, "states": bad})
    with pytest.raises(ValueError, match=r"observation\['prompt_states'\] must have shape \(5, 39\)"):
        trained.predict({**obs, "prompt_states": obs["prompt_states"][:3]})
    with pytest.raises(ValueError, match="missing keys"):
        trained.predict({k: v for k, v in obs.items() if k != "rtg"})
    with pytest.raises(ValueError, match=r"observation\['prompt_timesteps'\] holds negative timesteps"):
        trained.predict({**obs, "prompt_timesteps": obs["prompt_timesteps"] - 1000})
    with pytest.raises(ValueError, match=r"observation\['mask'\] must hold 0 \(padding\) or 1"):
        trained.predict({**obs, "mask": obs["mask"] * 0.5})


def test_bad_construction_and_env(trained, reach_data):
    with pytest.raises(TypeError, match="unknown PromptDT hyperparameters \\['embedding'\\]"):
        PromptDT("mw-reach", embedding=3)
    with pytest.raises(ValueError, match="does not match the model's obs_dim=39"):
        PromptWrapper(gym.make("promptrl/CheetahVel-v0", task=2), trained, prompt="expert")
    with pytest.raises(ValueError, match="prompt\\['states'\\] must have shape \\(5, 39\\)"):
        env = PromptWrapper(
            gym.make("promptrl/MetaWorldReach-v0", task=6),
            trained,
            prompt={
                "states": np.zeros((3, 39)),
                "actions": np.zeros((3, 4)),
                "rtg": np.zeros(3),
                "timesteps": np.arange(3),
                "mask": np.ones(3),
            },
        )
        env.reset()
    suite, data = reach_data
    vel = promptrl.load_suite("cheetah-vel")
    with pytest.raises(ValueError, match="observations of size 39, the model expects 17"):
        PromptDT(vel, **TINY).learn(data, total_steps=1, progress_bar=False)


def test_evaluate_names_what_does_not_fit(trained):
    """evaluate checks the model against the suite, and the split's tasks, before any env is made."""
    with pytest.raises(ValueError) as err:
        evaluate(trained, "cheetah-vel", n_episodes=1)
    assert str(err.value) == (
        "model (trained on suite 'mw-reach', observation size 39, action size 4) does not fit suite "
        "'cheetah-vel' (observation size 17, action size 6)"
    )
    with pytest.raises(ValueError, match=r"split 'validation' of suite 'mw-reach' has no tasks \(its splits: train "):
        evaluate(trained, "mw-reach", split="validation", n_episodes=1)
    with pytest.raises(ValueError, match=r"tasks: suite 'mw-reach' has tasks 0 to 20, got \[21\] outside them"):
        evaluate(trained, "mw-reach", tasks=[21], n_episodes=1)


def user_dataset(dataset_id, env, episodes, seed=0, action_scale=1.0):
    """A user's own Minari dataset of uniform random actions in [-1, 1], recorded times
    ``action_scale``, made from buffers without promptrl."""
    import minari
    from minari.data_collector import EpisodeBuffer

    rng, buffers = np.random.default_rng(seed), []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        done = False
        while not done:
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action * action_scale)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            done = terminated or truncated
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=np.array(observations),
                actions=np.array(actions),
                rewards=rewards,
                terminations=terminations,
                truncations=truncations,
            )
        )
    return minari.create_dataset_from_buffers(dataset_id, buffers, env=env, algorithm_name="random")


def test_an_env_outside_the_suites_with_its_own_minari_data(tmp_path):
    """Any env with flat Box spaces in [-1, 1] and any Minari datasets: without a suite, the
    return-to-go target and scale come from the data (highest return, largest |return|)."""

    def pendulum(g):
        return gym.wrappers.RescaleAction(gym.make("Pendulum-v1", g=g), -1.0, 1.0)

    data = [user_dataset(f"user/pendulum-g{g}-v0", pendulum(g), episodes=2, seed=g) for g in (8, 10)]
    returns = [float(ep.rewards.sum()) for d in data for ep in d.iterate_episodes()]
    plm = PromptDT(pendulum(10), seed=0, **TINY)
    with pytest.raises(ValueError, match="no return-to-go target yet"):
        PromptWrapper(pendulum(10), plm, prompt=data[0])
    plm.learn(data, total_steps=3, progress_bar=False)
    assert plm.settings.suite is None
    assert plm.settings.rtg_target == pytest.approx(max(returns), rel=1e-5)
    assert plm.settings.rtg_scale == pytest.approx(max(abs(r) for r in returns), rel=1e-5)
    env = PromptWrapper(pendulum(10), plm, prompt=data[1])
    obs, _ = env.reset(seed=0)
    assert obs["rtg"][-1, 0] == pytest.approx(plm.settings.rtg_target)
    action, _ = plm.predict(obs)
    env.step(action)
    # a Prompt Diffuser on the same data generates this PLM's prompts at every reset
    from promptrl import PromptDiffuser

    pd = PromptDiffuser(plm, n_steps=4, hidden=16, batch_size=4).learn(
        data, epochs=1, steps_per_epoch=2, progress_bar=False
    )
    generated = PromptWrapper(pendulum(8), pd)
    gen_obs, _ = generated.reset(seed=0)
    assert gen_obs["prompt_states"].shape == (plm.settings.prompt_length, 3)
    generated.step(pd.predict(gen_obs)[0])
    plm.save_pretrained(tmp_path / "pendulum")
    loaded = PromptDT.from_pretrained(tmp_path / "pendulum")
    assert (loaded.settings.rtg_target, loaded.settings.rtg_scale) == (plm.settings.rtg_target, plm.settings.rtg_scale)
    np.testing.assert_array_equal(loaded.predict(obs)[0], action)
    with pytest.raises(ValueError, match="rtg_scale must be positive"):
        PromptDT(pendulum(10), rtg_scale=0.0)
    # the timestep embedding covers the env's time limit; longer episodes in the data are an error
    long = gym.wrappers.RescaleAction(gym.make("Pendulum-v1", max_episode_steps=1500), -1.0, 1.0)
    assert PromptDT(long, **TINY).settings.max_ep_len == 1500
    with pytest.raises(ValueError, match="an episode of 200 steps, longer than max_ep_len=150"):
        PromptDT(pendulum(10), **{**TINY, "max_ep_len": 150}).learn(data, total_steps=1, progress_bar=False)
    base = pendulum(10)
    with pytest.raises(TypeError, match="FlattenObservation"):
        PromptDT(
            gym.wrappers.TransformObservation(base, lambda o: {"x": o}, gym.spaces.Dict({"x": base.observation_space}))
        )


def test_actions_outside_the_tanh_range_are_refused(trained, reach_data):
    """The tanh head acts in [-1, 1]: an env or a dataset with a wider action range is an error that
    names the fix, never a policy that silently cannot reach part of the range."""
    pendulum = gym.make("Pendulum-v1")  # actions in [-2, 2]
    with pytest.raises(ValueError, match="RescaleAction"):
        PromptDT(pendulum, **TINY)
    PromptDT(gym.wrappers.RescaleAction(pendulum, -1.0, 1.0), **TINY)  # the fix works
    reach = gym.make("promptrl/MetaWorldReach-v0", task=6)
    with pytest.raises(ValueError, match="tanh head acts in \\[-1, 1\\]"):
        PromptWrapper(gym.wrappers.RescaleAction(reach, -2.0, 2.0), trained, prompt="expert")
    vector = gym.vector.SyncVectorEnv(
        [lambda: gym.wrappers.RescaleAction(gym.make("promptrl/MetaWorldReach-v0", task=6), -2.0, 2.0)]
    )
    with pytest.raises(ValueError, match="RescaleAction"):
        promptrl.VectorPromptWrapper(vector, trained, prompt="expert")
    # a user's dataset recorded in the env's own units, outside [-1, 1]
    wide = user_dataset("user/reach-wide-v0", reach, episodes=1, action_scale=3.0)
    with pytest.raises(
        ValueError, match="'user/reach-wide-v0' episode 0 has actions in \\[-.*\\], but the policy's tanh head"
    ):
        PromptDT("mw-reach", **TINY).learn(wide, total_steps=1, progress_bar=False)


def test_datasets_of_discrete_or_dict_spaces_are_refused():
    """A user's dataset of discrete actions or Dict observations is a clear error, not an IndexError."""
    import minari
    from minari.data_collector import EpisodeBuffer

    def dataset(dataset_id, env, observations, actions):
        buffer = EpisodeBuffer(
            id=0,
            observations=observations,
            actions=actions,
            rewards=[0.0] * 3,
            terminations=[False] * 3,
            truncations=[False, False, True],
        )
        return minari.create_dataset_from_buffers(dataset_id, [buffer], env=env, algorithm_name="random")

    cartpole = dataset("user/cartpole-v0", gym.make("CartPole-v1"), np.zeros((4, 4), np.float32), np.array([0, 1, 0]))
    with pytest.raises(
        ValueError, match="'user/cartpole-v0' has actions of shape \\(3,\\).*discrete actions are not supported"
    ):
        PromptDT(obs_dim=4, act_dim=1, **TINY).learn(cartpole, total_steps=1, progress_bar=False)
    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    goal_env = gym.make("MountainCarContinuous-v0")
    goal_env.observation_space = gym.spaces.Dict({"observation": box, "desired_goal": box})
    goals = dataset(
        "user/goals-v0",
        goal_env,
        {"observation": np.zeros((4, 2), np.float32), "desired_goal": np.zeros((4, 2), np.float32)},
        np.zeros((3, 1), np.float32),
    )
    with pytest.raises(
        ValueError, match="Dict observations \\(keys \\['desired_goal', 'observation'\\]\\).*FlattenObservation"
    ):
        PromptDT(obs_dim=4, act_dim=1, **TINY).learn(goals, total_steps=1, progress_bar=False)


def test_prompt_changes_action(trained):
    _, obs = rollout_obs(trained)
    other = {**obs, "prompt_states": obs["prompt_states"] + 1.0}
    assert not np.allclose(trained.predict(obs)[0], trained.predict(other)[0])


def test_evaluate_is_seeded(trained, reach_data):
    suite = promptrl.load_suite("mw-reach")
    create_datasets(suite, "expert", tasks=suite.test_tasks, episodes=1)
    a = evaluate(trained, suite, split="test", n_episodes=1, seed=3)
    b = evaluate(trained, suite, split="test", n_episodes=1, seed=3)
    assert a.returns == b.returns
    assert sorted(a.returns) == suite.test_tasks and all(len(r) == 1 for r in a.returns.values())
    # Meta-World resets are deterministic, so the seed acts through the prompt windows it draws:
    # with random windows another seed gives other returns
    randomized = copy.deepcopy(trained)
    randomized.settings.prompt_window = "random"
    c = evaluate(randomized, suite, split="test", n_episodes=1, seed=4)
    assert c.returns != evaluate(randomized, suite, split="test", n_episodes=1, seed=3).returns
    assert (
        evaluate(trained, suite, split="test", n_episodes=1, seed=3, prompt="expert").returns == a.returns
    )  # the default
    assert "| **mean** |" in a.table()


def test_mt_orl_runs_without_prompt(reach_data):
    suite, data = reach_data
    model = PromptDT(suite, use_prompt=False, **TINY).learn(data, total_steps=3, progress_bar=False)
    assert model.settings.prompt_length == 0
    env = PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=6), model)
    obs, _ = env.reset(seed=0)
    assert "prompt_states" not in obs and model.predict(obs)[0].shape == (4,)


@pytest.mark.parametrize("mode", ["NEXT_STEP", "SAME_STEP"])
def test_vector_wrapper_matches_single_wrapper(trained, mode):
    from promptrl.wrappers import VectorPromptWrapper

    prompt = {
        "states": np.ones((5, 39)),
        "actions": np.zeros((5, 4)),
        "rtg": np.full(5, 800.0),
        "timesteps": np.arange(5),
        "mask": np.ones(5),
    }
    vec = gym.vector.SyncVectorEnv(
        [lambda t=t: gym.make("promptrl/MetaWorldReach-v0", task=t) for t in TASKS],
        autoreset_mode=getattr(gym.vector.AutoresetMode, mode),
    )
    venv = VectorPromptWrapper(vec, trained, prompt=prompt)
    obs, _ = venv.reset(seed=[0, 1])
    assert venv.observation_space.contains(obs)
    singles = [PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=t), trained, prompt=prompt) for t in TASKS]
    single_obs = [env.reset(seed=s)[0] for env, s in zip(singles, [0, 1])]
    for step in range(105):  # past the 100-step horizon: the autoreset restarts every history
        actions, _ = trained.predict(obs)
        for i, env in enumerate(singles):
            np.testing.assert_allclose(actions[i], trained.predict(single_obs[i])[0], atol=1e-5)
            single_obs[i], _, te, tr, _ = env.step(actions[i])
        obs, _, term, trunc, _ = venv.step(actions)
        if step == 99:
            assert (term | trunc).all()
            single_obs = (
                [env.reset(seed=s)[0] for env, s in zip(singles, [0, 1])] if mode == "SAME_STEP" else single_obs
            )
        if mode == "NEXT_STEP" and step == 100:
            single_obs = [env.reset(seed=s)[0] for env, s in zip(singles, [0, 1])]
            # NEXT_STEP: this step only restarted the sub-envs; its history holds just the reset observation.
            assert obs["mask"].sum(1).tolist() == [1, 1]
    assert obs["timesteps"][:, -1].max() < 10


def test_last_prompt_window_cuts_the_end_of_episodes(reach_data, tmp_path):
    """prompt_window="last": training prompts and expert prompts are an episode's last K* steps."""
    from dataclasses import replace

    from promptrl.data.episodes import episodes_of
    from promptrl.data.windows import SegmentSampler

    suite, data = reach_data
    model = PromptDT(suite, seed=0, prompt_window="last", **TINY).learn(data, total_steps=2, progress_bar=False)
    episodes = {t: episodes_of(d, 39, 4) for t, d in zip(TASKS, data)}
    horizon = len(episodes[6][0])
    spec = model._segment_spec()
    _, prompt = SegmentSampler(episodes, episodes, spec, seed=0).sample(3)
    assert (prompt.timesteps == torch.arange(horizon - 5, horizon)).all() and (prompt.mask == 1).all()
    env = PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=6), model, prompt="expert", seed=0)
    obs, _ = env.reset(seed=0)
    assert obs["prompt_timesteps"].tolist() == list(range(horizon - 5, horizon))
    model.save_pretrained(tmp_path / "plm")
    assert PromptDT.from_pretrained(tmp_path / "plm").settings.prompt_window == "last"
    # "random" cuts windows anywhere, and a config written before the setting existed loads as
    # "random" (what it was trained with); a typo is an error naming the choices
    _, prompt = SegmentSampler(episodes, episodes, replace(spec, prompt_window="random"), seed=0).sample(3)
    assert len(set(prompt.timesteps[:, -1].tolist())) > 1
    assert PromptDT(suite, **TINY).settings.prompt_window == "last"
    config = json.loads((tmp_path / "plm" / "config.json").read_text())
    del config["prompt_window"]
    (tmp_path / "plm" / "config.json").write_text(json.dumps(config))
    assert PromptDT.from_pretrained(tmp_path / "plm").settings.prompt_window == "random"
    with pytest.raises(ValueError, match="prompt_window must be one of"):
        PromptDT(suite, prompt_window="end", **TINY)


@pytest.mark.parametrize("prompt_window", ["last", "random"])
def test_sampler_batches_equal_windows_cut_one_by_one(prompt_window):
    """The sampler's one-gather batches equal ``window`` applied to each drawn (episode, start),
    padding of short episodes and windows near the end included."""
    from promptrl.data.episodes import Episode
    from promptrl.data.windows import SegmentSampler, SegmentSpec, window

    rng = np.random.default_rng(0)
    episodes = {
        t: [
            Episode.from_arrays(rng.normal(size=(n + 1, 3)), rng.uniform(-1, 1, (n, 2)), rng.normal(size=n))
            for n in rng.integers(2, 30, size=4)
        ]
        for t in (3, 8)
    }
    spec = SegmentSpec(
        8, 3, 10.0, rng.normal(size=3).astype(np.float32), np.full(3, 2.0, np.float32), 20, prompt_window
    )
    sampler, draws = SegmentSampler(episodes, episodes, spec, seed=5), np.random.default_rng(5)
    history, prompt = sampler.sample(3)
    expected_h, expected_p = [], []
    for t in (3, 8):  # the sampler's draw order: per task, per window: episode, start, prompt episode (, start)
        for _ in range(3):
            ep = episodes[t][draws.integers(4)]
            expected_h.append(window(ep, int(draws.integers(0, len(ep))), 8, spec))
            pep = episodes[t][draws.integers(4)]
            start = max(0, len(pep) - 3) if prompt_window == "last" else int(draws.integers(0, len(pep)))
            expected_p.append(window(pep, start, 3, spec))
    for batch, expected in ((history, expected_h), (prompt, expected_p)):
        for got, want in zip(batch, zip(*expected)):
            assert torch.equal(got, torch.as_tensor(np.stack(want)))
    assert (history.mask == 0).any()  # some windows were padded

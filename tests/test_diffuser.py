import gymnasium as gym
import numpy as np
import pytest
import torch

import promptrl
from promptrl.data.datasets import create_datasets
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT
from promptrl.wrappers import PromptWrapper

TINY_PLM = dict(embed_dim=16, n_layer=1, batch_per_task=4, warmup_steps=5, context=6)
TINY = dict(n_steps=8, hidden=32, batch_size=4, epochs=1, steps_per_epoch=3)


@pytest.fixture
def setup():
    suite = promptrl.load_suite("mw-reach")
    create_datasets(suite, "expert", tasks=[6, 9], episodes=1)
    data = [suite.dataset(t, "expert") for t in (6, 9)]
    plm = PromptDT(suite, seed=0, **TINY_PLM).learn(data, total_steps=2, progress_bar=False)
    return suite, data, plm


def test_learn_keeps_plm_frozen_and_trains_generator(setup):
    suite, data, plm = setup
    before = {k: v.clone() for k, v in plm.network.state_dict().items()}
    pd = PromptDiffuser(plm, suite.make_env(6), **TINY)
    gen_before = [p.clone() for p in pd.model.parameters()]
    values = []
    pd.learn(data, callback=values.append, progress_bar=False)
    assert len(values) == 3 and all(v["loss_dm"] > 0 and v["loss_dt"] > 0 for v in values)
    # the gradient statistics of every step: positive norms and a cosine in [-1, 1]
    assert all(v["grad_gen"] > 0 and v["grad_dt"] > 0 and -1 - 1e-6 <= v["grad_cos"] <= 1 + 1e-6 for v in values)
    dm_only = PromptDiffuser(plm, update="dm", **TINY)
    dm_only.learn(data, callback=values.append, progress_bar=False)
    assert "grad_cos" not in values[-1] and values[-1]["loss_dt"] == 0
    for k, v in plm.network.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(gen_before, pd.model.parameters()))
    assert (
        pd.num_parameters() == sum(p.numel() for p in pd.model.parameters())
        and pd.num_parameters() < plm.num_parameters()
    )


def test_downstream_loss_reaches_the_noise_model(setup):
    """L_DT (the frozen PLM's action loss with the generated prompt) has a gradient on every noise-model weight."""
    from promptrl.data.episodes import episodes_of
    from promptrl.data.windows import random_window, stack_windows

    suite, data, plm = setup
    pd = PromptDiffuser(plm, **TINY).learn(data, epochs=1, steps_per_epoch=1, progress_bar=False)
    rng = np.random.default_rng(0)
    episode = episodes_of(data[0])[0]
    history = stack_windows([random_window(episode, plm.settings.context, plm._segment_spec(), rng) for _ in range(2)])
    y = torch.tensor(next(iter(pd.settings.conditions.values()))[:1]).repeat(2, 1)  # one last window per episode
    x0 = pd.diffusion.sample(pd.model, y, pd.x_dim, torch.Generator().manual_seed(0), keep_grad=True)
    loss = plm.loss(history, pd._decode(x0, y))
    names, params = zip(*pd.model.named_parameters())
    grads = torch.autograd.grad(loss, params)
    assert [n for n, g in zip(names, grads) if g.abs().sum() == 0] == []
    assert not any(p.requires_grad for p in plm.network.parameters())


def test_bf16_plm_guidance_follows_float32(setup):
    """With the PLM under bf16 autocast, the guided steps see nearly the same L_DT and L_DT gradient."""
    suite, data, plm = setup
    runs = {}
    for bf16 in (False, True):
        values = []
        PromptDiffuser(plm, bf16_plm=bf16, seed=3, **TINY).learn(data, callback=values.append, progress_bar=False)
        runs[bf16] = values
    for a, b in zip(runs[False], runs[True]):
        assert a["loss_dm"] == pytest.approx(b["loss_dm"], rel=1e-3)  # the generative part stays float32
        assert a["loss_dt"] == pytest.approx(b["loss_dt"], rel=0.05) and a["loss_dt"] != b["loss_dt"]
        assert a["grad_dt"] == pytest.approx(b["grad_dt"], rel=0.1)
    with pytest.raises(ValueError, match="bf16_plm must be True or False"):
        PromptDiffuser(plm, bf16_plm="yes")


def test_generation_is_seeded_and_shaped(setup):
    suite, data, plm = setup
    a = PromptDiffuser(plm, seed=3, **TINY).learn(data, progress_bar=False)
    b = PromptDiffuser(plm, seed=3, **TINY).learn(data, progress_bar=False)
    pa, pb = a.generate_prompt(4), b.generate_prompt(4)
    assert len(pa) == 4 and pa[0]["states"].shape == (5, 39) and pa[0]["actions"].shape == (5, 4)
    for x, y in zip(pa, pb):
        for k in x:
            torch.testing.assert_close(x[k], y[k])
    zero_shot = a.generate_prompt(2, rtg=900.0)
    assert torch.allclose(zero_shot[0]["rtg"], torch.full((5, 1), 900.0))


def test_wrapper_regenerates_prompt_at_every_reset(setup):
    suite, data, plm = setup
    pd = PromptDiffuser(plm, **TINY).learn(data, progress_bar=False)
    env = PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=6), pd)
    first, _ = env.reset(seed=0)
    second, _ = env.reset()
    assert not np.allclose(first["prompt_states"], second["prompt_states"])
    action, _ = pd.predict(first)
    assert action.shape == (4,)


def test_save_load_roundtrip(setup, tmp_path):
    suite, data, plm = setup
    pd = PromptDiffuser(plm, seed=1, **TINY).learn(data, progress_bar=False)
    pd.save_pretrained(tmp_path / "pd")
    assert (tmp_path / "pd" / "plm" / "model.safetensors").is_file()
    loaded = PromptDiffuser.from_pretrained(tmp_path / "pd")
    pd._generator.manual_seed(7)
    loaded._generator.manual_seed(7)
    for x, y in zip(pd.generate_prompt(3), loaded.generate_prompt(3)):
        for k in x:
            torch.testing.assert_close(x[k], y[k])
    cold = PromptDiffuser.from_pretrained(tmp_path / "pd", temperature=0.0)
    assert cold.settings.temperature == 0.0 and loaded.settings.temperature == pd.settings.temperature
    with pytest.raises(TypeError, match="unknown arguments \\['temprature'\\]"):
        PromptDiffuser.from_pretrained(tmp_path / "pd", temprature=0.0)
    (tmp_path / "pd" / "plm" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="plm/model.safetensors not found"):
        PromptDiffuser.from_pretrained(tmp_path / "pd")


def test_folder_saved_before_the_residual_net_loads_as_saved(setup, tmp_path):
    """A config without ``residual`` (saved before the option existed) loads the plain MLP it was trained with."""
    import json

    suite, data, plm = setup
    pd = PromptDiffuser(plm, seed=1, residual=False, **TINY).learn(data, progress_bar=False)
    pd.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["residual"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = PromptDiffuser.from_pretrained(tmp_path / "old")
    assert loaded.settings.residual is False
    pd._generator.manual_seed(7)
    loaded._generator.manual_seed(7)
    torch.testing.assert_close(pd.generate_prompt(2)[0]["states"], loaded.generate_prompt(2)[0]["states"])
    assert PromptDiffuser(plm, **TINY).settings.residual is True


def test_bad_input(setup):
    suite, data, plm = setup
    with pytest.raises(ValueError, match="update must be one of"):
        PromptDiffuser(plm, update="mean")
    with pytest.raises(TypeError, match="unknown PromptDiffuser hyperparameters"):
        PromptDiffuser(plm, steps=3)
    with pytest.raises(ValueError, match="do not match the PLM"):
        PromptDiffuser(plm, gym.make("promptrl/CheetahVel-v0", task=2))
    with pytest.raises(RuntimeError, match="call learn"):
        PromptDiffuser(plm, **TINY).generate_prompt(1)
    vel = promptrl.load_suite("cheetah-vel")
    create_datasets(vel, "random", tasks=[2], episodes=1)
    with pytest.raises(ValueError, match="observations of size 17, the model expects 39"):
        PromptDiffuser(plm, **TINY).learn(vel.dataset(2, "random"), progress_bar=False)
    # a user's own Minari dataset with one NaN reward
    import minari
    from minari.data_collector import EpisodeBuffer

    ep = next(iter(data[0].iterate_episodes()))
    rewards = ep.rewards.astype(float)
    rewards[3] = np.nan
    buffer = EpisodeBuffer(
        id=0,
        observations=ep.observations,
        actions=ep.actions,
        rewards=list(rewards),
        terminations=list(ep.terminations),
        truncations=list(ep.truncations),
    )
    env = suite.make_env(6)
    bad = minari.create_dataset_from_buffers("user/reach-nan-v0", [buffer], env=env, algorithm_name="user")
    with pytest.raises(ValueError, match="'user/reach-nan-v0' episode 0 contains NaN"):
        PromptDiffuser(plm, **TINY).learn(bad, progress_bar=False)


def test_prompts_are_conditioned_on_their_own_task(setup):
    """Conditions are kept per task (the dataset's own task index); wrappers pass their env's task."""
    suite, data, plm = setup
    pd = PromptDiffuser(plm, **TINY).learn(data, progress_bar=False)
    assert sorted(pd.settings.conditions) == ["6", "9"]
    k = plm.settings.prompt_length
    for task in (6, 9):
        bank = {round(row[0] * plm.settings.rtg_scale, 3) for row in pd.settings.conditions[str(task)]}
        prompts = pd.generate_prompt(4, task=task)
        assert all(round(float(p["rtg"][0, 0]), 3) in bank for p in prompts)
        assert all(p["rtg"].shape == (k, 1) for p in prompts)
    env = PromptWrapper(suite.make_env(9), pd)
    obs, _ = env.reset(seed=0)
    bank9 = {round(row[0] * plm.settings.rtg_scale, 3) for row in pd.settings.conditions["9"]}
    assert round(float(obs["prompt_rtg"][0, 0]), 3) in bank9
    with pytest.raises(ValueError, match=r"task=\[0\]: no few-shot data .*learned tasks: \[6, 9\]"):
        pd.generate_prompt(1, task=0)
    pd.zero_shot = True  # a task never learned: conditions of every learned task
    every = {round(row[0] * plm.settings.rtg_scale, 3) for t in ("6", "9") for row in pd.settings.conditions[t]}
    assert all(round(float(p["rtg"][0, 0]), 3) in every for p in pd.generate_prompt(4, task=0))
    with pytest.raises(ValueError, match="task"):
        pd.generate_prompt(3, task=[6, 9])


def test_condition_bank_is_capped_per_task(setup):
    """config.json keeps at most max_conditions conditions per task (a seeded subset)."""
    suite, data, _ = setup
    plm = PromptDT(suite, seed=0, prompt_window="random", **TINY_PLM).learn(data, total_steps=2, progress_bar=False)
    a = PromptDiffuser(plm, max_conditions=7, **TINY).learn(data, progress_bar=False)
    b = PromptDiffuser(plm, max_conditions=7, **TINY).learn(data, progress_bar=False)
    assert all(len(rows) == 7 for rows in a.settings.conditions.values())
    assert a.settings.conditions == b.settings.conditions


def test_pretrain_generator_saves_fine_tuning_settings_and_resumes(setup, tmp_path):
    """Pre-training runs PRETRAIN_RECIPE (L_DM, lr 1e-3, batch 64) but saves Table 4's fine-tuning
    settings; a rerun with more steps continues from the saved generator, one with as many does nothing."""
    from promptrl.methods.diffuser import pretrain_generator

    suite, data, plm = setup
    folder = tmp_path / "pretrained"
    seen = []
    pd = pretrain_generator(
        plm,
        data,
        folder,
        3,
        save_steps=2,
        progress_bar=False,
        n_steps=8,
        hidden=32,
        model_card=lambda g: seen.append((g.settings.steps_trained, g.settings.update)) or "card",
    )
    assert seen == [(2, "projection"), (3, "projection")]  # saved twice, each with the fine-tuning rule
    saved = PromptDiffuser.from_pretrained(folder, plm=plm)
    assert (
        saved.settings.steps_trained,
        saved.settings.update,
        saved.settings.learning_rate,
        saved.settings.batch_size,
    ) == (3, "projection", 1e-4, 32)
    assert saved.settings.model_card == {"training": "card"} and pd.settings.hidden == 32
    assert pretrain_generator(plm, data, folder, 5, progress_bar=False).settings.steps_trained == 5
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert pretrain_generator(plm, data, folder, 5, progress_bar=False).settings.steps_trained == 5
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        pretrain_generator(plm, data, folder, 0)


def test_last_window_plm_gets_last_window_prompts(setup):
    """With a PLM trained on episodes' last windows (prompt_window="last", the default), the generator's
    training prompts and conditions, and every method's prompt bank, are those last windows."""
    from promptrl.data.episodes import episodes_of
    from promptrl.data.windows import raw_window
    from promptrl.methods.base import PromptBank

    suite, data, plm = setup
    assert plm.settings.prompt_window == "last"
    episodes = {t: episodes_of(d, 39, 4) for t, d in zip((6, 9), data)}
    last = {t: raw_window(eps[0], len(eps[0]) - 5, 5) for t, eps in episodes.items()}
    pd = PromptDiffuser(plm, **TINY).learn(data, progress_bar=False)
    for t in (6, 9):
        assert np.allclose(pd.settings.conditions[str(t)], pd.encode([last[t]])[1].numpy(), atol=1e-5)
    x0, _, _ = pd._sample_batch()
    allowed = pd.encode(list(last.values()))[0]
    assert torch.cdist(x0, allowed).min(1).values.max() < 1e-5
    bank = PromptBank(39, 4, 5, last=True)
    bank.fill(episodes, 1000, np.random.default_rng(0))
    horizon = len(episodes[6][0])
    assert len(bank) == 2 and bank.timesteps[:, -1].tolist() == [horizon - 1, horizon - 1]


def _assert_same_prompts(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            torch.testing.assert_close(x[k], y[k])


def test_task_generators_serve_their_tasks_and_round_trip(setup, tmp_path):
    """One generator per task (as Table 1 fine-tunes them) behind one model: each task's prompts are
    exactly those of its own generator, in any mix; a task none of them holds is an error."""
    suite, data, plm = setup
    own = PromptDiffuser(plm, seed=1, **TINY).learn(data[:1], progress_bar=False)  # task 6
    other = PromptDiffuser(plm, seed=2, **TINY).learn(data[1:], progress_bar=False)  # task 9
    own.add_task_generator(9, other)
    assert own.served_tasks() == [6, 9] and own.own_tasks() == [6]
    g = torch.Generator().manual_seed(3)
    _assert_same_prompts(
        own.generate_prompt(2, task=9, generator=g),
        other.generate_prompt(2, task=9, generator=torch.Generator().manual_seed(3)),
    )
    mixed = own.generate_prompt(3, task=[9, 6, 9], generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    nines = other.generate_prompt(2, task=9, generator=g)  # groups in the order of first appearance
    six = own.generate_prompt(1, task=6, generator=g)
    _assert_same_prompts(mixed, [nines[0], six[0], nines[1]])
    with pytest.raises(ValueError, match=r"task=\[0\].*tasks \[6, 9\] only"):
        own.generate_prompt(1, task=0)
    own.zero_shot = True  # task 0 from this generator's own conditions (task 6), task 9 still from its generator
    zero = own.generate_prompt(2, task=[0, 9], generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    _assert_same_prompts(
        zero, [own.generate_prompt(1, task=6, generator=g)[0], other.generate_prompt(1, task=9, generator=g)[0]]
    )
    own.zero_shot = False

    own.save_pretrained(tmp_path / "pd")
    assert (tmp_path / "pd" / "tasks" / "9" / "model.safetensors").is_file()
    assert not (tmp_path / "pd" / "tasks" / "9" / "plm").exists()  # the PLM is saved once
    loaded = PromptDiffuser.from_pretrained(tmp_path / "pd", temperature=0.0)
    assert loaded.served_tasks() == [6, 9] and loaded.task_generators[9].plm is loaded.plm
    assert loaded.task_generators[9].settings.temperature == 0.0  # overrides reach the task generators
    loaded = PromptDiffuser.from_pretrained(tmp_path / "pd")
    loaded.set_random_seed(5)
    other.set_random_seed(5)
    _assert_same_prompts(loaded.generate_prompt(2, task=9), other.generate_prompt(2, task=9))
    env = PromptWrapper(suite.make_env(9), loaded)  # wrappers pass their env's task
    obs, _ = env.reset(seed=0)
    bank9 = {round(row[0] * plm.settings.rtg_scale, 3) for row in other.settings.conditions["9"]}
    assert round(float(obs["prompt_rtg"][0, 0]), 3) in bank9

    del loaded.task_generators[9]  # saving over the folder drops generators the model no longer holds
    loaded.save_pretrained(tmp_path / "pd")
    assert not (tmp_path / "pd" / "tasks" / "9").exists()


def test_task_generators_bad_input(setup, tmp_path):
    suite, data, plm = setup
    own = PromptDiffuser(plm, seed=1, **TINY).learn(data[:1], progress_bar=False)
    other = PromptDiffuser(plm, seed=2, **TINY).learn(data[1:], progress_bar=False)
    with pytest.raises(ValueError, match="task=6: the generator learned tasks \\[9\\]"):
        own.add_task_generator(6, other)
    with pytest.raises(TypeError, match="generator must be a PromptDiffuser"):
        own.add_task_generator(9, plm)
    copy = PromptDT.from_pretrained(_saved(plm, tmp_path / "plm"))
    with pytest.raises(ValueError, match="same PLM object"):
        own.add_task_generator(9, PromptDiffuser(copy, seed=2, **TINY).learn(data[1:], progress_bar=False))
    own.add_task_generator(9, other)
    own.save_pretrained(tmp_path / "pd")
    (tmp_path / "pd" / "tasks" / "9").rename(tmp_path / "pd" / "tasks" / "nine")
    with pytest.raises(ValueError, match="tasks/nine in .*named by its task index"):
        PromptDiffuser.from_pretrained(tmp_path / "pd")
    (tmp_path / "pd" / "tasks" / "nine").rename(tmp_path / "pd" / "tasks" / "7")
    with pytest.raises(ValueError, match=r"tasks/7 in .*task=7: the generator learned tasks \[9\]"):
        PromptDiffuser.from_pretrained(tmp_path / "pd")


def _saved(plm, folder):
    plm.save_pretrained(folder)
    return folder

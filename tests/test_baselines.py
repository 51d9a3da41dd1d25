import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import promptrl
from promptrl.data.datasets import create_datasets
from promptrl.data.episodes import as_task_episodes
from promptrl.data.windows import SegmentSampler
from promptrl.evaluation import evaluate
from promptrl.methods.baselines.adaptor import Adaptor
from promptrl.methods.baselines.finetune import FineTune
from promptrl.methods.baselines.fixed import MTORL, FixedPrompt
from promptrl.methods.baselines.prompt_tuning import PromptTuningDT
from promptrl.methods.baselines.soft_prompt import SoftPrompt
from promptrl.methods.baselines.vae import VAEPromptGenerator
from promptrl.methods.plm import PromptDT
from promptrl.suites import TaskSuite
from promptrl.wrappers import PromptWrapper, VectorPromptWrapper

E, LAYERS, K_STAR, OBS, ACT = 16, 2, 5, 39, 4
TINY_PLM = dict(embed_dim=E, n_layer=LAYERS, batch_per_task=8, warmup_steps=5, context=6, learning_rate=1e-3)
TRAIN = dict(batch_size=8, epochs=1, steps_per_epoch=3)
TINY_VAE = dict(hidden=32, n_hidden=1, **TRAIN)
# Every method with small settings; the one-task methods learn task 6 only.
METHODS = {
    "fixed": (FixedPrompt, {}),
    "soft": (SoftPrompt, TRAIN),
    "adaptor": (Adaptor, TRAIN),
    "prompt_tuning": (PromptTuningDT, TRAIN),
    "finetune": (FineTune, TRAIN),
    "vae": (VAEPromptGenerator, TINY_VAE),
}
ONE_TASK = {"soft", "prompt_tuning"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Datasets of mw-reach tasks 6 and 9 (one expert episode each) and tiny PLMs, made once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        suite = promptrl.load_suite("mw-reach")
        create_datasets(suite, "expert", tasks=[6, 9], episodes=1)
        data = {t: suite.dataset(t, "expert") for t in (6, 9)}
        plm = PromptDT(suite, seed=0, **TINY_PLM).learn(list(data.values()), total_steps=30, progress_bar=False)
        mt_orl = PromptDT(suite, seed=0, use_prompt=False, **TINY_PLM).learn(
            list(data.values()), total_steps=2, progress_bar=False
        )
    return suite, data, plm, mt_orl


def make(name, plm, data, **extra):
    cls, kw = METHODS[name]
    method = cls(plm, **{**kw, **extra})
    return method.learn(data[6] if name in ONE_TASK else list(data.values()), progress_bar=False)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def fixed_batch(plm, dataset, n=48):
    episodes = as_task_episodes(dataset, OBS, ACT, "data")
    return SegmentSampler(episodes, episodes, plm._segment_spec(), seed=123).sample(n)


def wrapper_obs(method, task=6, steps=2):
    env = PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=task), method, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        obs, *_ = env.step(method.predict(obs)[0])
    return obs


@pytest.mark.parametrize("name", list(METHODS))
def test_trains_only_its_own_parameters(world, name):
    suite, data, plm, _ = world
    frozen = snapshot(plm.network)
    flags = [q.requires_grad for q in plm.network.parameters()]
    cls, kw = METHODS[name]
    method = cls(plm, **kw)
    tuned = [q.detach().clone() for q in method._tuned_parameters()]
    method.learn(data[6] if name in ONE_TASK else list(data.values()), progress_bar=False)
    assert_same(snapshot(plm.network), frozen)
    after = method._tuned_parameters()
    if name == "fixed":
        assert after == [] and method.num_parameters() == 0
    else:
        assert any(not torch.equal(a, b) for a, b in zip(tuned, after))
    if name == "finetune":  # the user's PLM object is untouched, flags included; the copy trained
        assert [q.requires_grad for q in plm.network.parameters()] == flags
        assert method.plm is not plm and method.plm.network is not plm.network
        assert any(not torch.equal(v, frozen[k]) for k, v in method.plm.network.state_dict().items())


@pytest.mark.parametrize("name", ["soft", "adaptor", "prompt_tuning", "finetune"])
def test_predict_shortcut_equals_full_forward(world, name):
    """predict's last-token forward gives each adapted model's full-forward action (the Adaptor's hooks included)."""
    suite, data, plm, _ = world
    method = make(name, plm, data)
    method._state_module().eval()
    method.plm.network.eval()
    history, prompt = fixed_batch(plm, data[6], n=8)
    with torch.no_grad():
        torch.testing.assert_close(
            method._forward(history, prompt, last_only=True), method._forward(history, prompt)[:, -1:]
        )


def test_parameter_counts_equal_hand_counts(world):
    suite, data, plm, mt_orl = world
    total = plm.num_parameters()
    hidden = 16
    per_block = (E * hidden + hidden) + (hidden * E + E) + 2 * E  # down, up, FiLM scale and shift
    x_dim, y_dim, latent = K_STAR * (OBS + ACT + 1), 2 * K_STAR, 32
    vae = ((x_dim + y_dim) * 32 + 32 + 32 * 2 * latent + 2 * latent) + ((latent + y_dim) * 32 + 32 + 32 * x_dim + x_dim)
    expected = {
        "fixed": 0,
        "soft": 3 * K_STAR * E,
        "adaptor": LAYERS * per_block,
        "prompt_tuning": K_STAR * (OBS + ACT + 1),
        "finetune": total,
        "vae": vae,
    }
    for name, count in expected.items():
        cls, kw = METHODS[name]
        method = cls(plm, **kw)
        assert method.num_parameters() == count, name
        assert method.percentage() == pytest.approx(100 * count / total), name
    assert MTORL(mt_orl).num_parameters() == 0 and FineTune(plm).percentage() == 100


@pytest.mark.parametrize("name,lr", [("soft", 3e-2), ("adaptor", 1e-2), ("finetune", 3e-3), ("prompt_tuning", 0.05)])
def test_learning_lowers_the_loss_on_held_out_windows(world, name, lr):
    """The adapted model's action loss on a fixed batch of windows drops (for the black-box
    Prompt-Tuning DT: the score, minus that loss, of its prompt improves)."""
    suite, data, plm, _ = world
    history, prompt = fixed_batch(plm, data[6])
    cls, kw = METHODS[name]
    method = cls(plm, **{**kw, "learning_rate": lr})
    method.learn(data[6], epochs=1, steps_per_epoch=1, progress_bar=False)
    before = method.loss(history, prompt).item()
    method.learn(data[6], epochs=2, steps_per_epoch=15, progress_bar=False)
    assert method.loss(history, prompt).item() < before
    assert method.settings.steps_trained == 31


def test_vae_learns_its_elbo_and_reaches_the_decoder(world):
    suite, data, plm, _ = world
    values = []
    vae = VAEPromptGenerator(plm, **{**TINY_VAE, "learning_rate": 3e-3, "batch_size": 16})
    vae.learn(list(data.values()), epochs=2, steps_per_epoch=20, callback=values.append, progress_bar=False)
    elbo = [v["loss_elbo"] for v in values]
    assert np.mean(elbo[-5:]) < np.mean(elbo[:5]) and all(v["loss_dt"] > 0 for v in values)
    # L_DT reaches every decoder weight and no encoder weight (prompts are decoded from prior samples).
    history, _ = fixed_batch(plm, data[6], n=4)
    y = torch.tensor(vae.settings.conditions["6"][:1]).repeat(4, 1)  # one last window per episode
    loss = vae.loss(history, vae._decode(vae._sample_x0(y, temperature=1.0, keep_grad=True), y))
    names, params = zip(*vae.model.named_parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for n, g in zip(names, grads) if n.startswith("decoder"))
    assert all(g is None for n, g in zip(names, grads) if n.startswith("encoder"))
    only_elbo = VAEPromptGenerator(plm, update="dm", **TINY_VAE)
    only_elbo.learn(list(data.values()), callback=values.append, progress_bar=False)
    assert values[-1]["loss_dt"] == 0


def test_adaptor_starts_as_the_plm_and_leaves_it_alone(world):
    suite, data, plm, _ = world
    history, prompt = fixed_batch(plm, data[9])
    adaptor = Adaptor(plm, **TRAIN)
    torch.testing.assert_close(adaptor.loss(history, prompt), plm.loss(history, prompt), rtol=0, atol=0)
    adaptor.learn(list(data.values()), progress_bar=False)
    obs = wrapper_obs(adaptor)
    np.testing.assert_array_equal(plm.predict(obs)[0], PromptDT.predict(plm, obs)[0])  # no hook left on the PLM
    assert not any(block._forward_hooks for block in plm.network.blocks)
    assert not np.allclose(adaptor.predict(obs)[0], plm.predict(obs)[0])


@pytest.mark.parametrize("name", ["soft", "prompt_tuning"])
def test_tuned_prompts_start_from_a_real_prompt(world, name):
    """With a negligible step the soft prompt (embedded tokens) and the tuned raw prompt act as the
    real prompt window they were initialized from, which generate_prompt returns."""
    suite, data, plm, _ = world
    cls, kw = METHODS[name]
    method = cls(plm, **{**kw, "learning_rate": 1e-12}).learn(data[6], epochs=1, steps_per_epoch=1, progress_bar=False)
    obs = wrapper_obs(method)
    np.testing.assert_allclose(method.predict(obs)[0], plm.predict(obs)[0], atol=1e-5)
    other = {**obs, "prompt_states": obs["prompt_states"] + 3.0}  # the observation's prompt is not used
    np.testing.assert_array_equal(method.predict(other)[0], method.predict(obs)[0])


@pytest.mark.parametrize("name", list(METHODS))
def test_save_load_roundtrip(world, name, tmp_path):
    suite, data, plm, _ = world
    method = make(name, plm, data, seed=2)
    method.save_pretrained(tmp_path / name)
    files = {p.name for p in (tmp_path / name).iterdir()}
    assert {"config.json", "model.safetensors", "plm"} <= files
    loaded = type(method).from_pretrained(tmp_path / name)
    assert loaded.settings == method.settings
    obs = wrapper_obs(method)
    np.testing.assert_array_equal(loaded.predict(obs)[0], method.predict(obs)[0])
    for m in (method, loaded):
        m._generator.manual_seed(7)
    for a, b in zip(method.generate_prompt(3, task=6), loaded.generate_prompt(3, task=6)):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    reused = type(method).from_pretrained(tmp_path / name, plm=plm)  # the PLM passed in instead of plm/
    np.testing.assert_array_equal(reused.predict(obs)[0], method.predict(obs)[0])
    if name == "finetune":  # plm/ holds the pre-trained PLM, model.safetensors the fine-tuned copy
        assert_same(snapshot(PromptDT.from_pretrained(tmp_path / name / "plm").network), snapshot(plm.network))


def test_bad_checkpoints(world, tmp_path):
    suite, data, plm, _ = world
    folder = tmp_path / "adaptor"
    make("adaptor", plm, data).save_pretrained(folder)
    (folder / "config.json").write_text('{"hidden": 8}')  # adaptors of another width
    with pytest.raises(ValueError, match="does not match its config.json"):
        Adaptor.from_pretrained(folder)
    (folder / "config.json").write_text('{"rank": 4}')
    with pytest.raises(ValueError, match="not a Adaptor config"):
        Adaptor.from_pretrained(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt config.json"):
        Adaptor.from_pretrained(folder)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="model.safetensors in .* is corrupt"):
        Adaptor.from_pretrained(folder)
    (folder / "plm" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="plm/model.safetensors not found"):
        Adaptor.from_pretrained(folder)


def test_missing_folder_names_the_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no hub_models/ here; local_files_only keeps the Hub lookup offline
    for cls, name in (
        (promptrl.PromptDiffuser, "hub_models/no-such-suite"),
        (PromptDT, "hub_models/cheetah-vel/no-such"),
        (PromptDT, "my-models/plm"),
    ):
        with pytest.raises(
            FileNotFoundError,
            match=f"pretrained_model_name_or_path='{name}'.*not a folder.*nor a shipped model"
            ".*shipped models: .*hub_models/cheetah-vel/plm",
        ):
            cls.from_pretrained(name, local_files_only=True)


class ShortSuite(TaskSuite):
    """mw-reach with 3-step episodes and one test task, for quick evaluations."""

    def make_env(self, task, **kwargs):
        return super().make_env(task, max_episode_steps=3, **kwargs)


@pytest.mark.parametrize("name", list(METHODS))
def test_evaluate_and_vector_wrapper_use_the_method(world, name):
    suite, data, plm, _ = world
    method = make(name, plm, data)
    short = ShortSuite(dataclasses.replace(suite.spec, test_tasks=[6]))
    method.set_random_seed(1)
    result = evaluate(method, short, n_episodes=2, prompt=None, seed=0)
    assert list(result.returns) == [6] and len(result.returns[6]) == 2
    method.set_random_seed(1)  # a generator's prompt draws come from its own random state
    assert evaluate(method, short, n_episodes=2, seed=0).returns == result.returns  # default: the method's own prompts
    assert all(math.isfinite(r) for r in result.returns[6])
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("promptrl/MetaWorldReach-v0", task=6)] * 2)
    venv = VectorPromptWrapper(vec, method)
    obs, _ = venv.reset(seed=[0, 1])
    assert venv.observation_space.contains(obs) and obs["prompt_states"].shape == (2, K_STAR, OBS)
    actions, state = method.predict(obs)
    assert actions.shape == (2, ACT) and state is None and np.all(np.abs(actions) <= 1)
    obs, reward, terminated, truncated, _ = venv.step(actions)
    assert venv.observation_space.contains(obs) and reward.shape == (2,) and np.isfinite(reward).all()
    assert not (terminated | truncated).any()


def test_mt_orl_fits_the_same_interface(world, tmp_path):
    suite, data, plm, mt_orl = world
    method = MTORL(mt_orl).learn(list(data.values()))
    assert method.num_parameters() == 0 and method.generate_prompt(2) == [{}, {}]
    obs = wrapper_obs(method)
    assert "prompt_states" not in obs
    np.testing.assert_array_equal(method.predict(obs)[0], mt_orl.predict(obs)[0])
    short = ShortSuite(dataclasses.replace(suite.spec, test_tasks=[6]))
    returns = evaluate(method, short, n_episodes=1, prompt=None, seed=0).returns
    # the same episode run by hand: evaluate seeds its one env with the first seed of SeedSequence(0)
    env = PromptWrapper(short.make_env(6), method)
    obs, _ = env.reset(seed=int(np.random.SeedSequence(0).generate_state(1)[0]))
    by_hand, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(method.predict(obs, deterministic=True)[0])
        by_hand, done = by_hand + float(reward), terminated or truncated
    assert list(returns) == [6] and returns[6] == [pytest.approx(by_hand, abs=1e-4)]
    method.save_pretrained(tmp_path / "mt")
    np.testing.assert_array_equal(MTORL.from_pretrained(tmp_path / "mt").predict(obs)[0], method.predict(obs)[0])


def test_fixed_prompt_serves_windows_of_the_requested_task(world):
    suite, data, plm, _ = world
    method = FixedPrompt(plm, seed=1).learn(data)
    windows = {t: method.bank.states[method.bank.task == t] for t in (6, 9)}
    for task in (6, 9):
        for prompt in method.generate_prompt(4, task=task):
            assert (windows[task] == prompt["states"]).all(-1).all(-1).any()
    with pytest.raises(ValueError, match=r"task=\[0\]: no few-shot data .*learned tasks: \[6, 9\]"):
        method.generate_prompt(1, task=0)
    method.zero_shot = True  # a task never learned: windows of every learned task
    every = torch.cat([windows[6], windows[9]])
    for prompt in method.generate_prompt(4, task=0):
        assert (every == prompt["states"]).all(-1).all(-1).any()
    # Prompt-DT-Random from an env of the task: its "random" dataset is the prompt source.
    create_datasets(suite, "random", tasks=[6], episodes=1)
    random = FixedPrompt(plm, suite.make_env(6), quality="random").learn()
    episode = as_task_episodes(suite.dataset(6, "random"), OBS, ACT, "data")[6][0]
    assert np.isin(random.generate_prompt(1)[0]["actions"].numpy(), episode.actions).all()


def test_same_seed_same_result(world):
    suite, data, plm, _ = world
    a, b = (make("adaptor", plm, data, seed=5) for _ in range(2))
    assert_same(snapshot(a.module), snapshot(b.module))
    c = make("adaptor", plm, data, seed=6)
    assert not torch.equal(snapshot(a.module)["adaptors.0.down.weight"], snapshot(c.module)["adaptors.0.down.weight"])


def test_bad_input(world):
    suite, data, plm, mt_orl = world
    with pytest.raises(TypeError, match=r"unknown Adaptor hyperparameters \['rank'\]"):
        Adaptor(plm, rank=4)
    with pytest.raises(ValueError, match=r"hidden must be an integer >= 1 and <= 65536, got 0"):
        Adaptor(plm, hidden=0)
    with pytest.raises(ValueError, match="learning_rate must be a number > 0"):
        SoftPrompt(plm, learning_rate=-1.0)
    with pytest.raises(ValueError, match="betas must be two numbers"):
        FineTune(plm, betas=(0.9,))
    with pytest.raises(ValueError, match="population must be an integer > 1"):
        PromptTuningDT(plm, population=1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        PromptTuningDT(plm, optimizer="rmsprop")
    with pytest.raises(ValueError, match="quality must be one of"):
        FixedPrompt(plm, quality="great")
    with pytest.raises(ValueError, match="update must be one of"):
        VAEPromptGenerator(plm, update="mean")
    with pytest.raises(TypeError, match="plm must be a PromptDT"):
        SoftPrompt("cheetah-vel")
    with pytest.raises(ValueError, match="trained without prompts"):
        SoftPrompt(mt_orl)
    with pytest.raises(ValueError, match="is for a PLM trained without prompts"):
        MTORL(plm)
    with pytest.raises(ValueError, match="do not match the PLM"):
        Adaptor(plm, gym.make("promptrl/CheetahVel-v0", task=2))
    with pytest.raises(ValueError, match="one prompt for one task"):
        SoftPrompt(plm, **TRAIN).learn(list(data.values()), progress_bar=False)
    with pytest.raises(ValueError, match="was tuned for task 6"):
        make("prompt_tuning", plm, data).learn(data[9], progress_bar=False)
    with pytest.raises(ValueError, match="epochs must be an integer > 0"):
        Adaptor(plm).learn(data[6], epochs=0)
    with pytest.raises(TypeError, match="few_shot_data must be a MinariDataset"):
        Adaptor(plm).learn("task-6")
    with pytest.raises(TypeError, match="callback must be callable"):
        Adaptor(plm).learn(data[6], callback=3)
    with pytest.raises(ValueError, match="needs few_shot_data or prompt_data"):
        FixedPrompt(plm).learn()
    with pytest.raises(RuntimeError, match="call learn"):
        Adaptor(plm).generate_prompt(1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        make("fixed", plm, data).generate_prompt(0)
    with pytest.raises(RuntimeError, match="no state statistics"):
        Adaptor(PromptDT(suite, **TINY_PLM)).learn(data[6])
    with pytest.raises(ValueError, match=r"prompt_tokens must have shape \(2, 3K\*, 16\)"):
        history, _ = fixed_batch(plm, data[6], n=2)
        plm.network(history, prompt_tokens=torch.zeros(2, 15, 8))

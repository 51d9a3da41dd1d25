"""Seeded resets: ``reset(seed=s)`` repeats the whole observation, prompt included, for every model kind,
as Gymnasium's ``check_env`` requires, and leaves the model's own random state alone."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import promptrl
from promptrl.data.datasets import create_datasets
from promptrl.methods.baselines.fixed import MTORL, FixedPrompt
from promptrl.methods.baselines.prompt_tuning import PromptTuningDT
from promptrl.methods.baselines.vae import VAEPromptGenerator
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT
from promptrl.wrappers import PromptWrapper, VectorPromptWrapper, prompt_draws

HUB = "hub_models/mw-reach"
TINY_PLM = dict(embed_dim=16, n_layer=1, batch_per_task=4, warmup_steps=5, context=6)
TASK = 6  # the shipped generator's task
PROMPT_KEYS = ("prompt_states", "prompt_actions", "prompt_rtg", "prompt_timesteps", "prompt_mask")
KINDS = ["diffuser", "vae", "fixed", "prompt_tuning", "mt_orl", "plm_expert"]
DRAWING = ["diffuser", "vae", "fixed"]  # the kinds whose prompts are random draws of the model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Every model kind, on the shipped mw-reach PLM and one expert episode of task 6 (made once)."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        suite = promptrl.load_suite("mw-reach")
        create_datasets(suite, "expert", tasks=[TASK], episodes=1)
        data = suite.dataset(TASK, "expert")
        plm = PromptDT.from_pretrained(f"{HUB}/plm")
        # windows from anywhere in the episode, so that the baselines' prompt banks hold many
        anywhere = PromptDT(suite, seed=0, prompt_window="random", **TINY_PLM).learn(
            data, total_steps=2, progress_bar=False
        )
        tiny = dict(batch_size=4, total_steps=2, progress_bar=False)
        made = {
            "diffuser": (PromptDiffuser.from_pretrained(HUB), None),
            "vae": (
                VAEPromptGenerator(plm, hidden=16, n_hidden=1, batch_size=4).learn(
                    data, total_steps=2, progress_bar=False
                ),
                None,
            ),
            "fixed": (FixedPrompt(anywhere).learn(data), None),
            "prompt_tuning": (
                PromptTuningDT(anywhere, batch_size=4).learn(data, total_steps=tiny["total_steps"], progress_bar=False),
                None,
            ),
            "mt_orl": (MTORL(PromptDT.from_pretrained(f"{HUB}/mt-orl")), None),
            "plm_expert": (plm, "expert"),
        }
        yield suite, made, root


@pytest.fixture(autouse=True)
def shared_datasets(minari_root, models, monkeypatch):
    """The module's datasets, for prompt="expert" (read at every reset)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(models[2]))


def wrapped(models, kind, **env_kwargs):
    model, prompt = models[1][kind]
    return PromptWrapper(gym.make("promptrl/MetaWorldReach-v0", task=TASK, **env_kwargs), model, prompt=prompt)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def prompts_differ(a, b) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in PROMPT_KEYS)


@pytest.mark.parametrize("kind", KINDS)
def test_gymnasium_check_env_passes(models, kind):
    env = wrapped(models, kind)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert ("prompt_states" in obs) == (kind != "mt_orl")
    assert env.spec.make().model is env.model  # the spec shares the model, it does not copy it


@pytest.mark.parametrize("kind", DRAWING)
def test_seeded_reset_repeats_the_prompt_and_leaves_the_model_state(models, kind):
    env = wrapped(models, kind)
    model = env.model
    untouched = copy.deepcopy(model)
    first, _ = env.reset()  # before any seeded reset: the model's own draws
    second, _ = env.reset()
    assert prompts_differ(first, second)
    for obs in (first, second):
        expected = untouched.generate_prompt(1, task=[TASK])[0]
        np.testing.assert_array_equal(obs["prompt_states"], expected["states"].numpy())
    state = model._generator.get_state()
    a, _ = env.reset(seed=3)
    a_next, _ = env.reset()
    b, _ = env.reset(seed=3)
    b_next, _ = env.reset()
    assert_same(a, b)
    assert_same(a_next, b_next)  # unseeded resets after a seeded one repeat as well
    assert prompts_differ(a, a_next)  # ... and still draw a fresh prompt
    assert prompts_differ(a, env.reset(seed=4)[0])
    assert torch.equal(model._generator.get_state(), state)
    after = model.generate_prompt(2, task=TASK)
    for got, want in zip(after, untouched.generate_prompt(2, task=TASK)):
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


@pytest.mark.parametrize("kind", DRAWING)
def test_generate_prompt_draws_from_a_given_generator(models, kind):
    model = models[1][kind][0]
    state = model._generator.get_state()
    one = model.generate_prompt(2, task=TASK, generator=torch.Generator().manual_seed(5))
    two = model.generate_prompt(2, task=TASK, generator=torch.Generator().manual_seed(5))
    other = model.generate_prompt(2, task=TASK, generator=torch.Generator().manual_seed(6))
    assert torch.equal(model._generator.get_state(), state)
    for k in one[0]:
        assert all(torch.equal(p[k], q[k]) for p, q in zip(one, two))
    assert any(not torch.equal(p["states"], q["states"]) for p, q in zip(one, other))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        model.generate_prompt(1, generator=5)


@pytest.mark.parametrize("kind", ["diffuser", "fixed", "plm_expert"])
def test_vector_wrapper_seeds_every_sub_env_as_a_single_wrapper(models, kind):
    model, prompt = models[1][kind]
    state = getattr(model, "_generator", torch.Generator()).get_state()

    def env():
        return gym.make("promptrl/MetaWorldReach-v0", task=TASK, max_episode_steps=2)

    venv = VectorPromptWrapper(gym.vector.SyncVectorEnv([env, env]), model, prompt=prompt)
    singles = [PromptWrapper(env(), model, prompt=prompt) for _ in range(2)]

    def run(seed, single_seeds):
        """The vector env's prompts over its reset and two autoresets, checked against single wrappers."""
        obs, _ = venv.reset(seed=seed)
        single = [w.reset(seed=s)[0] for w, s in zip(singles, single_seeds)]
        seen = []
        for step in range(7):  # 2-step episodes, NEXT_STEP autoreset: observations 3 and 6 are restarts
            if step in (3, 6):
                single = [w.reset()[0] for w in singles]
            for i in range(2):
                for k in PROMPT_KEYS:
                    np.testing.assert_array_equal(obs[k][i], single[i][k], err_msg=f"env {i} step {step} {k}")
            seen.append(obs["prompt_states"].copy())
            actions = np.zeros((2, 4), np.float32)
            obs, *_ = venv.step(actions)
            if step not in (2, 5):
                single = [w.step(a)[0] for w, a in zip(singles, actions)]
        return seen

    first = run(5, [5, 6])  # an int seeds sub-env i with seed + i, as gymnasium.vector does
    assert all(np.array_equal(x, y) for x, y in zip(first, run(5, [5, 6])))
    swapped = run([6, 5], [6, 5])
    np.testing.assert_array_equal(swapped[0][0], first[0][1])
    if kind != "plm_expert":  # one expert episode may repeat a window; generated prompts do not
        assert not np.array_equal(first[0], first[3])  # autoresets draw fresh prompts
        assert torch.equal(model._generator.get_state(), state)


def test_prompt_draws_depend_on_the_seed_only():
    a, b = prompt_draws(3), prompt_draws(3)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=prompt_draws(4)), torch.rand(4, generator=prompt_draws(3)))

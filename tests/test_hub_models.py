"""Every shipped folder under hub_models/ loads on its own and acts in its suite's env."""

from pathlib import Path

import numpy as np
import pytest
import torch

import promptrl
from promptrl import PromptDiffuser, PromptDT, PromptWrapper
from promptrl.experiments.reproduce import TABLE1_SUITES

HUB = Path(__file__).resolve().parent.parent / "hub_models"
SUITES = sorted(p.name for p in HUB.iterdir() if (p / "config.json").is_file()) if HUB.is_dir() else []


def test_every_suite_is_shipped():
    assert set(promptrl.available_suites()) == set(SUITES)


def _one_step(model, suite, task, prompt=None):
    env = PromptWrapper(suite.make_env(task), model, prompt=prompt)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and np.isfinite(action).all()
    assert np.all(np.abs(action) <= 1)
    env.step(action)


@pytest.mark.parametrize("name", SUITES)
def test_shipped_folder_loads_and_acts(name):
    folder = HUB / name
    suite = promptrl.load_suite(name)
    task = suite.test_tasks[0]
    pd = PromptDiffuser.from_pretrained(folder)
    assert pd.plm.settings.suite == name and pd.settings.conditions
    assert str(task) in pd.settings.conditions, "the shipped generator is fine-tuned on the first test task"
    _one_step(pd, suite, task)
    card = (folder / "README.md").read_text()
    assert card.startswith("---") and "## Results" in card and "No measured results" not in card
    plm = PromptDT.from_pretrained(folder / "plm")
    assert "No measured results" not in (folder / "plm" / "README.md").read_text()
    generator = PromptDiffuser.from_pretrained(folder / "pretrained", plm=plm)
    assert generator.num_parameters() == pd.num_parameters()
    if name in TABLE1_SUITES:  # MT-ORL is a Table 1 column
        mt_orl = PromptDT.from_pretrained(folder / "mt-orl")
        assert not mt_orl.settings.use_prompt
        _one_step(mt_orl, suite, task)


def test_shipped_models_load_by_name_from_any_directory(tmp_path, monkeypatch):
    """``from_pretrained("hub_models/<suite>")`` finds the shipped copy when the current directory has no
    such folder (a notebook anywhere, or a plain ``pip install``); a folder there still comes first."""
    from promptrl.common.hub import resolve_model_path, shipped_model_names, shipped_models_root

    monkeypatch.chdir(tmp_path)
    assert shipped_models_root() == HUB  # the source tree's copy under an editable install
    assert resolve_model_path("hub_models/mw-reach") == HUB / "mw-reach"
    assert resolve_model_path("hub_models/mw-reach/plm") == HUB / "mw-reach" / "plm"
    assert resolve_model_path("hub_models/no-such-suite") == "hub_models/no-such-suite"  # left for the Hub lookup
    assert resolve_model_path("someone/mw-reach") == "someone/mw-reach"  # a Hub repo id is untouched
    assert {f"hub_models/{s}" for s in SUITES} | {f"hub_models/{s}/plm" for s in SUITES} <= set(shipped_model_names())
    pd = PromptDiffuser.from_pretrained("hub_models/mw-reach")
    expected = PromptDiffuser.from_pretrained(HUB / "mw-reach")
    assert all(
        torch.equal(a, b)
        for a, b in zip(pd._state_module().state_dict().values(), expected._state_module().state_dict().values())
    )
    (tmp_path / "hub_models" / "mw-reach").mkdir(parents=True)  # the user's own folder of that name wins
    assert resolve_model_path("hub_models/mw-reach") == "hub_models/mw-reach"


def test_a_model_is_loaded_on_a_plm_of_its_sizes_and_passed_loaded():
    """plm= with a PLM of other sizes names plm=, not the model's weights (a PLM of the same sizes, e.g.
    cheetah-dir's for a cheetah-vel generator, is a transfer experiment and loads); a folder where a
    loaded model belongs names the argument and says to load it."""
    with pytest.raises(ValueError, match=r"plm: the given PLM has obs_dim=27, act_dim=8 \(suite 'ant-dir'\)"):
        PromptDiffuser.from_pretrained(HUB / "cheetah-vel", plm=PromptDT.from_pretrained(HUB / "ant-dir" / "plm"))
    plm = PromptDT.from_pretrained(HUB / "cheetah-dir" / "plm")
    transferred = PromptDiffuser.from_pretrained(HUB / "cheetah-vel", plm=plm)
    assert transferred.plm is plm
    with pytest.raises(TypeError, match=r"model: expected a PromptDT .* got str .* load it first"):
        promptrl.evaluate(str(HUB / "cheetah-vel"), "cheetah-vel", tasks=[2], n_episodes=1)
    with pytest.raises(TypeError, match=r"model: expected a PromptDT or a method built on one, got NoneType"):
        PromptWrapper(promptrl.load_suite("cheetah-vel").make_env(2), None)
    with pytest.raises(ValueError, match=r"rtg_target: expected a finite number .* got 'high'"):
        PromptWrapper(promptrl.load_suite("cheetah-vel").make_env(2), transferred, rtg_target="high").reset(seed=0)


def test_stable_baselines3_evaluate_policy_runs_a_shipped_model():
    """SB3's own evaluation loop drives the shipped mw-reach Prompt Diffuser through PromptWrapper in
    an SB3 DummyVecEnv (batched Dict observations, automatic resets, a generated prompt at every reset)."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    suite = promptrl.load_suite("mw-reach")
    pd = PromptDiffuser.from_pretrained(HUB / "mw-reach")
    pd.set_random_seed(0)
    venv = DummyVecEnv([lambda: Monitor(PromptWrapper(suite.make_env(6), pd)) for _ in range(2)])
    venv.seed(0)
    returns, lengths = evaluate_policy(pd, venv, n_eval_episodes=4, deterministic=True, return_episode_rewards=True)
    assert lengths == [suite.horizon] * 4
    # its card: 721.0 +- 62.2 on this task; zero actions give 142.7 and uniform random actions 169.2
    assert all(r > 400 for r in returns), returns


def test_push_to_hub_uploads_a_self_contained_folder(tmp_path, monkeypatch):
    """push_to_hub (huggingface_hub.ModelHubMixin) uploads what from_pretrained needs: the Prompt
    Diffuser with its PLM inside; the upload loads back to the same prompts. The Hub API is faked."""
    import shutil

    import huggingface_hub.hub_mixin as hub_mixin

    uploaded = tmp_path / "uploaded"

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **_):
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **_):
            shutil.copytree(folder_path, uploaded)
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    pd = PromptDiffuser.from_pretrained(HUB / "mw-reach")
    assert pd.push_to_hub("someone/prompt-diffuser-mw-reach").endswith("/commit/0")
    names = sorted(str(p.relative_to(uploaded)) for p in uploaded.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "config.json",
        "model.safetensors",
        "plm/README.md",
        "plm/config.json",
        "plm/model.safetensors",
    ] + [f"tasks/{t}/{f}" for t in sorted(map(str, pd.task_generators)) for f in ("config.json", "model.safetensors")]
    back = PromptDiffuser.from_pretrained(uploaded)
    pd.set_random_seed(0)
    back.set_random_seed(0)
    for task in pd.served_tasks():  # the task generators travel with the model
        a, b = pd.generate_prompt(4, task=task), back.generate_prompt(4, task=task)
        assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


SERVING_SUITES = [s for s in SUITES if (HUB / s / "tasks").is_dir()]
# Family-wise error of the card check below, over every test task of every such card (Bonferroni).
CARD_CHECK_ALPHA = 0.01


def _card_row(card: str, label: str) -> dict[int, tuple[float, float, float]]:
    """``{task: (mean, lo, hi)}`` of the card's row ``| label | ... | task: mean [lo, hi], ... |``."""
    import re

    row = next(line for line in card.splitlines() if line.startswith(f"| {label} |"))
    number = r"(-?\d+\.\d)"
    return {
        int(t): (float(m), float(lo), float(hi))
        for t, m, lo, hi in re.findall(rf"(\d+): {number} \[{number}, {number}\]", row)
    }


def _card_tasks() -> int:
    return sum(len(_card_row((HUB / s / "README.md").read_text(), "generated")) for s in SERVING_SUITES)


@pytest.mark.parametrize("name", SERVING_SUITES or [pytest.param("none", marks=pytest.mark.skip)])
def test_a_model_that_serves_every_test_task_gives_its_card_numbers(name):
    """A shipped model with a generator per test task serves every test task, and re-running the
    evaluation its card records (`promptrl evaluate ... --record`) gives the card's per-task numbers.

    On the machine that recorded the card the episodes repeat bit for bit. On another CPU a batched
    forward's last bits differ and the rollouts amplify them, so the check is statistical: per task, a
    Welch two-sample t-test of the re-run's episodes against the card's mean and 95% CI (t interval
    over its episodes), rejecting at a family-wise ``CARD_CHECK_ALPHA`` over all card tasks."""
    import math
    import re

    from scipy.stats import t as student_t
    from scipy.stats import ttest_ind_from_stats

    from promptrl.evaluation import evaluate

    folder, suite = HUB / name, promptrl.load_suite(name)
    pd = PromptDiffuser.from_pretrained(folder)
    assert pd.served_tasks() == sorted(suite.test_tasks)
    card = (folder / "README.md").read_text()
    stated = _card_row(card, "generated")
    episodes = int(re.search(r"--episodes (\d+)", card).group(1))
    assert sorted(stated) == sorted(suite.test_tasks)
    threads = int(re.search(r"(\d+) torch thread", card).group(1))  # a batched forward's last bits depend on it
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = evaluate(pd, suite, n_episodes=episodes, seed=0)
    finally:
        torch.set_num_threads(before)
    alpha = CARD_CHECK_ALPHA / _card_tasks()
    half_width_quantile = float(student_t.ppf(0.975, episodes - 1))
    rejected = {}
    for task, (mean, lo, hi) in stated.items():
        returns = np.asarray(result.returns[task], dtype=float)
        if round(float(returns.mean()), 1) == mean:
            continue  # the card's number to its last digit (always so on the recording machine)
        card_std = (hi - lo) / 2 * math.sqrt(episodes) / half_width_quantile
        test = ttest_ind_from_stats(
            returns.mean(), returns.std(ddof=1), len(returns), mean, card_std, episodes, equal_var=False
        )
        if not test.pvalue >= alpha:  # also fails on a NaN p-value (two constant samples that differ)
            rejected[task] = (round(float(returns.mean()), 1), mean, float(test.pvalue))
    assert not rejected, f"(re-run mean, card mean, p-value) per task, rejecting below p={alpha:.2g}: {rejected}"
    unserved = [t for t in suite.split("all") if t not in suite.test_tasks]  # none for cheetah-dir
    if unserved:
        with pytest.raises(ValueError, match="holds prompt generators for tasks"):
            pd.generate_prompt(1, task=unserved[0])

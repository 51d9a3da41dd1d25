"""A model folder from someone else is data: its ``config.json`` is checked (types, ranges, size) before
anything is allocated, its weights must match the config in names and dtypes, and a name that is no
folder is only sent to the Hub when it is a Hub repo id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptrl import PromptDiffuser, PromptDT
from promptrl.common.config_checks import MAX_PARAMETERS_ENV
from promptrl.common.hub import is_hub_id
from promptrl.methods.baselines.adaptor import Adaptor

HUB = Path(__file__).resolve().parents[1] / "hub_models" / "mw-reach"


@pytest.fixture
def plm_folder(tmp_path) -> Path:
    return Path(shutil.copytree(HUB / "plm", tmp_path / "plm"))


@pytest.fixture
def diffuser_folder(tmp_path) -> Path:
    folder = tmp_path / "pd"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(HUB / name, folder / name)
    shutil.copytree(HUB / "plm", folder / "plm")
    return folder


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))  # NaN is written as the JSON extension ``NaN``, which json reads back


def edit_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


MiB = 1 << 20


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"embed_dim": "128"}, r"embed_dim must be an integer >= 1 and <= 1048576, got '128'"),
        ({"embed_dim": 0}, r"embed_dim must be an integer >= 1 .*got 0"),
        ({"n_layer": -2}, r"n_layer must be an integer >= 1 and <= 1024, got -2"),
        ({"n_layer": 10**6}, r"n_layer must be an integer >= 1 and <= 1024, got 1000000"),
        ({"embed_dim": 10**9}, r"embed_dim must be an integer >= 1 and <= 1048576, got 1000000000"),
        (
            {"embed_dim": MiB, "n_head": 1},
            r"a Prompt-DT of this config would have 3.96e\+13 parameters, more than the limit of 2e\+09",
        ),
        (
            {"max_ep_len": MiB, "embed_dim": 4096, "n_head": 1},
            r"a Prompt-DT of this config would have 9.19e\+09 parameters, more than the limit",
        ),
        ({"n_head": 3}, r"embed_dim \(128\) must be divisible by n_head \(3\)"),
        ({"use_prompt": "yes"}, r"use_prompt must be True or False, got 'yes'"),
        ({"activation": "__import__('os')"}, r"activation must be 'relu' or 'gelu'"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\), got 1.5"),
        ({"state_mean": [float("nan")] * 39}, r"state_mean\[0\] must be a finite number, got nan"),
        ({"state_mean": [0.0] * 38}, r"state_mean must be None or a list of 39 numbers, got 38 values"),
        ({"state_std": [0.0] * 39}, r"state_std\[0\] must be a finite positive number, got 0.0"),
        ({"rtg_scale": -1}, r"rtg_scale must be None or a finite positive number, got -1"),
        ({"prompt_window": "all"}, r"prompt_window must be one of \('random', 'last'\), got 'all'"),
        ({"learning_rate": "fast"}, r"learning_rate must be a number > 0, got 'fast'"),
    ],
)
def test_bad_promptdt_config_is_refused_before_allocation(plm_folder, changes, message):
    edit_config(plm_folder, **changes)
    with pytest.raises(ValueError, match=rf"config.json in {plm_folder} is not a valid PromptDT config: {message}"):
        PromptDT.from_pretrained(plm_folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null", r"is not a PromptDT config \(a JSON NoneType\)"),
        ("[1, 2]", r"is not a PromptDT config \(a JSON list\)"),
        ('{"obs_dim": 39', r"corrupt config.json"),
    ],
)
def test_config_that_is_no_object(plm_folder, text, message):
    (plm_folder / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        PromptDT.from_pretrained(plm_folder)


def test_unknown_key_is_reported(plm_folder):
    edit_config(plm_folder, run_this="rm -rf /")
    with pytest.raises(ValueError, match=r"unknown keys \['run_this'\]"):
        PromptDT.from_pretrained(plm_folder)


def test_parameter_limit_can_be_changed(plm_folder, monkeypatch):
    monkeypatch.setenv(MAX_PARAMETERS_ENV, "1000")
    with pytest.raises(ValueError, match=rf"more than the limit of 1e\+03; set {MAX_PARAMETERS_ENV}"):
        PromptDT.from_pretrained(plm_folder)
    monkeypatch.setenv(MAX_PARAMETERS_ENV, "10000000")
    model = PromptDT.from_pretrained(plm_folder)
    assert model.num_parameters() == model.settings.num_parameters()  # the estimate is the exact count
    monkeypatch.setenv(MAX_PARAMETERS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PARAMETERS_ENV} must be a positive integer, got 'lots'"):
        PromptDT.from_pretrained(plm_folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s.update({"ln_in.weight": s["ln_in.weight"].double()}),
            r"tensor 'ln_in.weight' is torch.float64, expected torch.float32",
        ),
        (
            lambda s: s.update({"ln_in.bias": s["ln_in.bias"].to(torch.int64)}),
            r"tensor 'ln_in.bias' is torch.int64, expected torch.float32",
        ),
        (
            lambda s: s.update({"payload": torch.zeros(3)}),
            r"does not match its config.json: .*unexpected \['payload'\]",
        ),
        (lambda s: s.pop("ln_out.weight"), r"does not match its config.json: missing \['ln_out.weight'\]"),
        (
            lambda s: s.update({"ln_in.weight": torch.zeros(64)}),
            r"(?s)does not match its config.json: .*size mismatch for ln_in.weight",
        ),
    ],
)
def test_weights_must_match_the_config(plm_folder, change, message):
    edit_weights(plm_folder, change)
    with pytest.raises(ValueError, match=message):
        PromptDT.from_pretrained(plm_folder)


def test_truncated_weights_are_refused(plm_folder):
    path = plm_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt model.safetensors .* truncated"):
        PromptDT.from_pretrained(plm_folder)


@pytest.mark.parametrize(
    "name",
    ["../models/plm", "org/../name", "someone/../../etc", "/no/such/folder/plm", "~/models/plm", "a/b/c", "org--x/y"],
)
def test_paths_are_never_sent_to_the_hub(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any Hub request would fail differently
    assert not is_hub_id(name)
    with pytest.raises(FileNotFoundError, match=r"nor a Hugging Face Hub repo id .*so the Hub was not asked"):
        PromptDT.from_pretrained(name)


def test_hub_id_rule():
    assert all(is_hub_id(n) for n in ("org/name", "name", "Org-1/model_v2.0", "a/b"))
    assert not any(
        is_hub_id(n) for n in ("", "/", "org/", "/name", "-org/name", "org/name.", "hub_models/mw-reach", "o/n/x")
    )


@pytest.mark.parametrize(
    ("where", "changes", "message"),
    [
        (
            "",
            {"n_steps": 10**9},
            r"is not a valid PromptDiffuser config: n_steps must be an integer >= 1 and <= 100000",
        ),
        ("", {"hidden": "256"}, r"is not a valid PromptDiffuser config: hidden must be an integer"),
        ("", {"hidden": 1 << 20}, r"PromptDiffuser config: the noise MLP of this config would have .* parameters"),
        ("", {"schedule": "exotic"}, r"schedule must be 'linear' or 'cosine', got 'exotic'"),
        ("", {"x_min": ["a"]}, r"x_min\[0\] must be a finite number, got 'a'"),
        ("", {"conditions": {"6": "all"}}, r"conditions\['6'\] must be a non-empty list"),
        ("", {"temperature": float("nan")}, r"temperature must be in \[0, 1\], got nan"),
        ("plm", {"embed_dim": 10**9}, r"plm is not a valid PromptDT config: embed_dim must be an integer"),
    ],
)
def test_bad_diffuser_config(diffuser_folder, where, changes, message):
    edit_config(diffuser_folder / where, **changes)
    with pytest.raises(ValueError, match=message):
        PromptDiffuser.from_pretrained(diffuser_folder)


def test_bad_diffuser_weights(diffuser_folder):
    first = next(iter(load_file(str(diffuser_folder / "model.safetensors"))))
    edit_weights(diffuser_folder, lambda s: s.update({first: s[first].double()}))
    with pytest.raises(ValueError, match=rf"tensor '{first}' is torch.float64, expected torch.float32"):
        PromptDiffuser.from_pretrained(diffuser_folder)


@pytest.fixture
def adaptor_folder(tmp_path) -> Path:
    folder = tmp_path / "adaptor"
    Adaptor(PromptDT.from_pretrained(HUB / "plm")).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden": 10**9}, r"hidden must be an integer >= 1 and <= 65536, got 1000000000"),
        ({"hidden": -1}, r"hidden must be an integer >= 1"),
        ({"batch_size": 0}, r"batch_size must be an integer > 0, got 0"),
        ({"betas": [0.9, 2]}, r"betas must be two numbers in \[0, 1\)"),
        ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
    ],
)
def test_bad_baseline_config(adaptor_folder, changes, message):
    assert Adaptor.from_pretrained(adaptor_folder).settings.hidden == 16  # the folder itself loads
    edit_config(adaptor_folder, **changes)
    with pytest.raises(ValueError, match=rf"is not a valid Adaptor config: {message}"):
        Adaptor.from_pretrained(adaptor_folder)


def test_bad_baseline_weights(adaptor_folder):
    key = next(k for k, v in load_file(str(adaptor_folder / "model.safetensors")).items() if v.is_floating_point())
    edit_weights(adaptor_folder, lambda s: s.update({key: s[key].to(torch.int32)}))
    with pytest.raises(ValueError, match=rf"tensor '{key}' is torch.int32, expected torch.float32"):
        Adaptor.from_pretrained(adaptor_folder)

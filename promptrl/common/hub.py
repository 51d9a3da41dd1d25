"""Hugging Face Hub save and load for every promptrl model: safetensors weights and a ``config.json``
that holds the model's settings dataclass, Hub model cards, and the shipped models (``hub_models/``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import EvalResult, ModelHubMixin, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from safetensors.torch import load_file, save_file

from promptrl.common.files import CONFIG_NAME, WEIGHTS_NAME, atomic_file, write_text_atomic

SHIPPED = "hub_models"
"""Name under which the shipped models are addressed: ``hub_models/<suite>[/plm|/mt-orl|/pretrained]``."""


def shipped_models_root() -> Path | None:
    """The shipped models of this installation: ``promptrl/hub_models/`` inside an installed wheel, else
    ``hub_models/`` of the source tree the package runs from (an editable install); None if neither exists."""
    package = Path(__file__).resolve().parents[1]
    for root in (package / SHIPPED, package.parent / SHIPPED):
        if root.is_dir():
            return root
    return None


def resolve_model_path(path: str | Path) -> str | Path:
    """``path`` unchanged if it is a folder (or anything but a relative ``hub_models/...`` path);
    a relative ``hub_models/<suite>/...`` that is no folder under the current directory becomes the
    installation's shipped copy (see :func:`shipped_models_root`) when that copy exists.

    So ``from_pretrained("hub_models/cheetah-vel")`` works from any directory, after a plain
    ``pip install`` too; a folder of that name under the current directory still comes first."""
    p = Path(path)
    if p.is_dir() or p.is_absolute() or not p.parts or p.parts[0] != SHIPPED:
        return path
    root = shipped_models_root()
    candidate = root.joinpath(*p.parts[1:]) if root is not None else None
    return candidate if candidate is not None and candidate.is_dir() else path


def shipped_model_names() -> list[str]:
    """The shipped model folders, e.g. ``["hub_models/ant-dir", "hub_models/ant-dir/mt-orl", ...]``."""
    root = shipped_models_root()
    if root is None:
        return []
    return sorted(f"{SHIPPED}/{c.parent.relative_to(root).as_posix()}" for c in root.glob(f"**/{CONFIG_NAME}"))


def write_model_files(folder: Path, module: torch.nn.Module, settings: Any) -> None:
    """Write ``model.safetensors`` and ``config.json`` (a settings dataclass), each atomically."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_file(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text_atomic(folder / CONFIG_NAME, json.dumps(asdict(settings), indent=2))


def model_folder(model_id: str, names: Sequence[str], hint: str = "", **hub: Any) -> Path:
    """The folder that holds the files ``names`` of model ``model_id``: ``model_id`` itself when it is a
    folder, else a snapshot of those files from the Hugging Face Hub (``hub``: keyword arguments of
    ``huggingface_hub.snapshot_download`` such as ``revision`` or ``local_files_only``).

    Raises FileNotFoundError naming the first missing file, followed by ``hint``."""
    folder = Path(model_id)
    if not folder.is_dir():
        folder = Path(snapshot_download(model_id, allow_patterns=list(names), **hub))
    for name in names:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{name} not found in {model_id}{f': {hint}' if hint else ''}")
    return folder


def read_settings(folder: Path, model_id: str, settings_class: type, model_name: str) -> dict[str, Any]:
    """The settings in ``folder/config.json``: a JSON object whose keys are fields of the dataclass
    ``settings_class``, holding every field without a default. Raises ValueError for a corrupt file or
    another model's config."""
    try:
        settings = json.loads((Path(folder) / CONFIG_NAME).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt {CONFIG_NAME} in {model_id}: {err}") from err
    if not isinstance(settings, dict):
        raise ValueError(f"{CONFIG_NAME} in {model_id} is not a {model_name} config (a JSON {type(settings).__name__})")
    names = {f.name for f in fields(settings_class)}
    required = {
        f.name
        for f in fields(settings_class)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown, missing = sorted(set(settings) - names), sorted(required - set(settings))
    if unknown or missing:
        raise ValueError(
            f"{CONFIG_NAME} in {model_id} is not a {model_name} config (unknown keys {unknown}, missing keys {missing})"
        )
    return settings


def load_weights(module: torch.nn.Module, folder: Path, model_id: str) -> None:
    """Load ``folder/model.safetensors`` into ``module``. Raises ValueError for a corrupt file or weights
    whose names or shapes differ from the module's (the model that ``config.json`` describes)."""
    try:
        state = load_file(str(Path(folder) / WEIGHTS_NAME))
    except Exception as err:
        raise ValueError(
            f"corrupt {WEIGHTS_NAME} in {model_id}: the file is corrupt, truncated or not safetensors ({err})"
        ) from err
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    mismatch = f"does not match its {CONFIG_NAME}"
    if missing or unexpected:
        raise ValueError(f"{WEIGHTS_NAME} in {model_id} {mismatch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:  # shapes differ
        raise ValueError(f"{WEIGHTS_NAME} in {model_id} {mismatch}: {err}") from err


def model_card_template(usage: str) -> str:
    """A Hub model-card template (metadata block, title, summary, usage, training, results and, when
    recorded, results across the test split) with ``usage`` as its Python example; the sections are
    filled by ``generate_model_card``."""
    return (
        "---\n{{ card_data }}\n---\n\n# {{ title }}\n\n{{ summary }}\n\n## Usage\n\n```python\n"
        + usage.strip()
        + "\n```\n\n"
        '## Training\n\n{{ training | default("No training details were recorded.", true) }}\n\n'
        '## Results\n\n{{ results | default("No measured results were recorded.", true) }}\n'
        "{% if test_split %}\n### Across the test split\n\n{{ test_split }}\n{% endif %}"
    )


HUB_ARGUMENTS = frozenset(
    {"force_download", "resume_download", "proxies", "token", "cache_dir", "local_files_only", "revision"}
)
"""``ModelHubMixin.from_pretrained``'s own keyword arguments."""
DOWNLOAD_ARGUMENTS = ("revision", "cache_dir", "force_download", "local_files_only", "token")
"""Those of them that :func:`model_folder` passes on to ``huggingface_hub.snapshot_download``."""


class JsonHubMixin(ModelHubMixin):
    """``ModelHubMixin`` for a model made of a settings dataclass (``self.settings``, saved as
    ``config.json``) and one module (``_state_module()``, saved as ``model.safetensors``).

    A subclass sets ``settings_class`` and implements ``_state_module`` and ``_from_settings``; saving
    and loading (from a folder or the Hub, with clear errors for missing, corrupt or mismatched
    files) are done here.
    """

    settings: Any

    def _state_module(self) -> torch.nn.Module:
        """The module whose parameters and buffers ``model.safetensors`` holds."""
        raise NotImplementedError

    @classmethod
    def _from_settings(cls, folder: Path, settings: dict[str, Any], **load: Any) -> Any:
        """A new model built from saved ``settings`` (its weights are loaded afterwards); ``folder`` is
        the model's folder and ``load`` holds the ``load_arguments`` given to ``from_pretrained``."""
        raise NotImplementedError

    @classmethod
    def _needed_files(cls, **load: Any) -> tuple[str, ...]:
        """The files (relative paths) that ``from_pretrained`` needs, given its ``load_arguments``."""
        return (CONFIG_NAME, WEIGHTS_NAME)

    missing_file_hint: ClassVar[str] = ""
    """Appended to the error for a missing file: what the folder should hold."""
    legacy_settings: ClassVar[dict[str, Any]] = {}
    """Values of settings added later, for configs saved before they existed (so old folders load as saved)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        write_model_files(Path(save_directory), self._state_module(), self.settings)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, settings_overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        # kwargs: the Hub's arguments, ``load_arguments`` and (from ModelHubMixin) the config's own keys, ignored
        load = {k: v for k, v in kwargs.items() if k in cls.load_arguments}
        hub = {k: kwargs[k] for k in DOWNLOAD_ARGUMENTS if k in kwargs}
        folder = model_folder(model_id, cls._needed_files(**load), cls.missing_file_hint, **hub)
        settings = {**cls.legacy_settings, **read_settings(folder, model_id, cls.settings_class, cls.__name__)}
        model = cls._from_settings(folder, {**settings, **(settings_overrides or {})}, **load)
        module = model._state_module()
        load_weights(module, folder, model_id)
        module.eval()
        return model

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any:
        """Save weights, config and a model card; the card is rewritten from the model's settings on every save."""
        card = Path(save_directory) / "README.md"
        if card.is_file():
            card.unlink()
        return super().save_pretrained(save_directory, **kwargs)

    def generate_model_card(self, *args: Any, eval_results: list[dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        """The Hub model card; ``eval_results`` (keyword arguments of ``huggingface_hub.EvalResult``, as
        recorded by ``promptrl evaluate --record``) become its ``model-index`` metadata."""
        card = super().generate_model_card(*args, **kwargs)
        if eval_results:
            card.data.model_name = kwargs.get("title") or type(self).__name__
            card.data.eval_results = [EvalResult(**r) for r in eval_results]
        return card

    load_arguments: ClassVar[frozenset[str]] = frozenset({"device"})
    """Keyword arguments of ``from_pretrained`` besides the Hub's and the settings overrides."""
    settings_class: ClassVar[type]
    """The settings dataclass that ``config.json`` holds: its fields are what may be overridden..."""
    fixed_settings: ClassVar[frozenset[str]] = frozenset()
    """...except these, which the saved weights depend on."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """Load a model saved by ``save_pretrained`` from a local folder or a Hub repo id.

        Other keyword arguments override saved settings, e.g. ``temperature=0.0`` or
        ``bf16_inference=True``; an unknown name is a ``TypeError``."""
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k not in HUB_ARGUMENTS | cls.load_arguments}
        cls._check_overrides(overrides)
        requested, pretrained_model_name_or_path = (
            pretrained_model_name_or_path,
            resolve_model_path(pretrained_model_name_or_path),
        )
        local_config = Path(pretrained_model_name_or_path) / CONFIG_NAME
        if local_config.is_file():  # checked before huggingface_hub reads it as a dict
            read_settings(local_config.parent, str(pretrained_model_name_or_path), cls.settings_class, cls.__name__)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, settings_overrides=overrides, **kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"corrupt {CONFIG_NAME} in {pretrained_model_name_or_path}: {err}") from err
        except (EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled) as err:
            folder = Path(pretrained_model_name_or_path)
            if folder.is_dir():
                raise
            shipped = shipped_model_names()
            raise FileNotFoundError(
                f"pretrained_model_name_or_path={str(requested)!r} is not a folder under the current directory "
                f"({Path.cwd()}), nor a shipped model, and could not be fetched from the Hugging Face Hub ({type(err).__name__}). "
                + (
                    f"The shipped models: {', '.join(shipped)}."
                    if shipped
                    else "This installation has no shipped models (hub_models/): pass a folder or a Hub repo id."
                )
            ) from err

    @classmethod
    def _check_overrides(cls, overrides: dict[str, Any]) -> None:
        """Raise unless every key of ``overrides`` is a setting that may change at load time."""
        unknown = sorted(set(overrides) - {f.name for f in fields(cls.settings_class)})
        if unknown:
            raise TypeError(
                f"from_pretrained got unknown arguments {unknown}: besides {', '.join(sorted(cls.load_arguments))} "
                f"and the Hub's, it takes fields of {cls.settings_class.__name__} to override"
            )
        fixed = sorted(set(overrides) & cls.fixed_settings)
        if fixed:
            raise ValueError(
                f"{fixed} are part of the saved model (architecture, normalization) and cannot be overridden at load"
            )

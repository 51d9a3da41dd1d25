"""Hugging Face Hub save and load for every promptrl model: safetensors weights and a ``config.json``
that holds the model's settings dataclass, Hub model cards, and the shipped models (``hub_models/``)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import EvalResult, ModelHubMixin
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from safetensors.torch import save_file

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


class JsonHubMixin(ModelHubMixin):
    """``ModelHubMixin`` whose ``from_pretrained`` reports a corrupt ``config.json`` as a ``ValueError``."""

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

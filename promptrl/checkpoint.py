"""Atomic training checkpoints: a folder written beside the old one and swapped in, optimizer
moments stored as safetensors (no pickle)."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import json
from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
from huggingface_hub import EvalResult, ModelHubMixin
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from safetensors.torch import save_file

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
SHIPPED = "hub_models"
"""Name under which the shipped models are addressed: ``hub_models/<suite>[/plm|/mt-orl|/pretrained]``."""


def shipped_models_root() -> Path | None:
    """The shipped models of this installation: ``promptrl/hub_models/`` inside an installed wheel, else
    ``hub_models/`` of the source tree the package runs from (an editable install); None if neither exists."""
    here = Path(__file__).resolve().parent
    for root in (here / SHIPPED, here.parent / SHIPPED):
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


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a scratch folder; on success it replaces ``final`` (the old copy survives as
    ``<final>.old`` until the swap is done, and :func:`latest_folder` falls back to it)."""
    final = Path(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` (readers never see
    half a file), on an error it is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """``header`` and ``rows`` as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def latest_folder(final: Path, marker: str) -> Path | None:
    """The complete checkpoint folder (``final`` or its ``.old`` copy) holding ``marker``, if any."""
    final = Path(final)
    for folder in (final, final.with_name(final.name + ".old")):
        if (folder / marker).is_file():
            return folder
    return None


def saved_steps(folder: Path | None) -> int:
    """``steps_trained`` in ``folder/config.json``: 0 when there is no folder or no config yet."""
    config = None if folder is None else Path(folder) / CONFIG_NAME
    return json.loads(config.read_text()).get("steps_trained", 0) if config is not None and config.is_file() else 0


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as flat tensors ``<prefix>.<param id>.<key>``."""
    return {f"{prefix}.{pid}.{k}": torch.as_tensor(v).clone() for pid, st in opt.state_dict()["state"].items() for k, v in st.items()}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Restore what :func:`optimizer_tensors` saved (hyperparameters come from the optimizer itself)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            pid, key = k[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
    sd["state"] = state
    opt.load_state_dict(sd)


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
        "---\n{{ card_data }}\n---\n\n# {{ title }}\n\n{{ summary }}\n\n## Usage\n\n```python\n" + usage.strip() + "\n```\n\n"
        '## Training\n\n{{ training | default("No training details were recorded.", true) }}\n\n'
        '## Results\n\n{{ results | default("No measured results were recorded.", true) }}\n'
        "{% if test_split %}\n### Across the test split\n\n{{ test_split }}\n{% endif %}"
    )


HUB_ARGUMENTS = frozenset({"force_download", "resume_download", "proxies", "token", "cache_dir", "local_files_only", "revision"})
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
        requested, pretrained_model_name_or_path = pretrained_model_name_or_path, resolve_model_path(pretrained_model_name_or_path)
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
                + (f"The shipped models: {', '.join(shipped)}." if shipped else
                   "This installation has no shipped models (hub_models/): pass a folder or a Hub repo id.")) from err

    @classmethod
    def _check_overrides(cls, overrides: dict[str, Any]) -> None:
        """Raise unless every key of ``overrides`` is a setting that may change at load time."""
        unknown = sorted(set(overrides) - {f.name for f in fields(cls.settings_class)})
        if unknown:
            raise TypeError(f"from_pretrained got unknown arguments {unknown}: besides {', '.join(sorted(cls.load_arguments))} "
                            f"and the Hub's, it takes fields of {cls.settings_class.__name__} to override")
        fixed = sorted(set(overrides) & cls.fixed_settings)
        if fixed:
            raise ValueError(f"{fixed} are part of the saved model (architecture, normalization) and cannot be overridden at load")

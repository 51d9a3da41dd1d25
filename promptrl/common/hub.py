"""Hugging Face Hub save and load for every promptrl model: safetensors weights and a ``config.json``
that holds the model's settings dataclass, Hub model cards, and the shipped models (``hub_models/``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import EvalResult, HfApi, ModelHubMixin, constants, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from safetensors.torch import load_file, save_file

from promptrl.common.config_checks import positive_env
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


HUB_TIMEOUT_ENV = "PROMPTRL_HUB_TIMEOUT"
"""Environment variable: seconds the Hub's metadata call may take before the Hub counts as unreachable
(default :data:`DEFAULT_HUB_TIMEOUT`)."""
DEFAULT_HUB_TIMEOUT = 10.0
"""Default of :data:`HUB_TIMEOUT_ENV`; opening the connection may take at most
:data:`HUB_CONNECT_TIMEOUT` of it."""
HUB_CONNECT_TIMEOUT = 1.5
"""Seconds to open a connection to the Hub: a closed port, a host that drops packets or a failed name
look-up gives up within it, without retries."""
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


class HubUnreachableError(FileNotFoundError):
    """A model that is no local folder could not be fetched: the Hub did not answer, or offline mode
    (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) is on, and the local cache has no copy."""


def is_hub_id(model_id: str) -> bool:
    """Whether ``model_id`` is a Hugging Face Hub repo id: ``name`` or ``org/name`` of letters, digits,
    ``-``, ``_`` and ``.``, starting with a letter or digit, without ``..`` or ``--``, at most 96
    characters each. A path (absolute, with ``..``, ``~``, a backslash or more than two parts) never is,
    and neither is a ``hub_models/...`` name (those are shipped models only)."""
    text = str(model_id)
    return (
        _HUB_ID.fullmatch(text) is not None
        and ".." not in text
        and "--" not in text
        and not text.endswith(".")
        and text.split("/")[0] != SHIPPED
    )


def hub_offline() -> bool:
    """Whether Hub access is off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value, read
    now (``huggingface_hub`` reads it once at import) or at import."""
    now = any(
        os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return now or constants.is_offline_mode()


def hub_timeout() -> float:
    """Seconds the Hub's metadata call may take (:data:`HUB_TIMEOUT_ENV`, default :data:`DEFAULT_HUB_TIMEOUT`)."""
    return positive_env(HUB_TIMEOUT_ENV, DEFAULT_HUB_TIMEOUT, float, "a positive number of seconds")


def _hub_snapshot(model_id: str, names: Sequence[str], **hub: Any) -> Path:
    """The local snapshot of ``names`` from Hub repo ``model_id``: the cached copy when offline or the Hub
    does not answer within :func:`hub_timeout` (one try, no retries), else a fresh download. Files are
    downloaded to temporary names and moved in place when complete, so a cut download leaves no snapshot.

    Raises HubUnreachableError when there is no cached copy to fall back on."""
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT
    offline = hub.pop("local_files_only", False) or hub_offline()
    reason = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else ""
    if not offline:
        timeout = hub_timeout()
        try:  # one short metadata call: huggingface_hub's own lookup retries for tens of seconds
            HfApi(endpoint=endpoint, token=hub.get("token")).model_info(
                model_id,
                revision=hub.get("revision"),
                timeout=(min(HUB_CONNECT_TIMEOUT, timeout), timeout, timeout, timeout),
            )
        except (HfHubHTTPError, HFValidationError):
            raise  # the Hub answered (no such repo, revision or access), or the id is malformed
        except Exception as err:  # httpx's connection and timeout errors
            reason = (
                f"the Hub at {endpoint} did not answer ({type(err).__name__}: {err}; the limit is {timeout:g} s, "
                f"{HUB_TIMEOUT_ENV})"
            )
    if reason:
        try:
            return Path(snapshot_download(model_id, allow_patterns=list(names), local_files_only=True, **hub))
        except LocalEntryNotFoundError as err:
            raise HubUnreachableError(f"{reason}, and the Hub cache holds no copy of {model_id!r}") from err
    try:
        return Path(snapshot_download(model_id, allow_patterns=list(names), endpoint=endpoint, **hub))
    except HfHubHTTPError:
        raise
    except LocalEntryNotFoundError as err:
        raise HubUnreachableError(f"the Hub at {endpoint} could not be reached ({err})") from err
    except Exception as err:  # a download cut in the middle (httpx errors, size mismatch)
        raise HubUnreachableError(
            f"downloading {model_id!r} from {endpoint} failed ({type(err).__name__}: {err}); no partial file was kept"
        ) from err


def model_folder(model_id: str | Path, names: Sequence[str], hint: str = "", **hub: Any) -> Path:
    """The folder that holds the files ``names`` of model ``model_id``: ``model_id`` itself when it is a
    folder, else, for a Hub repo id (see :func:`is_hub_id`), a snapshot of those files from the Hugging
    Face Hub (``hub``: keyword arguments of ``huggingface_hub.snapshot_download`` such as ``revision``
    or ``local_files_only``).

    Raises FileNotFoundError naming the first missing file, followed by ``hint``;
    :class:`HubUnreachableError` when the Hub cannot be reached and nothing is cached; FileNotFoundError
    for a path that is no folder and no Hub repo id (never sent to the Hub)."""
    folder = Path(model_id)
    if not folder.is_dir():
        if not is_hub_id(str(model_id)):
            raise FileNotFoundError(f"{model_id} is not a folder, nor a Hub repo id (org/name)")
        folder = _hub_snapshot(str(model_id), names, **hub)
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
    whose names, shapes or dtypes (float32 for parameters) differ from the module's (the model that
    ``config.json`` describes; a module may resize a buffer to the saved shape while loading)."""
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
    for key, tensor in state.items():
        if tensor.dtype != expected[key].dtype:
            raise ValueError(
                f"{WEIGHTS_NAME} in {model_id}: tensor {key!r} is {tensor.dtype}, expected {expected[key].dtype}"
            )
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
    optional_files: ClassVar[tuple[str, ...]] = ()
    """Glob patterns of files fetched from the Hub with the needed ones when the repo has them."""
    legacy_settings: ClassVar[dict[str, Any]] = {}
    """Values of settings added later, for configs saved before they existed (so old folders load as saved)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        write_model_files(Path(save_directory), self._state_module(), self.settings)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, settings_overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        # kwargs: the Hub's arguments, ``load_arguments`` and (from ModelHubMixin) the config's own keys, ignored;
        # ``model_name``: what the user asked for (a Hub id whose snapshot folder is ``model_id``)
        model_name = kwargs.get("model_name") or model_id
        load = {k: v for k, v in kwargs.items() if k in cls.load_arguments}
        folder = model_folder(model_id, cls._needed_files(**load), cls.missing_file_hint)
        settings = {**cls.legacy_settings, **read_settings(folder, model_name, cls.settings_class, cls.__name__)}
        settings = {**settings, **(settings_overrides or {})}
        try:  # types, ranges and sizes, before anything is allocated
            cls.settings_class(**settings)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{CONFIG_NAME} in {model_name} is not a valid {cls.__name__} config: {err}") from err
        model = cls._from_settings(folder, settings, **load)
        module = model._state_module()
        load_weights(module, folder, model_name)
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
        """Load a model saved by ``save_pretrained`` from a local folder, a shipped model
        (``hub_models/...``) or a Hugging Face Hub repo id (``org/name``, see :func:`is_hub_id`).

        A model folder is data, never code: only ``config.json`` and safetensors files are read, the
        config is checked (types, ranges, a size limit of :data:`~promptrl.common.config_checks.MAX_PARAMETERS`
        parameters) before anything is allocated, and the weights must match it in names, shapes and
        dtype (float32). A Hub id is looked up once, without retries (see :func:`hub_timeout`); with
        ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` only the local Hub cache is read.

        Other keyword arguments override saved settings, e.g. ``temperature=0.0`` or
        ``bf16_inference=True``; an unknown name is a ``TypeError``."""
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k not in HUB_ARGUMENTS | cls.load_arguments}
        cls._check_overrides(overrides)
        requested = pretrained_model_name_or_path
        path = resolve_model_path(requested)
        model_name = str(path)
        if not Path(path).is_dir():
            load = {k: kwargs[k] for k in cls.load_arguments if k in kwargs}
            hub = {k: kwargs.pop(k) for k in DOWNLOAD_ARGUMENTS if k in kwargs}
            path = cls._fetch(requested, path, (*cls._needed_files(**load), *cls.optional_files), **hub)
        local_config = Path(path) / CONFIG_NAME
        if local_config.is_file():  # checked before huggingface_hub reads it as a dict
            read_settings(local_config.parent, model_name, cls.settings_class, cls.__name__)
        try:
            return super().from_pretrained(path, settings_overrides=overrides, model_name=model_name, **kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"corrupt {CONFIG_NAME} in {model_name}: {err}") from err

    @classmethod
    def _fetch(cls, requested: str | Path, path: str | Path, names: Sequence[str], **hub: Any) -> Path:
        """The Hub snapshot of ``path`` (no local folder); a FileNotFoundError that says where the model was
        looked for when ``path`` is no Hub repo id or cannot be fetched."""
        folder = Path(path)
        looked = f"{folder.resolve()}" if folder.is_absolute() else f"{Path.cwd() / folder}"
        root = shipped_models_root()
        shipped = shipped_model_names()
        listing = (
            f"The shipped models: {', '.join(shipped)} (in {root})."
            if shipped
            else "This installation has no shipped models (hub_models/): pass a folder or a Hub repo id."
        )
        head = (
            f"pretrained_model_name_or_path={str(requested)!r} is not a folder under the current directory "
            f"({Path.cwd()}; looked at {looked}), nor a shipped model"
        )
        if not is_hub_id(str(path)):
            raise FileNotFoundError(
                f"{head}, nor a Hugging Face Hub repo id ('org/name' of letters, digits, '-', '_', '.'; "
                f"no '..'), so the Hub was not asked. {listing}"
            )
        try:
            return _hub_snapshot(str(path), names, **hub)
        except (
            EntryNotFoundError,
            HfHubHTTPError,
            HFValidationError,
            OfflineModeIsEnabled,
            HubUnreachableError,
        ) as err:
            error = (
                HubUnreachableError
                if isinstance(err, (HubUnreachableError, OfflineModeIsEnabled))
                else FileNotFoundError
            )
            detail = (
                str(err)
                if isinstance(err, HubUnreachableError)
                else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            )
            raise error(f"{head}, and could not be fetched from the Hugging Face Hub ({detail}). {listing}") from err

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

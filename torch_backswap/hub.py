"""Resolve a pretrained model name to a local directory (``config.json`` + ``model.safetensors``).

Resolution order of :func:`resolve_pretrained`:

1. an existing **local directory** holding the files;
2. the **Hugging Face Hub** (``hf_hub_download``; the HF cache is used and ``HF_HUB_OFFLINE=1`` or
   ``local_files_only=True`` restricts this step to the cache; ``HF_ENDPOINT`` is read at call time);
3. the copy **bundled** with the package: ``torch_backswap/bundled_weights/<name>/`` in an installed wheel,
   ``<repo>/weights/<name>/`` in a source checkout (matched by full repo id ``org/name`` or by ``name``);

and otherwise one :class:`PretrainedNotFoundError` that lists what was tried and why each step failed.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ._io import BackswapFileNotFoundError

__all__ = [
    "DEFAULT_SEGMENTER",
    "REQUIRED_FILES",
    "PretrainedNotFoundError",
    "bundled_weight_roots",
    "find_bundled",
    "load_pretrained_model",
    "resolve_pretrained",
    "save_pretrained_model",
]

#: The default patch segmenter (bundled as ``weights/patchseg-tiny-s16/``).
DEFAULT_SEGMENTER = "torch-backswap/patchseg-tiny-s16"
#: Files a pretrained directory must hold.
REQUIRED_FILES = ("config.json", "model.safetensors")

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "true", "yes", "on", "y", "t"}


class PretrainedNotFoundError(BackswapFileNotFoundError):
    """No local directory, Hub repository or bundled copy provides the requested weights (a
    :class:`~torch_backswap._io.BackswapFileNotFoundError`, so also a ``BackswapFileError`` and a
    ``FileNotFoundError``)."""


def _has_files(directory: Path, filenames: tuple[str, ...]) -> bool:
    return directory.is_dir() and all((directory / f).is_file() for f in filenames)


def bundled_weight_roots() -> list[Path]:
    """Folders that hold bundled weights, in search order: the installed package data
    ``torch_backswap/bundled_weights`` and, in a source checkout, the repository's ``weights/``."""
    roots: list[Path] = []
    try:
        packaged = resources.files("torch_backswap") / "bundled_weights"
        if packaged.is_dir():
            roots.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError, NotADirectoryError):  # pragma: no cover - exotic loaders
        pass
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        roots.append(checkout / "weights")
    return roots


def find_bundled(name: str, filenames: tuple[str, ...] = REQUIRED_FILES) -> Path | None:
    """The bundled directory for ``name`` (``"org/name"`` or ``"name"``), or ``None``."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    for root in bundled_weight_roots():
        for candidate in (root.joinpath(*parts), root / parts[-1]):
            if _has_files(candidate, filenames):
                return candidate
    return None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _from_hub(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    offline: bool,
    endpoint: str | None,
    filenames: tuple[str, ...],
) -> Path:
    """Download (or find in the cache) ``filenames`` of ``repo_id``; return their snapshot directory."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    cache = None if cache_dir is None else str(cache_dir)
    probe_error: Exception | None = None
    if not offline:
        # One quick probe without retries: without a network huggingface_hub would otherwise back off
        # for ~20 s per file before we can fall back to the cache or the bundled copy.
        try:
            url = hf_hub_url(repo_id, filenames[0], revision=revision, endpoint=endpoint)
            get_hf_file_metadata(url, endpoint=endpoint, timeout=10)
        except Exception as err:  # noqa: BLE001 - any failure: answer from the cache only
            probe_error, offline = err, True
    try:
        first = Path(hf_hub_download(repo_id, filenames[0], revision=revision, cache_dir=cache,
                                     local_files_only=offline, endpoint=endpoint))
    except Exception as err:
        if probe_error is not None:
            raise probe_error from err  # the network error says more than "not in the cache"
        raise
    snapshot = first.parent
    # pin the remaining files to the snapshot (commit) the first one came from
    pinned = snapshot.name if _COMMIT.match(snapshot.name) else revision
    for filename in filenames[1:]:
        path = Path(hf_hub_download(repo_id, filename, revision=pinned, cache_dir=cache,
                                    local_files_only=offline, endpoint=endpoint))
        if path.parent != snapshot:
            raise FileNotFoundError(f"{filename} resolved to {path.parent}, not to the snapshot {snapshot}")
    return snapshot


def resolve_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    filenames: tuple[str, ...] = REQUIRED_FILES,
) -> Path:
    """Find a directory holding ``config.json`` and ``model.safetensors`` for ``name_or_path``.

    Args:
        name_or_path: a local directory, a Hub repo id (``"org/name"``) or the name of a bundled model.
        revision: Hub branch, tag or commit.
        cache_dir: Hugging Face cache folder (default: the HF default, ``HF_HUB_CACHE``).
        local_files_only: ``True`` never touches the network (the cache is still used); ``None`` follows
            ``HF_HUB_OFFLINE``.
        filenames: the files the directory must hold.

    Returns:
        The directory as a :class:`pathlib.Path`.

    Raises:
        PretrainedNotFoundError: listing each place tried and why it failed.
    """
    name = os.fspath(name_or_path)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name_or_path must be a non-empty str or path, got {name_or_path!r}")
    filenames = tuple(filenames)
    tried: list[str] = []

    # 1. local directory
    local = Path(name).expanduser()
    if local.is_dir():
        if _has_files(local, filenames):
            return local
        missing = [f for f in filenames if not (local / f).is_file()]
        tried.append(f"local directory {str(local)!r}: exists but lacks {', '.join(missing)}")
    else:
        tried.append(f"local directory {str(local)!r}: does not exist")

    # 2. Hugging Face Hub (or its cache)
    if _REPO_ID.match(name) and ".." not in name and not local.is_dir():
        offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
        if local_files_only is not None:
            offline = bool(local_files_only) or offline
        endpoint = os.environ.get("HF_ENDPOINT") or None
        where = f"Hugging Face Hub {name!r}" + (f" at {endpoint}" if endpoint else "")
        where += " (cache only: offline)" if offline else ""
        try:
            return _from_hub(name, revision=revision, cache_dir=cache_dir, offline=offline,
                             endpoint=endpoint.rstrip("/") if endpoint else None, filenames=filenames)
        except Exception as err:  # noqa: BLE001 - every Hub failure falls through to the bundled copy
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            tried.append(f"{where}: {type(err).__name__}: {reason[:300]}")
    else:
        tried.append(f"Hugging Face Hub: {name!r} is not a repo id")

    # 3. bundled with the package
    bundled = find_bundled(name, filenames)
    if bundled is not None:
        return bundled
    roots = bundled_weight_roots()
    shown = ", ".join(str(r) for r in roots) or "none installed"
    tried.append(f"bundled weights ({shown}): no folder named {name.split('/')[-1]!r} with {', '.join(filenames)}")

    raise PretrainedNotFoundError(name, "could not find pretrained weights. Tried:\n  - " + "\n  - ".join(tried))


# ----------------------------------------------------------------------------------------------------------
# Loading and saving a model class whose config is its __init__ arguments (PyTorchModelHubMixin style)


def load_pretrained_model(
    cls: Any,
    name_or_path: str | os.PathLike,
    *,
    what: str,
    fixed: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
) -> Any:
    """``cls(**config.json)`` with the tensors of ``model.safetensors``, in eval mode on ``map_location``.

    ``name_or_path`` goes through :func:`resolve_pretrained`; ``overrides`` replace config entries and
    ``fixed`` entries always win (e.g. no ImageNet download when the weights come from the file). Never
    unpickles anything; a checksum written by :func:`save_pretrained_model` is checked. Errors name the file
    and say ``what`` it is (e.g. ``"segmenter"``): :class:`~torch_backswap._io.BackswapFileError` for a config
    that is not a JSON object or not valid for ``cls``, and for weights that are corrupt or do not fit.
    """
    import warnings

    from ._io import BackswapFileError, load_safetensors, read_json_object

    directory = resolve_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    config = read_json_object(config_path, f"{what} config")
    known = cls._hub_mixin_init_parameters
    unknown = sorted(set(config) - set(known))
    if unknown:
        warnings.warn(f"{config_path}: ignoring unknown keys {unknown}", stacklevel=3)
    kwargs = {**{k: v for k, v in config.items() if k in known}, **(fixed or {})}
    try:
        model = cls(**{**kwargs, **(overrides or {}), **(fixed or {})})
    except (TypeError, ValueError) as err:
        if overrides:  # blame the file only if its own values fail, too
            try:
                cls(**kwargs)
            except (TypeError, ValueError):
                pass
            else:
                raise
        raise BackswapFileError(config_path, f"invalid {what} config: {err}") from err
    state = load_safetensors(weights_path, f"{what} weights file", device=str(map_location))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape (e.g. {k!r}: file {tuple(state[k].shape)}, "
                        f"model {tuple(expected[k].shape)})")
    if strict and missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if problems:
        raise BackswapFileError(weights_path, f"{what} weights do not fit the model config.json describes: "
                                f"tensors {', '.join(problems)}")
    model.load_state_dict(state, strict=strict)
    model.to(map_location)
    model.eval()
    return model


def save_pretrained_model(
    model: Any,
    save_directory: str | os.PathLike,
    *,
    config: dict | None = None,
    repo_id: str | None = None,
    push_to_hub: bool = False,
    model_card_kwargs: dict | None = None,
    **push_to_hub_kwargs: Any,
) -> str | None:
    """Write ``model.safetensors`` (with a sha256 of its tensors in the header), ``config.json`` (``model.config``
    unless ``config`` is given) and a model card ``README.md`` (unless one is there), each durably
    (:mod:`torch_backswap._io`); optionally push. Returns the commit URL when pushing, else ``None``."""
    import json

    from safetensors.torch import save_file

    from ._io import CHECKSUM_KEY, atomic_write_text, tensors_sha256, write_with

    directory = Path(save_directory)
    config = model.config if config is None else dict(config)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"format": "pt", CHECKSUM_KEY: tensors_sha256(state)}  # checked by load_pretrained_model
    write_with(directory / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata=metadata))
    atomic_write_text(directory / "config.json", json.dumps(config, sort_keys=True, indent=2))
    if not (directory / "README.md").exists():  # never overwrite a model card
        card = model.generate_model_card(**(model_card_kwargs or {}))
        write_with(directory / "README.md", card.save)
    if push_to_hub:
        return model.push_to_hub(repo_id=repo_id or directory.name, config=config,
                                 model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs)
    return None

"""Durable file writes and file errors that name the file.

Every file the package writes (banks, weights, label files, results) goes through :func:`atomic_write`:
the data goes to a temporary file that is unique per writer (process *and* thread) in the target's
directory, is ``fsync``-ed, then ``os.replace``-d over the target, and the directory is ``fsync``-ed where
the platform allows. A crash or power cut leaves either the old file or the new one, never half a file,
and two writers of one path never share a temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "BackswapFileError",
    "BackswapFileNotFoundError",
    "CHECKSUM_KEY",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_directory",
    "load_safetensors",
    "read_json_object",
    "tensors_sha256",
    "write_with",
]


class BackswapFileError(ValueError):
    """A file the package reads is missing parts, corrupt, truncated or of another format.

    The message names the file and the problem; the underlying error (if any) is chained as ``__cause__``.
    Subclasses ``ValueError`` so existing ``except ValueError`` handlers keep working.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BackswapFileNotFoundError(BackswapFileError, FileNotFoundError):
    """A file the package needs does not exist (also a ``FileNotFoundError``)."""


def fsync_directory(directory: str | os.PathLike) -> None:
    """``fsync`` a directory so a rename inside it survives a power cut (no-op where unsupported)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # Windows: directories cannot be opened for fsync
        return
    try:
        fd = os.open(str(directory), os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    """The process umask, read without changing it where the platform tells it (Linux), else by a set/reset."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0)  # other platforms: momentarily 0; done once per call, outside any write
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """``0o666`` less the process umask (what ``open(path, "w")`` creates)."""
    return 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a unique temporary path next to ``path``; on success it is made durable
    (``fsync``) and renamed over ``path``; on error it is removed and ``path`` is left untouched.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_write(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
        fsync_directory(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` durably (see :func:`atomic_write`). Returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` durably (see :func:`atomic_write`). Returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def write_with(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``lambda p: save_file(tensors, p)``) and commit it durably to ``path``."""
    with atomic_write(path) as tmp:
        writer(tmp)
    return Path(path)


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """Read a UTF-8 JSON file that must hold one object (``what`` names it in errors, e.g. ``"config"``).

    Raises:
        BackswapFileNotFoundError: the file does not exist.
        BackswapFileError: it is not UTF-8, not JSON, nested too deeply, or not an object (cause chained).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise BackswapFileNotFoundError(path, f"{what} not found") from err
    except IsADirectoryError as err:
        raise BackswapFileError(path, f"{what} is a directory, expected a JSON file") from err
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 1]
        raise BackswapFileError(path, f"{what} is not UTF-8 text (byte {err.start} is {bad!r})") from err
    except json.JSONDecodeError as err:
        problem = "empty file" if not raw.strip() else f"{err.msg} (line {err.lineno}, column {err.colno})"
        raise BackswapFileError(path, f"{what} is not valid JSON: {problem}") from err
    except RecursionError as err:
        raise BackswapFileError(path, f"{what} is not valid JSON: nested too deeply") from err
    if not isinstance(data, dict):
        raise BackswapFileError(path, f"{what} must be a JSON object, got a JSON {_json_kind(data)}")
    return data


def _json_kind(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


#: safetensors metadata key holding :func:`tensors_sha256` of the file's tensors; checked on load when present.
CHECKSUM_KEY = "backswap_sha256"


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """Hex sha256 of named CPU tensors: each name, dtype, shape and raw bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_safetensors(path: str | os.PathLike, what: str, device: str = "cpu") -> dict[str, Tensor]:
    """All tensors of a safetensors file (never unpickles anything); ``what`` names the file in errors.

    If the header's metadata holds :data:`CHECKSUM_KEY` (files written by this package), the tensors must
    match it, so a changed byte that still parses is caught too.

    Raises:
        BackswapFileNotFoundError: the file does not exist.
        BackswapFileError: the file is empty, truncated, corrupt or of another format (cause chained), or its
            tensors do not match the checksum in its header.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        problem = f"{what} is a directory, expected a safetensors file" if path.is_dir() else f"{what} not found"
        raise (BackswapFileError if path.is_dir() else BackswapFileNotFoundError)(path, problem)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            expected = (handle.metadata() or {}).get(CHECKSUM_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as err:
        size = path.stat().st_size
        detail = "the file is empty (0 bytes)" if size == 0 else f"{size} bytes, {err}"
        raise BackswapFileError(
            path, f"{what} is not a readable safetensors file (truncated, corrupt or another format): {detail}"
        ) from err
    if expected is not None and tensors_sha256(tensors) != expected:
        raise BackswapFileError(path, f"{what} is corrupt: its tensors do not match the sha256 in its header")
    if str(device) != "cpu":
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    return tensors

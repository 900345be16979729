"""Lazy, traversal-safe enumeration of the images under one folder.

The labeler only ever touches files that :class:`ImageCatalog` vouches for:

* ids are POSIX paths *relative* to the root (``"birds/0001.png"``);
* an id is rejected when it is absolute, contains ``..``/``.`` components, backslashes, NUL bytes,
  percent signs left over from (double) URL encoding, or when its real path (symlinks resolved)
  leaves the root;
* a file is only an image when its extension is one a browser displays *and* its first bytes carry an
  image signature (PNG, JPEG, GIF, WebP, BMP magic number), so ``notes.txt`` renamed ``notes.png`` is refused too.

Enumeration walks the tree with :func:`os.scandir` lazily: ids are pulled from a generator only as far
as a caller needs them, and nothing is decoded (only the first 16 bytes of each file are read, for the
signature). A folder of 100k images therefore starts instantly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "ImageCatalog", "InvalidImageId", "sniff_image_type"]

#: Extensions (lower case) of image files a browser can show, mapped to their MIME type.
IMAGE_EXTENSIONS: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


class InvalidImageId(ValueError):
    """An image id is malformed (absolute, ``..``, encoded, ...) — the server answers 400."""


def sniff_image_type(head: bytes) -> str | None:
    """MIME type from the first bytes of a file, or ``None`` when they are no known image signature.

    Args:
        head: at least the first 12 bytes of the file.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM"):
        return "image/bmp"
    return None


class ImageCatalog:
    """The images under ``root``, enumerated lazily in a stable (sorted, depth-first) order.

    Args:
        root: the image folder. Must exist and be a directory.

    Only regular files with an image extension are listed; symlinks are listed only when their target
    stays inside ``root``; symlinked directories are not descended into (no loops, no escapes).
    Listing reads the first 16 bytes of each candidate (magic number) and decodes nothing; serving
    (:meth:`resolve`) checks the same again.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root_path = Path(root)
        if not root_path.is_dir():
            raise NotADirectoryError(f"image_dir must be an existing directory, got {str(root)!r}")
        self.root = root_path
        self._real_root = os.path.realpath(root_path)
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._walker: Iterator[str] | None = self._walk()

    # ------------------------------------------------------------------ enumeration
    def _walk(self) -> Iterator[str]:
        stack: list[str] = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                with os.scandir(os.path.join(self.root, rel_dir)) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            subdirs: list[str] = []
            for entry in entries:
                # hidden files, and names the id checks would refuse ('%' from URL encoding, backslash)
                if entry.name.startswith(".") or "%" in entry.name or "\\" in entry.name:
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(rel)
                        continue
                    if not entry.is_file(follow_symlinks=True):
                        continue
                except OSError:
                    continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                if entry.is_symlink() and not self._inside(os.path.realpath(entry.path)):
                    continue
                if not self._looks_like_image(entry.path):
                    continue
                yield rel
            # depth first, sorted: push in reverse so the smallest name is visited first
            stack.extend(reversed(subdirs))

    def _pull(self, upto: int | None) -> None:
        """Extend the materialised id list to ``upto`` entries (``None``: to the end)."""
        while self._walker is not None and (upto is None or len(self._ids) < upto):
            try:
                image_id = next(self._walker)
            except StopIteration:
                self._walker = None
                break
            self._index[image_id] = len(self._ids)
            self._ids.append(image_id)

    @property
    def exhausted(self) -> bool:
        """Whether the walk has reached its end (then :attr:`known` is the full count)."""
        return self._walker is None

    @property
    def known(self) -> int:
        """How many ids have been enumerated so far."""
        return len(self._ids)

    def __len__(self) -> int:
        """Total number of images (walks the whole tree — file names only, nothing is decoded)."""
        self._pull(None)
        return len(self._ids)

    def get(self, position: int) -> str | None:
        """The id at ``position`` in walk order, or ``None`` past the end. Enumerates only that far."""
        if position < 0:
            raise IndexError(f"position must be >= 0, got {position!r}")
        self._pull(position + 1)
        return self._ids[position] if position < len(self._ids) else None

    def chunk(self, start: int, size: int) -> list[str]:
        """Ids ``[start, start + size)`` in walk order (fewer at the end)."""
        self._pull(start + size)
        return self._ids[start : start + size]

    def position(self, image_id: str) -> int | None:
        """Walk-order position of an id already enumerated or reachable, else ``None``."""
        while image_id not in self._index and self._walker is not None:
            self._pull(len(self._ids) + 256)
        return self._index.get(image_id)

    def __iter__(self) -> Iterator[str]:
        position = 0
        while (image_id := self.get(position)) is not None:
            yield image_id
            position += 1

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _looks_like_image(path: str) -> bool:
        try:
            with open(path, "rb") as fh:
                return sniff_image_type(fh.read(16)) is not None
        except OSError:
            return False

    def _inside(self, real_path: str) -> bool:
        return real_path == self._real_root or real_path.startswith(self._real_root + os.sep)

    @staticmethod
    def check_id(image_id: str) -> str:
        """Return ``image_id`` when it is a well-formed relative POSIX path, else raise :class:`InvalidImageId`."""
        if not isinstance(image_id, str) or not image_id:
            raise InvalidImageId(f"image id must be a non-empty string, got {image_id!r}")
        if "\x00" in image_id or "\\" in image_id or "%" in image_id:
            raise InvalidImageId(f"image id contains a forbidden character: {image_id!r}")
        if image_id.startswith("/") or os.path.isabs(image_id) or (len(image_id) > 1 and image_id[1] == ":"):
            raise InvalidImageId(f"image id must be relative to the image folder, got {image_id!r}")
        parts = image_id.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise InvalidImageId(f"image id must not contain empty, '.' or '..' components, got {image_id!r}")
        return image_id

    def resolve(self, image_id: str) -> tuple[Path, str]:
        """Path and MIME type of a servable image.

        Raises:
            InvalidImageId: malformed id (→ HTTP 400).
            FileNotFoundError: no such image inside the root, a symlink leaving it, a hidden path,
                a non-image extension or content (→ HTTP 404).
        """
        self.check_id(image_id)
        if any(part.startswith(".") for part in image_id.split("/")):
            raise FileNotFoundError(f"no image with id {image_id!r}")
        ext = os.path.splitext(image_id)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            raise FileNotFoundError(f"not an image (extension {ext!r}): {image_id!r}")
        path = os.path.join(self.root, *image_id.split("/"))
        real = os.path.realpath(path)
        if not self._inside(real) or not os.path.isfile(real):
            raise FileNotFoundError(f"no image with id {image_id!r}")
        # a symlinked directory component is never enumerated, so never serve through one either
        rel_parent = os.path.dirname(image_id)
        if rel_parent and os.path.realpath(os.path.join(self.root, rel_parent)) != os.path.join(
            self._real_root, *rel_parent.split("/")
        ):
            raise FileNotFoundError(f"no image with id {image_id!r}")
        with open(real, "rb") as fh:
            mime = sniff_image_type(fh.read(16))
        if mime is None:
            raise FileNotFoundError(f"not an image (content does not match an image format): {image_id!r}")
        return Path(real), mime

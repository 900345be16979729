"""resolve_pretrained: local dir -> Hub (a stand-in server on 127.0.0.1) -> bundled copy -> one clear error."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from torch_backswap import hub
from torch_backswap.hub import DEFAULT_SEGMENTER, PretrainedNotFoundError, resolve_pretrained

COMMIT = "0123456789abcdef0123456789abcdef01234567"

def _go_online(monkeypatch) -> None:
    """Lift the test session's offline mode for one test that talks to the stand-in Hub on 127.0.0.1: the env var
    (which torch_backswap.hub reads at call time) and huggingface_hub's flag (which it read at import)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


REPO = "acme/patchseg-test"


class _FakeHub:
    """Answers ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{file}`` like the Hub does for small files."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _answer(self, with_body: bool):
                fake.requests.append(f"{self.command} {self.path}")
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve" and "/".join(parts[:2]) == REPO:
                    filename = "/".join(parts[4:])
                    if filename in fake.files:
                        body = fake.files[filename]
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
                        self.send_header("X-Repo-Commit", COMMIT)
                        self.end_headers()
                        if with_body:
                            self.wfile.write(body)
                        return
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                else:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _model_dir(root: Path, tag: str = "local") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"tag": tag}))
    (root / "model.safetensors").write_bytes(b"weights-" + tag.encode())
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Point the Hub at a closed local port so that nothing can leave the machine."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _go_online(monkeypatch)
    monkeypatch.setattr(hub, "bundled_weight_roots", lambda: [])


def test_local_directory_first(tmp_path, no_network):
    directory = _model_dir(tmp_path / "m")
    assert resolve_pretrained(directory) == directory
    assert resolve_pretrained(str(directory)) == directory


def test_stand_in_hub_download_then_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "bundled_weight_roots", lambda: [])
    _go_online(monkeypatch)
    files = {"config.json": b'{"tag": "hub"}', "model.safetensors": b"hub-weights"}
    cache = tmp_path / "cache"
    with _FakeHub(files) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        path = resolve_pretrained(REPO, cache_dir=cache)
        assert fake.requests, "the stand-in Hub was not asked"
    assert path.name == COMMIT and cache in path.parents
    assert (path / "config.json").read_bytes() == files["config.json"]
    assert (path / "model.safetensors").read_bytes() == files["model.safetensors"]
    # the server is gone: offline mode (env var read at call time) answers from the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_pretrained(REPO, cache_dir=cache) == path
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_pretrained(REPO, cache_dir=cache, local_files_only=True) == path
    # and a dead endpoint falls back to the cache quickly, too
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert resolve_pretrained(REPO, cache_dir=cache) == path


def test_hub_missing_file_falls_through_to_error(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "bundled_weight_roots", lambda: [])
    with _FakeHub({"config.json": b"{}"}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(PretrainedNotFoundError) as info:
            resolve_pretrained(REPO, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "local directory" in message and "Hugging Face Hub" in message and "bundled" in message


def test_bundled_fallback(tmp_path, monkeypatch, no_network):
    bundled = tmp_path / "bundled"
    target = _model_dir(bundled / "patchseg-tiny-s16", "bundled")
    monkeypatch.setattr(hub, "bundled_weight_roots", lambda: [bundled])
    assert resolve_pretrained(DEFAULT_SEGMENTER, cache_dir=tmp_path / "cache") == target
    assert resolve_pretrained("patchseg-tiny-s16", cache_dir=tmp_path / "cache") == target
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_pretrained(DEFAULT_SEGMENTER, cache_dir=tmp_path / "cache") == target


def test_one_clear_error(tmp_path, no_network):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    with pytest.raises(PretrainedNotFoundError, match="lacks model.safetensors"):
        resolve_pretrained(incomplete)
    with pytest.raises(FileNotFoundError) as info:
        resolve_pretrained("nobody/nothing", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "'nobody/nothing'" in message
    assert message.count("\n  - ") == 3  # local, Hub, bundled
    with pytest.raises(ValueError, match="name_or_path"):
        resolve_pretrained("")


def test_bundled_roots_include_checkout_weights():
    roots = hub.bundled_weight_roots()
    checkout = Path(hub.__file__).resolve().parents[1]
    if (checkout / "weights").is_dir() and (checkout / "pyproject.toml").is_file():
        assert checkout / "weights" in roots


def test_corrupt_files_from_the_hub_name_the_cached_file(tmp_path, monkeypatch):
    """A Hub repo with broken weights or config: the error names the file in the HF cache, not just the repo."""
    from torch_backswap._io import BackswapFileError
    from torch_backswap.segmenter import PatchSegmenter

    monkeypatch.setattr(hub, "bundled_weight_roots", lambda: [])
    _go_online(monkeypatch)
    config = json.dumps({"grid_size": 4, "width": 8, "input_size": 32}).encode()
    for files, broken, fragment in (
        ({"config.json": config, "model.safetensors": b"hub-weights"}, "model.safetensors",
         "segmenter weights file is not a readable safetensors file"),
        ({"config.json": b"{grid_size: 4", "model.safetensors": b"x"}, "config.json",
         "segmenter config is not valid JSON"),
    ):
        cache = tmp_path / broken
        with _FakeHub(files) as fake:
            monkeypatch.setenv("HF_ENDPOINT", fake.url)
            with pytest.raises(BackswapFileError) as info:
                PatchSegmenter.from_pretrained(REPO, cache_dir=cache)
        path = Path(info.value.path)
        assert path.name == broken and cache in path.parents and path.parent.name == COMMIT
        assert str(info.value).startswith(f"{path}: {fragment}")


@pytest.mark.parametrize("name, loader", [("torch-backswap/patchseg-tiny-s16", "PatchSegmenter"),
                                          ("torch-backswap/edgerefine-tiny", "EdgeRefiner")])
def test_bundled_weights_carry_a_checksum_so_a_same_size_corruption_is_caught(tmp_path, name, loader):
    """Every bundled model.safetensors records the sha256 of its tensors (the segmenter's did not, so a flipped
    byte that still parses loaded silently); a copy with one tensor byte flipped raises the package's file error."""
    import shutil

    import torch_backswap
    from safetensors import safe_open

    from torch_backswap._io import CHECKSUM_KEY, BackswapFileError

    cls = getattr(torch_backswap, loader)
    bundled = hub.find_bundled(name)
    assert bundled is not None
    with safe_open(str(bundled / "model.safetensors"), framework="pt") as handle:
        assert CHECKSUM_KEY in (handle.metadata() or {})
    cls.from_pretrained(bundled)  # the bundled copy matches its checksum
    copy = tmp_path / name.split("/")[-1]
    shutil.copytree(bundled, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's bytes: the header still parses, the size is the same
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BackswapFileError, match=r"model.safetensors: .*corrupt: its tensors do not match the sha256"):
        cls.from_pretrained(copy)

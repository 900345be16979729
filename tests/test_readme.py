"""The README's usage example runs as written (it is the first ```python block of README.md)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed test run without the source tree)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no ```python example"
    monkeypatch.chdir(tmp_path)  # the example saves bank.safetensors to the working directory
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert (tmp_path / "bank.safetensors").is_file()
    x, images, labels = namespace["x"], namespace["images"], namespace["labels"]
    assert tuple(x.shape) == (3, 64, 64) and str(x.dtype) == "torch.float32"
    assert tuple(images.shape) == (32, 3, 64, 64) and tuple(labels.shape) == (32,)

"""Build hook: ship the top-level ``weights/`` folder inside the wheel.

The pretrained segmenters live in ``weights/<name>/`` (Hugging Face Hub layout) at the top of the
repository. ``build_py`` copies them to ``torch_backswap/bundled_weights/<name>/`` in the wheel, where
:func:`torch_backswap.hub.resolve_pretrained` finds them when neither a local directory nor the Hub
answers. From a source checkout (editable install) the resolver reads ``weights/`` directly.
"""

from pathlib import Path
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

WEIGHT_FILES = ("config.json", "model.safetensors", "README.md", "history.json")


class BuildPyWithWeights(build_py):
    def run(self):
        super().run()
        source = Path(__file__).parent / "weights"
        target = Path(self.build_lib) / "torch_backswap" / "bundled_weights"
        for model_dir in sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []:
            if not (model_dir / "model.safetensors").is_file():
                continue
            out = target / model_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for name in WEIGHT_FILES:
                if (model_dir / name).is_file():
                    shutil.copy2(model_dir / name, out / name)


setup(cmdclass={"build_py": BuildPyWithWeights})

"""The file-error matrix of issue 11: broken label, weights and config files, one case per line.

Runs each case against the ``torch_backswap`` that Python imports and prints ``kind | case || outcome`` (the
labels read, or the exception type and its message, with the temporary folder left out). Run it against an
older tree for the "before" column, then print both as a table (``--write`` also puts it in
``benchmarks/RESULTS.md``)::

    mkdir -p /tmp/old && git archive c938f30 torch_backswap | tar -x -C /tmp/old
    (cd /tmp && PYTHONPATH=/tmp/old python /work/main/benchmarks/file_error_matrix.py > /tmp/before.txt)
    python -m benchmarks.file_error_matrix --before /tmp/before.txt --before-name c938f30

(the "before" run starts in another folder so that ``PYTHONPATH`` wins over the checkout).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from benchmarks._common import before_after_table

_BASE = {"format": "backswap-patch-labels", "version": 1, "grid_size": 2}
_ENTRIES = [{"image": "a.png", "mask": "1001"}, {"image": "b.png", "mask": "0011"}, {"image": "c.png", "mask": "1111"}]


def _label_cases(root: Path) -> dict[str, Callable[[], object]]:
    from torch_backswap.labels import PatchLabels

    good = PatchLabels(["a.png", "b.png", "c.png"],
                       torch.tensor([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool).view(3, 2, 2))
    texts = {"ours-csv": good.to_text("backswap"), "paper-csv": good.to_text("paper"), "json": good.to_text("json")}
    suffix = {"ours-csv": ".csv", "paper-csv": ".csv", "json": ".json"}

    def case(name: str, content: str | bytes, ext: str) -> Callable[[], object]:
        path = root / f"{name}{ext}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return lambda: PatchLabels.read(path)

    def flip_high_bit(text: str, at: int) -> bytes:
        data = bytearray(text.encode())
        data[at] ^= 0x80
        return bytes(data)

    nul = {"ours-csv": (",2,0", ",2,\0"), "paper-csv": (",0", ",\0"), "json": ("0", "\0")}
    cases = {}
    for kind, text in texts.items():
        ext = suffix[kind]
        cases[f"{kind} | zero-byte"] = case(f"{kind}-zero", b"", ext)
        cases[f"{kind} | truncated mid-row"] = case(f"{kind}-trunc", text[: len(text) * 2 // 3], ext)
        cases[f"{kind} | byte flipped to non-UTF-8"] = case(f"{kind}-flip", flip_high_bit(text, len(text) // 2), ext)
        cases[f"{kind} | NUL byte in a mask"] = case(f"{kind}-nul", text.replace(*nul[kind], 1), ext)
        cases[f"{kind} | foreign binary (PNG header)"] = case(f"{kind}-png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", ext)
    for kind in ("ours-csv", "paper-csv"):
        head, first, third, last = texts[kind].splitlines(keepends=True)
        rows = {
            "header only": head,
            "wrong header": "name,bits\n" + first + third + last,
            "extra column on line 3": head + first + third.rstrip("\n") + ",x\n" + last,
            "'2' in a mask on line 3": head + first + third.replace("0011", "0021") + last,
            "mask of 3 chars on line 3": head + first + third.replace("0011", "001") + last,
            "duplicate id on line 3": head + first + third.replace("b.png", "a.png") + last,
            "unterminated quote on line 3": head + first + '"' + third + last,
            "200 KB field on line 3": head + first + third.replace("0011", "0" * 200_000) + last,
        }
        for title, content in rows.items():
            cases[f"{kind} | {title}"] = case(f"{kind}-{len(cases)}", content, ".csv")
    ours = texts["ours-csv"]
    cases["ours-csv | grid_size 'two' on line 3"] = case("ours-gs", ours.replace("b.png,2", "b.png,two"), ".csv")
    cases["ours-csv | grid_size 0 on line 3"] = case("ours-gs0", ours.replace("b.png,2,0011", "b.png,0,"), ".csv")

    def doc(**changes) -> str:
        return json.dumps({**_BASE, "labels": _ENTRIES, **changes})

    a, b, c = _ENTRIES
    documents = {
        "not JSON (CSV text)": ours,
        "top-level list": json.dumps(_ENTRIES),
        "no 'labels'": json.dumps(_BASE),
        "grid_size 2.5": doc(grid_size=2.5),
        "grid_size true": doc(grid_size=True, labels=[{"image": "a", "mask": "1"}]),
        "grid_size '2' (string)": doc(grid_size="2"),
        "mask 1001 (a number)": doc(labels=[{"image": "a.png", "mask": 1001}]),
        "image 7 (a number)": doc(labels=[{"image": 7, "mask": "1001"}]),
        "entry is a string": doc(labels=["a.png"]),
        "2nd of 3 entries lacks 'image' (real line 7)": texts["json"].replace('"image": "b.png", ', ""),
        "bad mask in entry 3 of a one-line file (line 1)": doc(labels=[a, b, {"image": "c.png", "mask": "11x1"}]),
        "bad mask in entry 2 of an indent=2 file (entry on line 10, mask on line 11)":
            json.dumps({**_BASE, "labels": [a, {"mask": "10x1", "image": "b.png"}, c]}, indent=2),
        "format 'something-else'": doc(format="something-else"),
        "version 2 (newer)": doc(version=2),
        "version '1' (string)": doc(version="1"),
        "100 000 nested arrays": "[" * 100_000 + "]" * 100_000,
    }
    for title, content in documents.items():
        cases[f"json | {title}"] = case(f"js-{len(cases)}", content, ".json")
    cases["labels | file does not exist"] = lambda: PatchLabels.read(root / "nope.csv")
    cases["labels | path is a directory"] = lambda: PatchLabels.read(root)
    return cases


def _weights_cases(root: Path) -> dict[str, Callable[[], object]]:
    from safetensors.torch import save as safetensors_bytes

    from torch_backswap.segmenter import PatchSegmenter

    model = PatchSegmenter(grid_size=4, width=8, input_size=32)
    model.save_pretrained(root / "ok")
    weights = (root / "ok" / "model.safetensors").read_bytes()
    config = json.loads((root / "ok" / "config.json").read_text())

    def case(name: str, config_bytes: bytes | None = None, weights_bytes: bytes | None = None,
             drop: str | None = None) -> Callable[[], object]:
        directory = root / name
        model.save_pretrained(directory)
        if config_bytes is not None:
            (directory / "config.json").write_bytes(config_bytes)
        if weights_bytes is not None:
            (directory / "model.safetensors").write_bytes(weights_bytes)
        if drop:
            (directory / drop).unlink()
        return lambda: PatchSegmenter.from_pretrained(directory, local_files_only=True)

    def with_config(**changes) -> bytes:
        return json.dumps({**config, **changes}).encode()

    data_flip = bytearray(weights)
    data_flip[-3] ^= 1
    other = safetensors_bytes(PatchSegmenter(grid_size=4, width=16, input_size=32).state_dict())
    return {
        "weights | zero-byte model.safetensors": case("w-zero", weights_bytes=b""),
        "weights | truncated model.safetensors (half)": case("w-trunc", weights_bytes=weights[: len(weights) // 2]),
        "weights | truncated inside the header (20 bytes)": case("w-trunc20", weights_bytes=weights[:20]),
        "weights | not safetensors (a pickle)": case("w-pickle", weights_bytes=b"\x80\x04\x95" + b"\0" * 64),
        "weights | not safetensors (text)": case("w-text", weights_bytes=b"hello, these are not weights\n" * 10),
        "weights | header length byte flipped": case("w-flip", weights_bytes=bytes([weights[0] ^ 0x10]) + weights[1:]),
        "weights | foreign safetensors (other tensor names)":
            case("w-foreign", weights_bytes=safetensors_bytes({"fc.weight": torch.zeros(2, 2)})),
        "weights | safetensors of a width-16 model (shape mismatch)": case("w-shape", weights_bytes=other),
        "weights | one tensor byte flipped (still well-formed)": case("w-dataflip", weights_bytes=bytes(data_flip)),
        "weights | model.safetensors missing": case("w-missing", drop="model.safetensors"),
        "config | config.json missing": case("c-missing", drop="config.json"),
        "config | zero-byte config.json": case("c-zero", config_bytes=b""),
        "config | config.json not JSON": case("c-notjson", config_bytes=b"grid_size: 4\n"),
        "config | config.json truncated": case("c-trunc", config_bytes=json.dumps(config)[:15].encode()),
        "config | config.json is a list": case("c-list", config_bytes=b"[4, 8]"),
        "config | config.json not UTF-8": case("c-utf8", config_bytes=b'{"grid_size": 4, "backbone": "\xff"}'),
        "config | grid_size '4' (string)": case("c-gs", config_bytes=with_config(grid_size="4")),
        "config | dropout null": case("c-drop", config_bytes=with_config(dropout=None)),
        "config | backbone 'vgg99'": case("c-bb", config_bytes=with_config(backbone="vgg99")),
        "config | width 16 (weights are for width 8)": case("c-mismatch", config_bytes=with_config(width=16)),
        "weights | directory does not exist":
            lambda: PatchSegmenter.from_pretrained(root / "nothing-here", local_files_only=True),
    }


def _bank_cases(root: Path) -> dict[str, Callable[[], object]]:
    """Issue 24: missing bank files (one error class for every file), corrupted shards on resume, the bundled
    default segmenter's checksum."""
    from torch_backswap.bank import BackgroundBank

    bank = BackgroundBank(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    sharded = bank.save(root / "bank-sharded", shard_size=2)
    (sharded / "shard-00001.safetensors").unlink()
    (root / "bank-empty-dir").mkdir()
    def caught_by_file_error() -> str:
        from torch_backswap import BackswapFileError, PatchSegmenter

        missing = {"bank file": lambda: BackgroundBank.load(root / "nope.safetensors"),
                   "bank manifest": lambda: BackgroundBank.load(root / "bank-empty-dir"),
                   "weights folder": lambda: PatchSegmenter.from_pretrained(root / "nope", local_files_only=True),
                   "labels file": lambda: __import__("torch_backswap.labels").labels.PatchLabels.read(root / "n.csv")}
        caught = []
        for what, load in missing.items():
            try:
                load()
            except BackswapFileError:
                caught.append(what)
            except FileNotFoundError:
                pass
        return f"caught: {caught or 'none'}"

    def bundled_flipped() -> object:
        import shutil

        from torch_backswap.hub import find_bundled
        from torch_backswap.segmenter import PatchSegmenter

        copy = root / "patchseg-flipped"
        shutil.copytree(find_bundled("torch-backswap/patchseg-tiny-s16"), copy)
        data = bytearray((copy / "model.safetensors").read_bytes())
        data[-3] ^= 0x01
        (copy / "model.safetensors").write_bytes(bytes(data))
        return PatchSegmenter.from_pretrained(copy, local_files_only=True)

    def resume_over_flipped_shard() -> str:
        from torch_backswap.build import build_bank

        images = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        holes = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
        holes[:, :, 2:6, 2:6] = True
        out = root / "bank-resume"

        def build():
            return build_bank(images, [0, 1, 0, 1], holes=holes, out=out, shard_size=2, progress=False)

        first = build()
        shard = out / first.shards[1].file
        data = bytearray(shard.read_bytes())
        data[-5] ^= 0x10
        shard.write_bytes(bytes(data))
        again = build()
        return (f"rebuilt {again.build_stats['images']} images; manifest sha256 of shard 1 kept: "
                f"{again.shards[1].sha256 == first.shards[1].sha256}; loads: {len(BackgroundBank.load(out))}")

    def overwrite_killed() -> object:
        import torch_backswap.bank as bank_module

        target = root / "bank-overwrite"
        bank.save(target, shard_size=2)
        real, calls = bank_module.write_shard, []

        def dies_after_one(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        bank_module.write_shard = dies_after_one
        try:
            BackgroundBank(255 - bank.backgrounds, bank.labels).save(target, shard_size=2)
        except KeyboardInterrupt:
            pass
        finally:
            bank_module.write_shard = real
        loaded = BackgroundBank.load(target)
        return f"loads the old bank: {torch.equal(loaded.backgrounds, bank.backgrounds)}"

    return {
        "bank | sharded save over a sharded bank, killed after its first shard": overwrite_killed,
        "bank | resume a sharded build over a shard with one tensor byte flipped": resume_over_flipped_shard,
        "weights | bundled patchseg-tiny-s16 copy, one tensor byte flipped (same size)": bundled_flipped,
        "any | missing bank file, manifest, weights folder, labels file: except BackswapFileError": caught_by_file_error,
        "bank | bank file does not exist": lambda: BackgroundBank.load(root / "nope.safetensors"),
        "bank | sharded bank without manifest.json": lambda: BackgroundBank.load(root / "bank-empty-dir"),
        "bank | a shard listed in manifest.json missing": lambda: BackgroundBank.load(sharded),
    }


RESULTS_JSON = Path(__file__).resolve().parent / "results" / "file_error_matrix.json"

def run_cases() -> dict[str, str]:
    """``{"kind | case": outcome}`` for every case, in order (the files live in a temporary folder, removed after)."""
    with tempfile.TemporaryDirectory(prefix="backswap-file-matrix-") as tmp:
        return _run_cases(Path(tmp))


def _run_cases(root: Path) -> dict[str, str]:
    from torch_backswap.labels import PatchLabels

    outcomes = {}
    for name, run in {**_label_cases(root), **_weights_cases(root), **_bank_cases(root)}.items():
        try:
            out = run()
        except Exception as err:  # noqa: BLE001 - the outcome is what we record
            message = str(err).replace(str(root) + "/", "").replace(str(root), "<dir>").replace("\n", " ")
            outcomes[name] = f"{type(err).__name__}: {message[:297] + '...' if len(message) > 300 else message}"
        else:
            shown = f"{len(out)} labels, S={out.grid_size}, ids={out.ids[:3]}" if isinstance(out, PatchLabels) else ""
            outcomes[name] = f"OK: {out}" if isinstance(out, str) else f"OK: {type(out).__name__} {shown}".rstrip()
    return outcomes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="file-error matrix: broken label, weights and config files")
    parser.add_argument("--before", type=Path, help="this script's output for an older tree")
    parser.add_argument("--before-name", default="before", help="what the older tree is (e.g. a commit)")
    parser.add_argument("--write", action="store_true", help="also store the cases in benchmarks/results/ (RESULTS.md is rendered from there)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    after = run_cases()
    table = before_after_table(after, args.before, args.before_name, ("file", "case"))
    if table is None:
        return
    print(table)
    if args.write:
        from benchmarks._common import write_case_matrix

        command = f"python -m benchmarks.file_error_matrix --before {args.before} --before-name {args.before_name} --write"
        path = write_case_matrix(RESULTS_JSON, title='File errors, before and after', command=command, columns=("file", "case"),
                                 before_file=args.before, before_name=args.before_name, after=after,
                                 note='')
        print(f"wrote {path}; python -m benchmarks.report renders it into RESULTS.md")

if __name__ == "__main__":
    main()

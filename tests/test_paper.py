"""``python -m benchmarks.paper --smoke``: every table of the paper's recipe runs end to end on the fixtures."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import paper


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert paper.main(["--smoke", "--out-dir", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("table", paper.TABLES)
def test_every_table_writes_the_stampbirds_result_layout(smoke, table):
    records = json.loads((smoke / "results" / f"paper_{table}.json").read_text())
    assert set(records) == {"erm/seed0", "backswap/seed0"}
    for record in records.values():
        assert 0.0 <= record["worst_group"] <= record["average"] + 1e-9 and record["average"] <= 1.0
        groups = {int(k): v for k, v in record["groups"].items()}
        assert record["worst_group"] == min(groups.values())
        assert all(0.0 <= v <= 1.0 for v in groups.values())
    settings = records["backswap/seed0"]["settings"]
    family = "spawrious" if table.startswith("spawrious") else ("imagenet9" if table == "imagenet9" else "waterbirds")
    assert settings["patch_threshold"] == paper.PAPER[family]["patch_threshold"]
    assert settings["translate_px"] == paper.PAPER[family]["translate_px"]
    assert records["backswap/seed0"]["n_labeled"] > 0 and records["backswap/seed0"]["bank"] > 0


def test_tables_report_their_background_gap(smoke):
    wb = json.loads((smoke / "results" / "paper_waterbirds.json").read_text())
    assert -1.0 <= wb["erm/seed0"]["bg_gap"]["gap"] <= 1.0 and wb["erm/seed0"]["bg_gap"]["n"] > 0
    in9 = json.loads((smoke / "results" / "paper_imagenet9.json").read_text())
    gap = in9["backswap/seed0"]["in9_bg_gap"]
    assert gap["gap"] == pytest.approx(gap["own_accuracy"] - gap["other_accuracy"])
    assert "mixed_same vs mixed_rand" in gap["method"]


def test_no_minority_table_trains_without_the_minority_groups(tmp_path):
    from benchmarks.paper_fixtures import write_waterbirds
    from torch_backswap.datasets import Waterbirds

    write_waterbirds(tmp_path, {"train": [3, 1, 1, 3], "val": [1, 1, 1, 1], "test": [1, 1, 1, 1]}, size=16)
    args = paper.main.__globals__["argparse"].Namespace(
        root=str(tmp_path), size=16, segmentations=None, num_workers=0, progress=False)
    train, val, test, classes, ids = paper.load_table("waterbirds_no_minority", args)
    assert set(train.groups.tolist()) == {0, 3} and len(train.labels) == 6
    assert set(test.groups.tolist()) == {0, 1, 2, 3} and train.masks is not None
    assert ids == Waterbirds(tmp_path, "train", keep_groups=(0, 3)).ids

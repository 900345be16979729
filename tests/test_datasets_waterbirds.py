"""Waterbirds loader on a tiny synthetic copy of the real layout, and against the real metadata.csv."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from benchmarks.paper_fixtures import write_waterbirds
from torch_backswap.alpha import ObjectAlpha
from torch_backswap.datasets import DatasetFileError, Waterbirds
from torch_backswap.labels import PatchLabels

DATA = Path(__file__).parent / "data"  # copies of ../shared/data fixtures (provenance: tests/data/README.md)
REAL_METADATA = DATA / "waterbirds_metadata.csv"
PAPER_LABELS = DATA / "paper_waterbirds_patch_labels.csv"
COUNTS = {"train": [6, 2, 2, 6], "val": [2, 2, 2, 2], "test": [3, 3, 3, 3]}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb")
    write_waterbirds(root, COUNTS)
    return root


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_counts_labels_places_per_split(root, split):
    ds = Waterbirds(root, split)
    assert list(ds.group_counts().values()) == COUNTS[split]
    assert len(ds) == sum(COUNTS[split])
    assert torch.equal(ds.groups, 2 * ds.labels + ds.places)
    # the class folder says it: albatross / gull / pelican are waterbirds in the fixture
    water_folders = ("001.", "059.", "100.")
    assert [int(n.startswith(water_folders)) for n in ds.img_filenames] == ds.targets
    assert ds.classes == ["landbird", "waterbird"] and ds.n_groups == 4


def test_root_may_be_the_dataset_folder_and_item_is_pil(root):
    ds = Waterbirds(root / "waterbird_complete95_forest2water2", "test")
    image, label = ds[0]
    assert image.mode == "RGB" and image.size == (48, 48)
    assert label == int(ds.labels[0])
    assert ds.ids[0].isdigit()


def test_masks_are_object_alpha_aligned_with_the_bird(root):
    ds = Waterbirds(root, "train", return_masks=True)
    sample = ds[3]
    assert isinstance(sample["image"], tv_tensors.Image) and isinstance(sample["alpha"], ObjectAlpha)
    image, alpha = sample["image"].float(), sample["alpha"][0] > 0.5
    # the fixture's bird is a flat colour, its background another one: the mask must cover the former
    inside = image[:, alpha].mean(1)
    outside = image[:, ~alpha].mean(1)
    assert (inside - outside).abs().sum() > 100
    assert image[:, alpha].std(1).mean() < image.std((1, 2)).mean()


def test_v2_transform_moves_the_alpha_with_the_image(root):
    flip = v2.RandomHorizontalFlip(p=1.0)
    plain = Waterbirds(root, "train", return_masks=True)[0]
    flipped = Waterbirds(root, "train", return_masks=True, transform=flip)[0]
    assert torch.equal(flipped["alpha"], plain["alpha"].flip(-1))
    assert isinstance(flipped["alpha"], ObjectAlpha)


def test_patch_labels_from_segmentations_use_the_paper_threshold(root):
    ds = Waterbirds(root, "train")
    labels = ds.patch_labels(grid_size=16)
    assert ds.patch_threshold == 0.25
    assert labels.ids == ds.ids  # every fixture bird is big enough to light some cell
    grid = labels[ds.ids[0]]
    covered = torch.nn.functional.adaptive_avg_pool2d((ds.mask(0) > 0.5).float()[None], 16)[0, 0]
    assert torch.equal(grid, covered >= 0.25 - 1e-6)
    strict = ds.patch_labels(grid_size=16, threshold=0.9)
    assert strict.grids.sum() < labels.grids.sum()


def test_keep_groups_drops_the_minority_groups(root):
    ds = Waterbirds(root, "train", keep_groups=(0, 3))
    assert set(ds.groups.tolist()) == {0, 3} and len(ds) == 12
    assert len(ds.mask_files) == 12


def test_missing_image_names_the_file(tmp_path):
    base = write_waterbirds(tmp_path, {"train": [1, 1, 1, 1], "val": [1, 0, 0, 1], "test": [1, 1, 1, 1]},
                            segmentations=False)
    victim = sorted(base.glob("*/*.jpg"))[2]
    victim.unlink()
    with pytest.raises(DatasetFileError) as err:
        Waterbirds(tmp_path, "all")
    assert err.value.path == str(victim) and "missing" in str(err.value)


def test_missing_metadata_and_masks_explain_the_layout(tmp_path):
    with pytest.raises(DatasetFileError, match="img_id,img_filename,y,split,place,place_filename"):
        Waterbirds(tmp_path)
    base = write_waterbirds(tmp_path, {"train": [1, 1, 1, 1], "val": [1, 1, 1, 1], "test": [1, 1, 1, 1]},
                            segmentations=False)
    with pytest.raises(ValueError, match="segmentations"):
        Waterbirds(tmp_path, return_masks=True)
    (base / "metadata.csv").write_text("img_id,img_filename,y,split\n1,a.jpg,1,0\n")
    with pytest.raises(DatasetFileError, match="missing column"):
        Waterbirds(tmp_path)


def _serve(directory: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_from_a_local_server_checks_md5(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    src = tmp_path / "src"
    write_waterbirds(src, {"train": [1, 1, 1, 1], "val": [1, 1, 1, 1], "test": [1, 1, 1, 1]}, segmentations=False)
    serve = tmp_path / "serve"
    serve.mkdir()
    archive = serve / "waterbird_complete95_forest2water2.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "waterbird_complete95_forest2water2", arcname="waterbird_complete95_forest2water2")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    server = _serve(serve)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        ds = Waterbirds(tmp_path / "dl", "test", download=True, url=url, md5=md5)
        assert len(ds) == 4
        again = Waterbirds(tmp_path / "dl", "test", download=True, url="http://127.0.0.1:9/never-fetched")
        assert len(again) == 4  # already there: nothing downloaded
        with pytest.raises(DatasetFileError):
            Waterbirds(tmp_path / "bad", "test", download=True, url=url, md5="0" * 32)
    finally:
        server.shutdown()


def test_group_counts_of_the_real_metadata(tmp_path, monkeypatch):
    base = tmp_path / "waterbird_complete95_forest2water2"
    base.mkdir()
    shutil.copy(REAL_METADATA, base / "metadata.csv")
    checked = []
    # only the metadata is real here: record the image paths instead of requiring 11 788 files
    monkeypatch.setattr(Waterbirds, "_check_files", lambda self: checked.append(self.files))
    expected = {"train": [3498, 184, 56, 1057], "val": [467, 466, 133, 133], "test": [2255, 2255, 642, 642]}
    for split, counts in expected.items():
        assert list(Waterbirds(tmp_path, split).group_counts().values()) == counts
    everything = Waterbirds(tmp_path, "all")
    assert len(everything) == 11788 and len(set(everything.ids)) == 11788
    assert checked[-1][0] == base / "001.Black_footed_Albatross" / "Black_Footed_Albatross_0046_18.jpg"

    # the paper's hand-made masks.csv: every id is a Waterbirds img_id
    labels = PatchLabels.read(PAPER_LABELS)
    assert labels.grid_size == 16 and len(labels) == 287
    known = set(everything.ids)
    unknown = [i for i in labels.ids if i not in known]
    assert unknown == []
    # they were drawn from the majority groups only (landbird/land, waterbird/water) of all three
    # splits -- the test split included, so a segmenter trained on them has seen test birds
    group_of = dict(zip(everything.ids, everything.groups.tolist()))
    assert {group_of[i] for i in labels.ids} == {0, 3}
    split_of = {i: s for s in ("train", "val", "test") for i in Waterbirds(tmp_path, s).ids}
    assert {split_of[i] for i in labels.ids} == {"train", "val", "test"}


def test_background_gap_reads_the_object_alpha_of_dataset_dicts(root):
    from torch_backswap.bank import BackgroundBank
    from torch_backswap.diagnose import background_gap

    ds = Waterbirds(root, "test", return_masks=True, transform=v2.Resize((24, 24), antialias=True))
    assert isinstance(ds[0]["alpha"], ObjectAlpha) and ds[0]["alpha"].shape == (1, 24, 24)
    water = torch.tensor([40, 90, 200], dtype=torch.uint8)[:, None, None].expand(3, 24, 24)
    land = torch.tensor([70, 140, 60], dtype=torch.uint8)[:, None, None].expand(3, 24, 24)
    bank = BackgroundBank(torch.stack([land, water, land, water]).contiguous(), torch.tensor([0, 1, 0, 1]))

    def place_model(x):  # says "waterbird" when the top-left corner is blue: pure background reliance
        return torch.stack([x[:, 1, 0, 0], x[:, 2, 0, 0]], 1)

    gap = background_gap(place_model, ds, bank)
    assert gap.n == len(ds) and gap.own_accuracy == 1.0 and gap.other_accuracy == 0.0

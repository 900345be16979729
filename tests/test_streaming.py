"""StreamingBackgroundBank: bounded working set, class balance over the whole bank across refills, same interface."""

import pickle

import pytest
import torch

from torch_backswap.bank import BackgroundBank
from torch_backswap.streaming import StreamingBackgroundBank

IMAGE_BYTES = 3 * 8 * 8


def _labelled_bank(tmp_path, counts=(300, 60, 12), shard_size=50, single_file=False):
    """Backgrounds whose first two pixels encode their own global index (so content can be checked)."""
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    n = labels.shape[0]
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, 0, 0, 0] = (torch.arange(n) % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (torch.arange(n) // 256).to(torch.uint8)
    bank = BackgroundBank(images, labels, classes=["a", "b", "c"][: len(counts)])
    path = tmp_path / ("bank.safetensors" if single_file else "bank")
    bank.save(path, shard_size=None if single_file else shard_size)
    return bank, path


def _ids(out):
    return out[:, 0, 0, 0].long() + 256 * out[:, 0, 0, 1].long()


def test_class_balanced_over_the_whole_bank_across_refills(tmp_path):
    resident, path = _labelled_bank(tmp_path)
    bank = StreamingBackgroundBank(path, max_bytes=40 * IMAGE_BYTES, block=4, background=False)
    assert bank.resident == 36 and bank.resident_bytes <= 40 * IMAGE_BYTES < resident.backgrounds.nbytes
    g = torch.Generator().manual_seed(0)
    drawn = torch.zeros(len(bank))
    for _ in range(2500):
        out, idx = bank.sample(4, generator=g, return_indices=True)
        assert torch.equal(_ids(out), idx)  # every background is the one its index names
        assert torch.equal(out, resident.backgrounds[idx])
        drawn += torch.bincount(idx, minlength=len(bank))
    freq = torch.bincount(resident.labels, weights=drawn, minlength=3) / drawn.sum()
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.03)
    assert bool((drawn > 0).all())  # the working set slid around every class: each background was drawn
    big = drawn[:300]  # class 0 (300 backgrounds, 12 slots): roughly uniform within the class over time
    assert big.std() / big.mean() < 0.5
    assert bank.stats["misses"] == 0 and bank.stats["refills"] == 2500 and bank.resident_bytes <= 40 * IMAGE_BYTES


def test_same_class_draws_as_the_resident_bank_and_reproducible(tmp_path):
    resident, path = _labelled_bank(tmp_path)
    a = StreamingBackgroundBank(path, max_bytes=40 * IMAGE_BYTES, block=4, background=False)
    b = StreamingBackgroundBank(path, max_bytes=40 * IMAGE_BYTES, block=4, background=False)
    for strategy, labels in (("class_balanced", None), ("other_class", torch.tensor([0, 1, 2, 2, 1, 0]))):
        ga, gb, gr = (torch.Generator().manual_seed(5) for _ in range(3))
        for _ in range(20):
            ia = a.sample_indices(6, labels, strategy, ga)
            assert torch.equal(ia, b.sample_indices(6, labels, strategy, gb))  # reproducible
            ir = resident.sample_indices(6, labels, strategy, gr)
            assert torch.equal(a.labels[ia], resident.labels[ir])  # the class of every draw is the resident bank's
            if labels is not None:
                assert not bool((a.labels[ia] == labels).any())
    uni = a.sample_indices(6000, strategy="uniform", generator=torch.Generator().manual_seed(0))
    assert (a.labels[uni] == 0).float().mean().item() == pytest.approx(300 / 372, abs=0.03)


def test_gather_any_index_and_interface(tmp_path):
    resident, path = _labelled_bank(tmp_path, single_file=True)
    bank = StreamingBackgroundBank(path, max_bytes=20 * IMAGE_BYTES, block=2, background=False)
    idx = torch.tensor([0, 371, 5, 299, 300])  # mostly not resident: read from the file
    assert torch.equal(bank.gather(idx), resident.backgrounds[idx]) and bank.stats["misses"] >= 3
    assert bank.gather(idx, size=(12, 10)).shape == (5, 3, 12, 10)
    assert bank.sample(3, size=16).shape == (3, 3, 16, 16)
    with pytest.raises(IndexError, match="372"):
        bank.gather([372])
    assert len(bank) == 372 and bank.size == (8, 8) and bank.classes == ["a", "b", "c"]
    assert bank.present_classes == [0, 1, 2] and bank.labels.dtype == torch.int64
    assert bank.to("cpu") is bank and bank.cpu() is bank and bank.share_memory_() is bank
    clone = pickle.loads(pickle.dumps(bank))
    assert clone.device.type == "cpu" and torch.equal(clone.gather(idx), resident.backgrounds[idx])
    with pytest.raises(ValueError, match="max_bytes"):
        StreamingBackgroundBank(path, max_bytes=3 * IMAGE_BYTES)


def test_background_thread_refills_without_misses(tmp_path):
    resident, path = _labelled_bank(tmp_path)
    bank = StreamingBackgroundBank(path, max_bytes=40 * IMAGE_BYTES, block=4)
    g = torch.Generator().manual_seed(1)
    seen = set()
    try:
        for _ in range(600):
            out, idx = bank.sample(8, generator=g, return_indices=True)
            assert torch.equal(out, resident.backgrounds[idx])
            seen.update(idx.tolist())
        bank.close()
        assert bank.stats["refills"] > 0 and bank.stats["misses"] == 0
        assert len(seen) > bank.resident  # backgrounds beyond the first working set were drawn
    finally:
        bank.close()


def test_background_swap_accepts_a_streaming_bank(tmp_path):
    from torchvision import tv_tensors

    from torch_backswap import BackgroundSwap
    from torch_backswap.alpha import ObjectAlpha

    _, path = _labelled_bank(tmp_path, counts=(20, 20))
    bank = StreamingBackgroundBank(path, max_bytes=12 * IMAGE_BYTES, block=2, background=False)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    alpha = torch.zeros(4, 1, 32, 32)
    alpha[:, :, 10:22, 10:22] = 1.0
    out = BackgroundSwap(bank, seed=0)((tv_tensors.Image(images), ObjectAlpha(alpha), torch.tensor([0, 1, 0, 1])))
    assert isinstance(out[0], tv_tensors.Image) and out[0].shape == images.shape
    assert (out[0][..., :4, :4] != images[..., :4, :4]).float().mean() > 0.5  # the corners are new background

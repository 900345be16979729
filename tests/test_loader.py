"""DeviceSwapLoader: batches arrive on the device swapped, with the wrapped loader's structure and length."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from torch_backswap import BackgroundBank, BackgroundSwap
from torch_backswap.loader import DeviceSwapLoader
from torch_backswap.functional import Compositing

B, N, S = 4, 10, 32


def _scene(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N, 3, S, S), generator=g, dtype=torch.uint8)
    alpha = torch.zeros(N, 1, S, S, dtype=torch.uint8)
    for i in range(N):
        alpha[i, :, 6 + i % 5 : 20 + i % 5, 8 : 22] = 255
    labels = torch.arange(N) % 2
    bank = BackgroundBank(torch.randint(0, 256, (6, 3, S, S), generator=g, dtype=torch.uint8), torch.arange(6) % 2)
    return images, alpha, labels, bank


class _Dicts(Dataset):
    def __init__(self, images, alpha, labels):
        self.images, self.alpha, self.labels = images, alpha, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"label": int(self.labels[i]), "image": self.images[i], "alpha": self.alpha[i], "index": i}


def _segmenter(images):
    """A stand-in segmenter: the centre 2x2 cells of a 4x4 grid are the object (confident logits)."""
    logits = torch.full((images.shape[0], 4, 4), -8.0)
    logits[:, 1:3, 1:3] = 8.0
    return logits


def test_tuple_batches_are_swapped_like_the_swap_itself():
    images, _, labels, bank = _scene()
    loader = DataLoader(TensorDataset(images, labels), batch_size=B)
    seg = _segmenter
    wrapped = DeviceSwapLoader(loader, BackgroundSwap(bank, seg, compositing=Compositing(min_foreground=0.0), seed=5), "cpu")
    direct = BackgroundSwap(bank, seg, compositing=Compositing(min_foreground=0.0), seed=5)
    assert len(wrapped) == len(loader) == 3
    changed = 0
    for (x, y), (x0, y0) in zip(wrapped, loader):
        assert isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.shape == x0.shape
        assert torch.equal(y, y0)
        assert torch.equal(x, direct.swap_batch(x0, y0))
        changed += int((x != x0).any())
    assert changed > 0


def test_dict_batches_use_the_carried_alpha_and_keep_other_entries():
    images, alpha, labels, bank = _scene(1)
    loader = DataLoader(_Dicts(images, alpha, labels), batch_size=B)
    wrapped = DeviceSwapLoader(loader, BackgroundSwap(bank, seed=2), torch.device("cpu"), alpha="alpha")
    direct = BackgroundSwap(bank, seed=2)
    for out, ref in zip(wrapped, loader):
        assert list(out) == list(ref)  # same keys, same order
        assert torch.equal(out["index"], ref["index"]) and torch.equal(out["label"], ref["label"])
        expected = direct.swap_batch(ref["image"], ref["label"], alphas=ref["alpha"])
        assert torch.equal(out["image"], expected)
        assert not torch.equal(out["image"], ref["image"])
        # the alpha now marks where the object was pasted: same shape and dtype as given
        assert out["alpha"].shape == ref["alpha"].shape and out["alpha"].dtype == ref["alpha"].dtype
        assert type(out["image"]) is torch.Tensor


def test_every_epoch_is_a_new_pass_of_the_loader():
    images, alpha, labels, bank = _scene(2)
    loader = DataLoader(_Dicts(images, alpha, labels), batch_size=B, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    wrapped = DeviceSwapLoader(loader, BackgroundSwap(bank, seed=0), "cpu", alpha="alpha")
    epochs = [[b["index"] for b in wrapped] for _ in range(2)]
    assert [len(e) for e in epochs] == [len(loader)] * 2
    for e in epochs:
        assert sorted(torch.cat(e).tolist()) == list(range(N))
    assert not all(torch.equal(a, b) for a, b in zip(*epochs))  # reshuffled: really a new pass


def test_bad_arguments_name_what_was_expected():
    images, alpha, labels, bank = _scene()
    loader = DataLoader(_Dicts(images, alpha, labels), batch_size=B)
    with pytest.raises(TypeError, match="swap must be a BackgroundSwap"):
        DeviceSwapLoader(loader, lambda x: x, "cpu")
    with pytest.raises(ValueError, match="prefetch must be an int >= 0"):
        DeviceSwapLoader(loader, BackgroundSwap(bank), "cpu", prefetch=-1)
    with pytest.raises(ValueError, match="device must be"):
        DeviceSwapLoader(loader, BackgroundSwap(bank), "no-such-device")
    unnamed = DataLoader([{"pixels": images[0], "label": 0}] * 2, batch_size=2)
    with pytest.raises(KeyError, match="found no image"):
        next(iter(DeviceSwapLoader(unnamed, BackgroundSwap(bank), "cpu")))
    with pytest.raises(KeyError, match="alpha='mask' names no entry"):
        next(iter(DeviceSwapLoader(loader, BackgroundSwap(bank), "cpu", alpha="mask")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_side_stream_gives_the_cpu_result():
    images, alpha, labels, bank = _scene(3)
    loader = DataLoader(_Dicts(images, alpha, labels), batch_size=B, pin_memory=True)
    on_gpu = DeviceSwapLoader(loader, BackgroundSwap(bank, seed=4), "cuda", alpha="alpha", prefetch=2)
    on_cpu = DeviceSwapLoader(loader, BackgroundSwap(bank, seed=4), "cpu", alpha="alpha")
    for _ in range(2):  # two epochs
        count = 0
        for g, c in zip(on_gpu, on_cpu):
            assert g["image"].is_cuda
            # the kernels may round differently on the GPU: at most one grey level
            assert (g["image"].cpu().int() - c["image"].int()).abs().max() <= 1
            count += 1
        assert count == len(loader)


def test_device_suite_runs_end_to_end_on_cpu(capsys):
    """The GPU benchmark's code path, at 64², batch 4, with a small classifier (smoke test; no figures checked)."""
    from benchmarks.throughput import main

    assert main(["--device", "cpu", "--quick", "--no-write", "--model", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "| DeviceSwapLoader, ObjectAlpha carried |" in out and "| bank.sample (class-balanced gather) |" in out


def test_device_prefetcher_runs_any_function_of_the_moved_batch():
    from torch_backswap.loader import DevicePrefetcher

    images, _, labels, _ = _scene()
    loader = DataLoader(TensorDataset(images, labels), batch_size=B)
    seen = []
    doubled = DevicePrefetcher(loader, lambda b: seen.append(b) or [b[0] // 2, b[1]], "cpu")
    assert len(doubled) == len(loader)
    for (x, y), (x0, y0) in zip(doubled, loader):
        assert torch.equal(x, x0 // 2) and torch.equal(y, y0)
    assert len(seen) == len(loader)
    plain = DevicePrefetcher(loader, None, "cpu")  # no fn: only moved
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain, loader))
    with pytest.raises(TypeError, match="fn must be a callable"):
        DevicePrefetcher(loader, 3, "cpu")


def test_tuple_batch_labels_skip_an_image_sized_entry():
    """(images, alphas, labels) tuples: the one label getter skips the (B, 1, H, W) entry and finds the labels
    (other_class needs them), whether or not the alpha is named."""
    images, alpha, labels, bank = _scene(4)
    loader = DataLoader(TensorDataset(images, alpha, labels), batch_size=B)
    for name in (1, None):
        wrapped = DeviceSwapLoader(loader, BackgroundSwap(bank, _segmenter, compositing=Compositing(min_foreground=0.0), seed=3, strategy="other_class"), "cpu", alpha=name)
        direct = BackgroundSwap(bank, _segmenter, compositing=Compositing(min_foreground=0.0), seed=3, strategy="other_class")
        for (x, a, y), (x0, a0, y0) in zip(wrapped, loader):
            expected = direct.swap_batch(x0, y0, alphas=a0 if name is not None else None)
            assert torch.equal(x, expected) and torch.equal(y, y0)

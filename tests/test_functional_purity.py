"""Every public function of ``torch_backswap.functional`` is pure: it never writes to its inputs (issue 24).

Each call's tensor inputs (including those inside a bank, ``SwapParams``, ``JitterParams`` and a ``SwapRecord``)
are cloned before the call and compared after it. A function added to ``functional.__all__`` without a case here
fails :func:`test_every_public_function_is_covered`.
"""

import dataclasses
import inspect

import pytest
import torch

from torch_backswap import functional as F
from torch_backswap.bank import BackgroundBank

H = W = 24


def _tensors(obj, seen=None):
    """Every tensor reachable from ``obj`` (tensors, dataclasses, banks, lists, tuples, dicts)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, BackgroundBank):
        return [obj.backgrounds, obj.labels, obj._cpu_backgrounds, obj._cpu_labels]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in _tensors(getattr(obj, f.name), seen)]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x, seen)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x, seen)]
    return []


def _scene(dtype=torch.uint8, b=3):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, 3, H, W), generator=g, dtype=torch.uint8)
    if dtype != torch.uint8:
        images = images.to(dtype) / 255
    alphas = torch.zeros(b, 1, H, W)
    alphas[:, :, 6:18, 5:17] = 1.0
    bank = BackgroundBank(torch.randint(0, 256, (4, 3, H, W), generator=g, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    return images, alphas, bank


def _cases():
    """``(name, function, args, kwargs)`` calls of every public function, on inputs they could write to."""
    images, alphas, bank = _scene()
    params = F.sample_params(3, bank, torch.tensor([0, 1, 1]), generator=torch.Generator().manual_seed(1))
    partial = F.sample_params(3, bank, p=0.5, generator=torch.Generator().manual_seed(0))
    assert 0 < int(partial.apply.sum()) < 3
    bgs = F.gather_backgrounds(bank, params, (H, W))
    _, record = F.swap_backgrounds(images, alphas, bgs.clone(), params)
    assert bool(record.swapped.all())
    moved = F.move_alpha(alphas, record)
    speck = alphas.clone()
    speck[1] = 0
    speck[1, :, 2:4, 2:4] = 1.0
    float_images, _, _ = _scene(torch.float32)
    k = int(partial.apply.sum())
    cases = [
        ("sample_params", F.sample_params, (3, bank, torch.tensor([0, 1, 1])),
         {"strategy": "other_class", "generator": torch.Generator().manual_seed(0)}),
        ("gather_backgrounds", F.gather_backgrounds, (bank, params, (H, W)), {}),
        ("gather_backgrounds (resized)", F.gather_backgrounds, (bank, params, (16, 20)), {}),
        ("drop_specks", F.drop_specks, (speck, 0.05), {}),
        ("swap_backgrounds (k backgrounds)", F.swap_backgrounds, (images, alphas, bgs, params), {}),
        ("swap_backgrounds (B backgrounds, partial)", F.swap_backgrounds,
         (images, alphas, bank.backgrounds[:3], partial), {"feather_px": 1.5, "harmonize": 0.5}),
        ("swap_backgrounds (k rows, partial)", F.swap_backgrounds,
         (images, alphas[partial.apply], bank.backgrounds[:k].clone(), partial), {}),
        ("swap_backgrounds (float images)", F.swap_backgrounds, (float_images, alphas, bgs, params), {}),
        ("swap_backgrounds (float backgrounds)", F.swap_backgrounds,
         (float_images, alphas, bgs.float() / 255, params), {}),
        ("plan_swap", F.plan_swap, (alphas, partial), {"feather_px": 1.5}),
        ("plan_swap (k rows)", F.plan_swap, (alphas[partial.apply], partial), {"min_foreground": 0.5}),
        ("paste_objects", F.paste_objects, (images, alphas, bgs, record), {}),
        ("paste_objects (partial)", F.paste_objects,
         (images, alphas[partial.apply], bank.backgrounds[:3], F.plan_swap(alphas, partial)[1]), {}),
        ("sample_jitter", F.sample_jitter, (3,), {"generator": torch.Generator().manual_seed(0)}),
        ("jitter_affine", F.jitter_affine, (params.jitter, (H, W), alphas), {}),
        ("composite", F.composite, (images, alphas, bgs, record.matrices), {}),
        ("move_alpha", F.move_alpha, (alphas, record), {}),
        ("move_alpha (uint8)", F.move_alpha, ((alphas * 255).to(torch.uint8), record), {}),
        ("move_masks", F.move_masks, (torch.randint(0, 5, (3, 2, H, W)), moved, record), {}),
        ("move_boxes", F.move_boxes, (torch.tensor([[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 24.0, 24.0]]),
                                      record.matrices[0], (H, W)), {}),
    ]
    return cases


def test_every_public_function_is_covered():
    functions = {name for name in F.__all__ if inspect.isfunction(getattr(F, name))}
    covered = {name.split(" ")[0] for name, *_ in _cases()}
    assert functions == covered, f"add a purity case for {sorted(functions - covered)}"


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_public_functions_never_write_to_their_inputs(case):
    name, fn, args, kwargs = case
    inputs = _tensors((args, kwargs))
    assert inputs or name == "sample_jitter"  # sample_jitter takes numbers only: nothing it could write to
    before = [t.clone() for t in inputs]
    fn(*args, **kwargs)
    for i, (t, b) in enumerate(zip(inputs, before)):
        assert torch.equal(t, b), f"{name} wrote to its input tensor #{i} ({tuple(t.shape)}, {t.dtype})"


def test_inplace_swap_gives_the_same_images():
    images, alphas, bank = _scene()
    params = F.sample_params(3, bank, generator=torch.Generator().manual_seed(1))
    bgs = F.gather_backgrounds(bank, params, (H, W))
    pure, record = F.swap_backgrounds(images, alphas, bgs, params)
    fast, again = F.swap_backgrounds(images, alphas, bgs.clone(), params, inplace=True)
    assert torch.equal(pure, fast) and torch.equal(record.matrices, again.matrices)


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_plan_then_paste_is_swap_backgrounds(p):
    """The two halves the transform runs apart (make_params: plan; transform: paste) give swap_backgrounds' result."""
    images, alphas, bank = _scene(b=4)
    alphas[2] = 0
    alphas[2, :, 1:3, 1:3] = 1.0  # a speck, dropped
    params = F.sample_params(4, bank, p=p, generator=torch.Generator().manual_seed(3))
    bgs = F.gather_backgrounds(bank, params, (H, W))
    out, record = F.swap_backgrounds(images, alphas, bgs.clone(), params, feather_px=1.0, harmonize=0.3)
    alpha, planned = F.plan_swap(alphas, params, feather_px=1.0)
    pasted = F.paste_objects(images, alpha, bgs.clone(), planned, harmonize=0.3)
    assert torch.equal(out, pasted)
    for f in ("swapped", "bank_indices", "scale", "angle", "translate", "matrices", "object_boxes"):
        assert torch.equal(getattr(record, f), getattr(planned, f)), f


@pytest.mark.parametrize("p", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bool])
def test_record_object_boxes_are_the_pasted_alphas_boxes(dtype, p):
    """record.object_boxes (what paste_objects hands the composite instead of a second pass over the alphas) is the
    box of the alpha plan_swap returns, row for row; zeros where nothing was swapped (not applied, or a speck)."""
    from torch_backswap.jitter import mask_bboxes

    _, alphas, bank = _scene(b=6)
    alphas[2] = 0
    alphas[2, :, 1:3, 1:3] = 1.0  # a speck: dropped, so not swapped
    alphas[4, :, 3:20, 5:9] = 1.0  # a wider object
    alphas = alphas > 0.5 if dtype == torch.bool else (alphas * 255).to(dtype) if dtype == torch.uint8 else alphas
    params = F.sample_params(6, bank, p=p, generator=torch.Generator().manual_seed(5))
    alpha, record = F.plan_swap(alphas, params)
    assert int(record.swapped.sum()) == (5 if p == 1.0 else 2)  # all but the speck; two of the rows drawn
    boxes, valid = mask_bboxes(alpha)
    chosen = params.apply.nonzero().flatten()
    assert torch.equal(record.swapped[chosen], valid) and not bool(record.swapped[2])
    assert torch.equal(record.object_boxes[chosen][valid], boxes[valid])
    assert not record.object_boxes[~record.swapped].any()
    assert record.to_list()[4]["object_box"] == record.object_boxes[4].tolist()

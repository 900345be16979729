import math

import pytest
import torch

from torch_backswap.composite import blend, composite, composite_reference, soft_alpha
from torch_backswap.jitter import jitter_affine, mask_bboxes, sample_jitter


#: Largest grey-level difference from :func:`composite_reference` per backend (module notes of ``composite``).
MAX_LEVELS = {"torch": 1, "cv2": 2}


@pytest.fixture(params=["torch", "cv2"])
def backend(request):
    """The uint8 kernels whose meaning is tested alike; ``"cv2"`` only where OpenCV is installed."""
    if request.param == "cv2":
        pytest.importorskip("cv2")
    return request.param


def _data(b=8, h=48, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    backgrounds = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    alpha = torch.zeros(b, 1, h, w)
    for i in range(b):
        y0 = int(torch.randint(0, h - 20, (1,), generator=g))
        x0 = int(torch.randint(0, w - 24, (1,), generator=g))
        alpha[i, :, y0 : y0 + 16, x0 : x0 + 20] = torch.rand(1, 16, 20, generator=g).clamp_min(0.05)
    return images, alpha, backgrounds


@pytest.mark.parametrize("path", ["loop", "batched"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_fast_path_matches_reference(path, dtype):
    images, alpha, backgrounds = _data()
    if dtype != torch.uint8:
        images = images.to(dtype) / 255
    params = sample_jitter(images.shape[0], generator=torch.Generator().manual_seed(3))
    ref = composite_reference(images, alpha, backgrounds, params)
    fast = composite(images, alpha, backgrounds, params, path=path, backend="torch")
    assert fast.dtype == images.dtype and fast.shape == images.shape
    tol = 1 if dtype == torch.uint8 else 1e-4
    assert (ref.double() - fast.double()).abs().max() <= tol
    # almost all pixels identical (float rounding only flips a few half-way cases)
    if dtype == torch.uint8:
        assert (ref != fast).float().mean() < 0.01


@pytest.mark.parametrize("path", ["loop", "batched"])
def test_fast_path_matches_reference_options(path):
    images, alpha, backgrounds = _data(seed=5)
    params = sample_jitter(images.shape[0], generator=torch.Generator().manual_seed(4))
    for a in (alpha, alpha > 0.5, (alpha * 255).to(torch.uint8)):
        for kw in ({"harmonize": 0.5}, {"mode": "nearest"}):
            ref = composite_reference(images, a, backgrounds, params, **kw)
            fast = composite(images, a, backgrounds, params, path=path, backend="torch", **kw)
            assert (ref.int() - fast.int()).abs().max() <= 1


def test_known_integer_shift_is_exact(backend):
    images, _, backgrounds = _data(b=2, h=40, w=40)
    alpha = torch.zeros(2, 1, 40, 40)
    alpha[:, :, 10:20, 12:22] = 1.0
    m = torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]]]).repeat(2, 1, 1)
    out = composite(images, alpha, backgrounds, m, backend=backend)
    # foreground: every masked input pixel appears shifted by (+5, -3)
    assert torch.equal(out[:, :, 7:17, 17:27], images[:, :, 10:20, 12:22])
    # background: everything else is the background
    keep = torch.ones(40, 40, dtype=torch.bool)
    keep[7:17, 17:27] = False
    assert torch.equal(out[:, :, keep], backgrounds[:, :, keep])


def test_empty_mask_returns_image_unchanged(backend):
    images, alpha, backgrounds = _data(b=3)
    alpha[1] = 0
    params = sample_jitter(3)
    out = composite(images, alpha, backgrounds, params, backend=backend)
    assert torch.equal(out[1], images[1])
    assert not torch.equal(out[0], images[0])
    none = composite(images, torch.zeros_like(alpha), backgrounds, params, backend=backend)
    assert torch.equal(none, images)


def test_float_image_on_uint8_background_and_inplace(backend):
    images, alpha, backgrounds = _data(b=2)
    f = images.float() / 255
    params = sample_jitter(2, generator=torch.Generator().manual_seed(0))
    out = composite(f, alpha, backgrounds, params)
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    bg = backgrounds.clone()
    out2 = composite(images, alpha, bg, params, inplace=True, backend=backend)
    assert out2.data_ptr() == bg.data_ptr()
    assert torch.equal(out2, composite(images, alpha, backgrounds, params, backend=backend))


def test_blend_and_soft_alpha():
    fg = torch.full((1, 3, 4, 4), 200, dtype=torch.uint8)
    bg = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    a = torch.full((1, 1, 4, 4), 0.5)
    assert blend(fg, a, bg).unique().tolist() == [100]
    assert blend(fg.float() / 255, a, bg.float()).max().item() == pytest.approx(200 / 255 / 2)
    m = torch.zeros(1, 1, 20, 20)
    m[..., 5:15, 5:15] = 1
    s = soft_alpha(m, 1.5)
    assert torch.all(s <= m)  # feathering only inwards: nothing outside the mask is pasted
    assert s[0, 0, 10, 10] > 0.99 and 0 < s[0, 0, 5, 10] < 1


def test_bad_inputs():
    images, alpha, backgrounds = _data(b=2)
    params = sample_jitter(2)
    with pytest.raises(ValueError, match="alpha"):
        composite(images, alpha[:, :, :10], backgrounds, params)
    with pytest.raises(ValueError, match="backgrounds"):
        composite(images, alpha, backgrounds[:1], params)
    with pytest.raises(ValueError, match="params"):
        composite(images, alpha, backgrounds, torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match="path"):
        composite(images, alpha, backgrounds, params, path="fastest")
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'torch', 'cv2', got 'opencv'"):
        composite(images, alpha, backgrounds, params, backend="opencv")
    assert math.isfinite(float(composite(images, alpha, backgrounds, params).float().mean()))


def test_empty_masks_in_a_batch_keep_their_images_also_in_place(backend):
    images, alpha, backgrounds = _data(b=5, seed=7)
    alpha[1] = 0
    alpha[3] = 0
    params = sample_jitter(5, generator=torch.Generator().manual_seed(2))
    ref = composite_reference(images, alpha, backgrounds, params)
    for inplace in (False, True):
        bgs = backgrounds.clone()
        out = composite(images, alpha, bgs, params, inplace=inplace, backend=backend)
        assert torch.equal(out[1], images[1]) and torch.equal(out[3], images[3])
        assert (out.int() - ref.int()).abs().max() <= MAX_LEVELS[backend]


@pytest.mark.parametrize("route", ["_windows_scalar", "_windows_batched"])
def test_loop_windows_are_the_vectorised_windows(route):
    from torch_backswap import composite as module
    from torch_backswap.composite import _batched_windows
    from torch_backswap.jitter import _affine_inverse

    g = torch.Generator().manual_seed(11)
    for h, w in ((48, 56), (224, 224), (31, 97)):
        boxes, valid = mask_bboxes(_data(b=8, h=max(h, 40), w=max(w, 40), seed=h)[1][..., :h, :w])
        params = sample_jitter(8, scale=(0.2, 3.0), degrees=180.0, translate_px=400.0, generator=g)
        matrices = jitter_affine(params, (h, w), bboxes=boxes, keep_inside=False)  # some land off the frame
        sel, windows = _batched_windows(boxes, valid, matrices, h, w)
        rows = getattr(module, route)(boxes, valid, matrices, h, w)
        assert [i for i, _, _ in rows] == sel.nonzero().flatten().tolist()
        assert [list(win) for _, win, _ in rows] == torch.stack(windows, 1)[sel].tolist()
        # the inverse each kernel resamples with is _affine_inverse's float64 arithmetic, to the last bit
        inverse = _affine_inverse(matrices.double())
        assert [[*r0, *r1] for _, _, (r0, r1) in rows] == inverse[sel].flatten(1).tolist()


# --------------------------------------------------------------------------------------------------
# issue 25: the documented tolerance of the fast (box-only, uint8 in / uint8 out) composite against the float
# reference, and what the output must be where the moved alpha is 0 or 1
# --------------------------------------------------------------------------------------------------


def _random_scene(seed, b=6):
    """Random sizes, soft alphas with holes, and jitter well beyond the paper's ranges (scale 0.3-2, +-90 deg,
    shifts that push objects partly off the frame)."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(20, 90, (2,), generator=g))
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    backgrounds = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    alpha = torch.zeros(b, 1, h, w)
    for i in range(b):
        y0, x0 = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
        alpha[i, :, y0 : y0 + h // 3, x0 : x0 + w // 3] = torch.rand(1, h // 3, w // 3, generator=g)
    alpha[alpha < 0.3] = 0
    params = sample_jitter(b, scale=(0.3, 2.0), degrees=90.0, translate_px=40.0, generator=g)
    return images, alpha, backgrounds, params


def test_uint8_composite_tolerance_against_the_float_reference():
    """Bilinear, uint8 images: max |fast - reference| <= 1 grey level, mean <= 0.005 (float rounding of the
    box-local sampling grid flips a few half-way roundings), for float, uint8 and bool alphas."""
    worst, diffs = 0, []
    for seed in range(12):
        images, alpha, backgrounds, params = _random_scene(seed)
        for a in (alpha, (alpha * 255).round().to(torch.uint8), alpha > 0.5):
            d = (composite_reference(images, a, backgrounds, params).int()
                 - composite(images, a, backgrounds, params, backend="torch").int()).abs()
            worst = max(worst, int(d.max()))
            diffs.append(d.float().mean())
    assert worst <= 1
    assert float(torch.stack(diffs).mean()) <= 0.005


def test_float_composite_stays_accurate():
    """Float images in: the fast path is the reference up to float32 rounding (1e-5)."""
    for seed in range(6):
        images, alpha, backgrounds, params = _random_scene(seed)
        x, bg = images.float() / 255, backgrounds.float() / 255
        assert (composite_reference(x, alpha, bg, params) - composite(x, alpha, bg, params)).abs().max() <= 1e-5


def test_nearest_differs_from_the_reference_only_at_ties():
    """Nearest neighbour: a source position exactly half-way between two pixels may round to the other one
    (float rounding of the coordinates), so a few values may differ by more than one level; at most 1e-3 of them."""
    over, total = 0, 0
    for seed in range(12):
        images, alpha, backgrounds, params = _random_scene(seed)
        d = (composite_reference(images, alpha, backgrounds, params, mode="nearest").int()
             - composite(images, alpha, backgrounds, params, mode="nearest", backend="torch").int()).abs()
        over, total = over + int((d > 1).sum()), total + d.numel()
    assert over <= 1e-3 * total


def test_uint8_alpha_tolerance_against_the_float_alpha_reference():
    """The swap hands the composite a uint8 alpha (value / 255, rounded half up) where the reference keeps the float
    alpha: max 1 grey level, mean <= 0.02."""
    diffs = []
    for seed in range(12):
        images, alpha, backgrounds, params = _random_scene(seed)
        alpha8 = (alpha * 255).add(0.5).to(torch.uint8)
        d = (composite_reference(images, alpha, backgrounds, params).int()
             - composite(images, alpha8, backgrounds, params, backend="torch").int()).abs()
        assert int(d.max()) <= 1
        diffs.append(d.float().mean())
    assert float(torch.stack(diffs).mean()) <= 0.02


def test_background_where_the_moved_alpha_is_zero_foreground_where_it_is_one(backend):
    from kornia.geometry.transform import warp_affine

    for seed in range(8):
        images, alpha, backgrounds, params = _random_scene(seed)
        h, w = images.shape[-2:]
        for i in range(alpha.shape[0]):  # a solid core inside each soft object
            ys, xs = alpha[i, 0].nonzero(as_tuple=True)
            alpha[i, :, ys.min() + 2 : ys.max() - 1, xs.min() + 2 : xs.max() - 1] = 1.0
        m = jitter_affine(params, (h, w), alpha)
        out = composite(images, alpha, backgrounds, m, backend=backend)
        moved = warp_affine(alpha, m, (h, w), align_corners=True)
        fg = warp_affine(images.float(), m, (h, w), align_corners=True)
        zero = (moved == 0).expand_as(out)
        assert torch.equal(out[zero], backgrounds[zero])  # the background's bytes, untouched
        one = (moved >= 1 - 1e-6).expand_as(out)
        assert one.any()
        assert (out[one].float() - fg[one]).abs().max() <= 1.0  # the moved foreground, rounded


def test_integer_shift_off_the_frame_is_exact(backend):
    images, _, backgrounds = _data(b=2, h=40, w=40)
    alpha = torch.zeros(2, 1, 40, 40)
    alpha[:, :, 2:12, 30:39] = 1.0
    m = torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, -4.0]]]).repeat(2, 1, 1)  # partly out of the frame
    ref = composite_reference(images, alpha, backgrounds, m)
    out = composite(images, alpha, backgrounds, m, backend=backend)
    assert torch.equal(out, ref)
    assert torch.equal(out[:, :, :8, 35:], images[:, :, 4:12, 30:35])


def test_warp_alpha_is_kornias_full_frame_warp_of_the_box():
    """The alpha moved with the object (``move_alpha``) resamples only the box: kornia's full-frame values up to
    float rounding (1e-4) bilinear; nearest differs only at ties (<= 1e-3 of the pixels)."""
    from kornia.geometry.transform import warp_affine

    from torch_backswap._image import float_alpha
    from torch_backswap.composite import warp_alpha

    for seed in range(6):
        _, alpha, _, params = _random_scene(seed)
        alpha[2] = 0  # an empty alpha stays empty
        m = jitter_affine(params, tuple(alpha.shape[-2:]), alpha)
        for a in (alpha, (alpha * 255).round().to(torch.uint8), alpha > 0.5):
            ref = warp_affine(float_alpha(a), m, tuple(a.shape[-2:]), align_corners=True)
            got = warp_alpha(a, m)
            assert got.dtype == torch.float32 and (got - ref).abs().max() <= 1e-4
            assert not got[2].any()
            near = warp_affine(float_alpha(a), m, tuple(a.shape[-2:]), mode="nearest", align_corners=True)
            assert ((warp_alpha(a, m, mode="nearest") - near).abs() > 1e-4).float().mean() <= 1e-3


# --------------------------------------------------------------------------------------------------
# the OpenCV uint8 kernel (backend="cv2"; what "auto" picks for uint8 CPU images when cv2 imports)
# --------------------------------------------------------------------------------------------------


def test_cv2_composite_tolerance_against_the_float_reference():
    """Bilinear, uint8 images on OpenCV: at most 2 grey levels, mean <= 0.06 on noise images (measured: 2 and 0.046
    here, 0.049 over 188 more scenes), for float, uint8 and bool alphas; and a uint8 alpha against the float alpha it
    rounds, the same."""
    pytest.importorskip("cv2")
    worst, diffs = 0, []
    for seed in range(12):
        images, alpha, backgrounds, params = _random_scene(seed)
        ref = composite_reference(images, alpha, backgrounds, params)
        for a in (alpha, (alpha * 255).round().to(torch.uint8), alpha > 0.5):
            d = (composite_reference(images, a, backgrounds, params).int()
                 - composite(images, a, backgrounds, params, backend="cv2").int()).abs()
            worst = max(worst, int(d.max()))
            diffs.append(d.float().mean())
        d = (ref.int() - composite(images, (alpha * 255).add(0.5).to(torch.uint8), backgrounds, params,
                                   backend="cv2").int()).abs()
        worst = max(worst, int(d.max()))
        diffs.append(d.float().mean())
    assert worst <= 2
    assert float(torch.stack(diffs).mean()) <= 0.06


def test_cv2_nearest_differs_from_the_reference_only_at_ties():
    pytest.importorskip("cv2")
    over, total = 0, 0
    for seed in range(12):
        images, alpha, backgrounds, params = _random_scene(seed)
        d = (composite_reference(images, alpha, backgrounds, params, mode="nearest").int()
             - composite(images, alpha, backgrounds, params, mode="nearest", backend="cv2").int()).abs()
        over, total = over + int((d > 1).sum()), total + d.numel()
    assert over <= 1e-3 * total


def test_default_backend_is_torch_and_auto_is_cv2_for_uint8_cpu_images():
    """The default kernel is torch whether or not OpenCV is installed (a seed's bytes do not depend on it);
    ``"auto"`` takes OpenCV for uint8 CPU images and torch otherwise."""
    images, alpha, backgrounds, params = _random_scene(3)
    assert torch.equal(composite(images, alpha, backgrounds, params),
                       composite(images, alpha, backgrounds, params, backend="torch"))
    cv2 = pytest.importorskip("cv2")
    threads = cv2.getNumThreads()
    assert torch.equal(composite(images, alpha, backgrounds, params, backend="auto"),
                       composite(images, alpha, backgrounds, params, backend="cv2"))
    assert cv2.getNumThreads() == threads  # OpenCV's thread count is left as it was
    assert not torch.equal(composite(images, alpha, backgrounds, params, backend="auto"),
                           composite(images, alpha, backgrounds, params, backend="torch"))
    x, bg = images.float() / 255, backgrounds.float() / 255
    assert torch.equal(composite(x, alpha, bg, params, backend="auto"), composite(x, alpha, bg, params))
    assert torch.equal(composite(images, alpha, backgrounds, params, harmonize=0.5, backend="auto"),
                       composite(images, alpha, backgrounds, params, harmonize=0.5))
    with pytest.raises(ValueError, match="backend='cv2' needs uint8 images"):
        composite(x, alpha, bg, params, backend="cv2")
    with pytest.raises(ValueError, match="harmonize=0.5"):
        composite(images, alpha, backgrounds, params, harmonize=0.5, backend="cv2")


def test_without_opencv_auto_is_torch_and_cv2_says_how_to_install(monkeypatch):
    import torch_backswap.composite as module

    monkeypatch.setattr(module, "_opencv", lambda: None)
    images, alpha, backgrounds, params = _random_scene(4)
    assert torch.equal(composite(images, alpha, backgrounds, params, backend="auto"),
                       composite(images, alpha, backgrounds, params, backend="torch"))
    with pytest.raises(ImportError, match=r"torch-backswap\[fast\]"):
        composite(images, alpha, backgrounds, params, backend="cv2")

"""The small classifiers of the demo and ``backswap diagnose`` (torch_backswap.classifiers) and the benchmarks'
post-hoc fits on them (benchmarks/_harness.py)."""

import pytest
import torch

from benchmarks._harness import fit_class_bias, fit_last_layer_dfr
from torch_backswap.classifiers import (
    SmallCNN,
    build_classifier,
    evaluate_groups,
    predict,
    predict_logits,
    randaugment_batch,
    standard_augment,
    train_classifier,
)


def _toy(n=96, seed=0):
    """Class 1 = a bright square in the image, class 0 = none; group = 2*label + (blue tint)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 80, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 2
    tint = (torch.arange(n) // 2) % 2
    images[labels == 1, :, 8:24, 8:24] = 250
    images[tint == 1, 2] = images[tint == 1, 2] // 2 + 100
    return images, labels, 2 * labels + tint


def test_small_cnn_shapes_and_input_types():
    model = SmallCNN(num_classes=3, width=8)
    assert model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape == (2, 3)
    assert model(torch.rand(1, 3, 37, 50)).shape == (1, 3)
    assert model.features(torch.rand(4, 3, 32, 32)).shape == (4, 32)
    with pytest.raises(ValueError, match="num_classes"):
        SmallCNN(num_classes=1)
    with pytest.raises(ValueError, match="name"):
        build_classifier("vgg99")
    assert build_classifier("resnet18")(torch.rand(1, 3, 64, 64)).shape == (1, 2)


def test_standard_augment_and_randaugment_keep_shape_and_are_seeded():
    images, _, _ = _toy(8)
    out = standard_augment(images, torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    a = randaugment_batch(images, torch.Generator().manual_seed(3))
    b = randaugment_batch(images, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_training_learns_a_separable_task_and_keeps_best_epoch():
    images, labels, groups = _toy()
    model = SmallCNN(width=8)
    history = train_classifier(model, images, labels, epochs=4, batch_size=32, lr=5e-3, seed=0, progress=False,
                               val=(images, labels, groups))
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    result = evaluate_groups(model, images, labels, groups)
    assert result["average"] >= 0.9
    assert result["worst_group"] == min(result["groups"].values())
    assert max(h["val_average"] for h in history) == pytest.approx(result["average"])


def test_on_epoch_end_sees_every_epoch_and_a_second_val_split_keeps_the_same_epoch():
    """The robustness benchmark's joint runs: a hook scores each epoch on another val split, training unchanged."""
    from types import SimpleNamespace

    from benchmarks.robustness import BestEpoch

    images, labels, groups = _toy()
    val = (images[:48], labels[:48], groups[:48])
    torch.manual_seed(0)
    plain = SmallCNN(width=8)
    torch.manual_seed(0)
    hooked = SmallCNN(width=8)
    kw = dict(epochs=3, batch_size=32, lr=5e-3, seed=0, progress=False, val=val)
    selector = BestEpoch(SimpleNamespace(images=val[0], labels=val[1], groups=val[2]))
    calls = []

    def hook(model):
        calls.append(model)
        selector(model)

    h_plain = train_classifier(plain, images, labels, **kw)
    h_hooked = train_classifier(hooked, images, labels, on_epoch_end=hook, **kw)
    assert len(calls) == 3 and all(m is hooked for m in calls)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(h_plain) == drop(h_hooked)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, hooked.state_dict()[name]), name
        # the same val split and rule select the epoch train_classifier kept
        assert torch.equal(value, selector.best_state[name]), name
    assert selector.best_score == max(r["val_average"] for r in h_plain)


def test_batch_fn_sees_uint8_batches_with_their_indices():
    images, labels, _ = _toy(64)
    seen = []

    def batch_fn(x, y, idx):
        assert x.dtype == torch.uint8 and torch.equal(x, images[idx]) and torch.equal(y, labels[idx])
        seen.append(len(idx))
        return x

    train_classifier(SmallCNN(width=8), images, labels, epochs=1, batch_size=16, batch_fn=batch_fn, progress=False)
    assert sum(seen) == 64


def test_group_dro_needs_groups_and_runs():
    images, labels, groups = _toy(32)
    with pytest.raises(ValueError, match="groups"):
        train_classifier(SmallCNN(width=8), images, labels, epochs=1, group_dro=True, progress=False)
    history = train_classifier(SmallCNN(width=8), images, labels, epochs=1, group_dro=True, groups=groups,
                               batch_size=16, progress=False)
    assert torch.isfinite(torch.tensor(history[0]["loss"]))


def test_dfr_refits_only_the_last_layer():
    images, labels, groups = _toy(64)
    model = SmallCNN(width=8)
    train_classifier(model, images, labels, epochs=2, batch_size=32, progress=False)
    body = {k: v.clone() for k, v in model.body.state_dict().items()}
    fit_last_layer_dfr(model, images, labels, groups, steps=50)
    assert all(torch.equal(body[k], v) for k, v in model.body.state_dict().items())
    assert evaluate_groups(model, images, labels, groups)["average"] >= 0.75


def test_fit_class_bias_recovers_a_shifted_threshold():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2, width=4)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 2, (64,))
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([50.0, 0.0]))  # every image lands in class 0
    assert int(predict(model, images).sum()) == 0
    before = predict_logits(model, images)
    offsets = fit_class_bias(model, images, labels)
    assert offsets.shape == (2,) and offsets[0] == 0 and offsets[1] > 40  # the margin moved back
    assert torch.allclose(predict_logits(model, images), before + offsets, atol=1e-4)
    preds = predict(model, images)
    recall = [float((preds[labels == c] == c).float().mean()) for c in (0, 1)]
    assert min(recall) > 0 and sum(recall) / 2 >= 0.5  # at least chance balance, no class left empty


def test_fit_class_bias_keeps_an_optimal_threshold_and_handles_more_classes():
    torch.manual_seed(1)
    model = SmallCNN(num_classes=2, width=4)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    margin = predict_logits(model, images) @ torch.tensor([-1.0, 1.0])
    with torch.no_grad():
        model.fc.bias[1] -= float(margin.median()) + 1e-4  # about half the images in each class
    labels = predict(model, images)  # the model is already perfect on these labels
    assert len(labels.unique()) == 2
    assert fit_class_bias(model, images, labels).abs().max() == 0  # ties go to "no change"
    model3 = SmallCNN(num_classes=3, width=4)
    with torch.no_grad():
        model3.fc.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
    labels3 = torch.arange(32) % 3
    fit_class_bias(model3, images, labels3)
    assert len(predict(model3, images).unique()) > 1  # class 0 no longer takes everything

"""Optimizers and learning-rate schedules: values at known steps, plateau rule, each optimizer steps."""

import numpy as np
import pytest

from cnnctl.config import OptimizerConfig, ScheduleConfig
from cnnctl.errors import CnnctlError
from cnnctl.train.optim import make_optimizer, make_schedule


def lr_at(schedule, step):
    import keras

    return float(keras.ops.convert_to_numpy(schedule(step))) if callable(schedule) else schedule


def test_step_decay_divides_by_gamma_every_step_epochs():
    s = make_schedule(ScheduleConfig(name="step", step_epochs=2, gamma=0.1), 0.1, steps_per_epoch=10, epochs=6)
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 19) == pytest.approx(0.1)
    assert lr_at(s, 20) == pytest.approx(0.01)
    assert lr_at(s, 45) == pytest.approx(0.001)


def test_piecewise_boundaries_are_in_epochs():
    s = make_schedule(ScheduleConfig(name="piecewise", boundaries=[1, 2], values=[0.1, 0.01, 0.001]), 0.1, 100, 3)
    assert [round(lr_at(s, k), 6) for k in (0, 100, 101, 200, 201)] == [0.1, 0.1, 0.01, 0.01, 0.001]
    with pytest.raises(CnnctlError, match="one more entry"):
        make_schedule(ScheduleConfig(name="piecewise", boundaries=[1], values=[0.1]), 0.1, 10, 3)


def test_cosine_with_warmup():
    s = make_schedule(ScheduleConfig(name="cosine", warmup_epochs=1), 0.2, steps_per_epoch=10, epochs=11)
    assert lr_at(s, 0) == pytest.approx(0.0, abs=1e-6)
    assert lr_at(s, 5) == pytest.approx(0.1, rel=1e-3)
    assert lr_at(s, 10) == pytest.approx(0.2, rel=1e-3)
    assert lr_at(s, 60) == pytest.approx(0.1, rel=1e-3)   # half-way through the cosine
    assert lr_at(s, 110) == pytest.approx(0.0, abs=1e-6)


def test_warmup_then_constant_and_step():
    s = make_schedule(ScheduleConfig(name="constant", warmup_epochs=2), 0.4, steps_per_epoch=2, epochs=5)
    assert lr_at(s, 0) == pytest.approx(0.1) and lr_at(s, 3) == pytest.approx(0.4) and lr_at(s, 9) == pytest.approx(0.4)
    s = make_schedule(ScheduleConfig(name="step", warmup_epochs=1, step_epochs=2), 0.4, steps_per_epoch=4, epochs=5)
    assert lr_at(s, 1) == pytest.approx(0.2) and lr_at(s, 4) == pytest.approx(0.4) and lr_at(s, 8) == pytest.approx(0.04)


def test_plateau_divides_after_patience_epochs():
    import keras

    from cnnctl.train.callbacks import ReduceOnPlateau

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    cb = ReduceOnPlateau("val_loss", factor=0.1, patience=2)
    cb.set_model(model)
    for epoch, val in enumerate([1.0, 0.9, 0.95, 0.93, 0.92, 0.91]):
        cb.on_epoch_end(epoch, {"val_loss": val})
    # improvement at 0.9; no improvement for 2 epochs -> 0.05; 2 more -> 0.005
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
    assert cb.get_state()["best"] == pytest.approx(0.9)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_each_optimizer_reduces_a_quadratic(name):
    import keras

    opt = make_optimizer(OptimizerConfig(name=name, lr=0.1, weight_decay=0.0, clipnorm=1.0), 0.1)
    w = keras.Variable(np.array([3.0, -2.0], dtype="float32"))
    for _ in range(20):
        grad = 2 * w.numpy()
        opt.apply_gradients([(keras.ops.convert_to_tensor(grad), w)])
    assert np.sum(w.numpy() ** 2) < 13.0 * 0.75  # from 13 (adagrad is the slowest: ~6.7)


def test_multiclass_hinge_is_the_cs231n_svm_loss():
    from cnnctl.tasks.classify import MulticlassHinge

    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]], dtype="float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2]]
    # CS231n's worked example (cat, car, frog): losses 2.9, 0 and 12.9, mean 5.27.
    per_example = MulticlassHinge(reduction=None)(labels, scores)
    np.testing.assert_allclose(per_example, [2.9, 0.0, 12.9], atol=1e-5)


def test_sgd_weight_decay_is_the_papers_l2_term_inside_the_momentum():
    """AlexNet sec. 5: v <- 0.9 v - 0.0005 lr w - lr g; w <- w + v (two steps, by hand)."""
    import keras

    from cnnctl.config import OptimizerConfig
    from cnnctl.train.optim import make_optimizer

    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.05), 0.1)
    w = keras.Variable(np.array([1.0, -2.0], "float32"))
    g = np.array([0.5, 0.25], "float32")
    w_ref, v = np.array([1.0, -2.0]), np.zeros(2)
    for _ in range(2):
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), w)])
        v = 0.9 * v - 0.1 * 0.05 * w_ref - 0.1 * g
        w_ref = w_ref + v
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-6)
    again = type(opt).from_config(opt.get_config())
    assert again.l2 == 0.05


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_body_variables_step_at_the_scaled_rate(name):
    """Two copies of one variable, one scaled by 0.1: for SGD the step is exactly 0.1x; for Adam/RMSProp
    (scale-invariant in the gradient) too, which gradient scaling could not give."""
    import keras

    from cnnctl.config import OptimizerConfig
    from cnnctl.train.optim import make_optimizer

    body = keras.Variable(np.array([1.0, -1.0], "float32"), name="body")
    head = keras.Variable(np.array([1.0, -1.0], "float32"), name="head")
    opt = make_optimizer(OptimizerConfig(name=name, lr=0.01, momentum=0.0, weight_decay=0.0), 0.01,
                         scaled_paths=[body.path], lr_scale=0.1)
    g = keras.ops.convert_to_tensor(np.array([0.3, 0.2], "float32"))
    opt.apply_gradients([(g, body), (g, head)])
    step_body = 1.0 - float(np.asarray(body)[0])
    step_head = 1.0 - float(np.asarray(head)[0])
    assert step_head > 0
    np.testing.assert_allclose(step_body, 0.1 * step_head, rtol=1e-4)
    assert type(opt).from_config(opt.get_config()).lr_scale == 0.1


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_a_scaled_body_variable_follows_the_optimizer_run_at_the_scaled_rate(name):
    """With weight decay on (AdamW's decay is decoupled: outside update_step), a body variable at
    lr_scale 0.1 moves exactly as the same optimizer at 0.1 x lr moves it, decay included."""
    import keras

    from cnnctl.config import OptimizerConfig
    from cnnctl.train.optim import make_optimizer

    cfg = OptimizerConfig(name=name, lr=0.05, momentum=0.9 if name in ("sgd", "rmsprop") else 0.0, weight_decay=0.2)
    start = np.array([1.0, -2.0, 0.5], "float32")
    body, head = keras.Variable(start, name="body"), keras.Variable(start, name="head")
    alone = keras.Variable(start, name="alone")
    scaled = make_optimizer(cfg, cfg.lr, scaled_paths=[body.path], lr_scale=0.1)
    slow = make_optimizer(cfg, cfg.lr * 0.1)
    rng = np.random.default_rng(0)
    for _ in range(4):
        g = keras.ops.convert_to_tensor(rng.normal(size=3).astype("float32"))
        scaled.apply_gradients([(g, body), (g, head)])
        slow.apply_gradients([(g, alone)])
    np.testing.assert_allclose(np.asarray(body), np.asarray(alone), rtol=1e-6, atol=1e-7)
    assert np.abs(np.asarray(body) - np.asarray(head)).max() > 1e-3  # the head moved at the full rate

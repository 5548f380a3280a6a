"""Optimizers and learning-rate schedules from the papers and CS231n.

Schedules are functions of the optimizer's step counter, which is saved
with the optimizer state, so a resumed run continues the schedule exactly.
The plateau rule (AlexNet: divide by 10 when validation stops improving) is
a callback (``callbacks.ReduceOnPlateau``) acting on a constant rate.
"""

from __future__ import annotations

import keras

from cnnctl.config import OptimizerConfig, ScheduleConfig
from cnnctl.errors import CnnctlError


@keras.saving.register_keras_serializable(package="cnnctl")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``after(warmup_steps)`` over ``warmup_steps``, then ``after``."""

    def __init__(self, after, warmup_steps: int):
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        target = self.after(keras.ops.convert_to_tensor(float(self.warmup_steps)))
        ramp = target * (step + 1.0) / float(max(self.warmup_steps, 1))
        return keras.ops.where(step < self.warmup_steps, ramp, self.after(step))

    def get_config(self):
        return {"after": keras.saving.serialize_keras_object(self.after), "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["after"]), config["warmup_steps"])


@keras.saving.register_keras_serializable(package="cnnctl")
class SGDWithL2(keras.optimizers.SGD):
    """SGD with momentum and the papers' weight decay: an L2 term inside the momentum.

    Krizhevsky et al. 2012, sec. 5: ``v <- 0.9 v - 0.0005 lr w - lr g; w <- w + v``,
    which is Keras' SGD on the gradient ``g + l2 w`` (VGG, ResNet and Caffe/Torch
    do the same). Keras' own ``weight_decay`` is decoupled (applied outside the
    momentum), which at momentum 0.9 decays 10x less than the papers' recipes.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2: float = 0.0, **kwargs):
        super().__init__(learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = gradient + keras.ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def _body_scaled(base: type) -> type:
    """``base`` optimizer whose update of the variables at ``scaled_paths`` uses ``lr_scale`` x the rate.

    Fine-tuning trains the pretrained body slower than the new head (``--body-lr-scale``).
    Keras 3 optimizers take one rate; scaling the rate inside ``update_step`` is exact for
    every optimizer (scaling gradients would not be for Adam or RMSProp).
    """

    class BodyScaled(base):
        def __init__(self, *args, scaled_paths=(), lr_scale: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaled_paths, self.lr_scale = list(scaled_paths), float(lr_scale)
            self._scaled_index: set[int] = set()

        def build(self, variables):
            super().build(variables)
            paths = set(self.scaled_paths)
            self._scaled_index = {self._get_variable_index(v) for v in variables if v.path in paths}

        def update_step(self, gradient, variable, learning_rate):
            if self._get_variable_index(variable) in self._scaled_index:
                learning_rate = learning_rate * self.lr_scale
            return super().update_step(gradient, variable, learning_rate)

        def _apply_weight_decay(self, variables):
            # Decoupled decay (AdamW, and Keras' weight_decay on the others) is w <- w - wd * lr * w,
            # applied outside update_step with the unscaled rate: decay the body at lr_scale x wd,
            # so its effective rate is lr_scale x lr there too. weight_decay is a Python float read
            # while tracing, so the swap below is part of the traced step, not a race.
            if self.weight_decay is None or not self._scaled_index:
                return super()._apply_weight_decay(variables)
            body = [v for v in variables if self._get_variable_index(v) in self._scaled_index]
            head = [v for v in variables if self._get_variable_index(v) not in self._scaled_index]
            super()._apply_weight_decay(head)
            decay = self.weight_decay
            try:
                self.weight_decay = decay * self.lr_scale
                super()._apply_weight_decay(body)
            finally:
                self.weight_decay = decay

        def get_config(self):
            return {**super().get_config(), "scaled_paths": self.scaled_paths, "lr_scale": self.lr_scale}

    BodyScaled.__name__ = BodyScaled.__qualname__ = f"BodyScaled{base.__name__}"
    return keras.saving.register_keras_serializable(package="cnnctl")(BodyScaled)


def make_schedule(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int):
    """-> a float (constant / plateau) or a ``LearningRateSchedule`` over optimizer steps."""
    spe = max(1, steps_per_epoch)
    warmup = round(cfg.warmup_epochs * spe)
    total = max(1, epochs * spe)
    S = keras.optimizers.schedules
    if cfg.name == "plateau" and warmup:
        raise CnnctlError("schedule.warmup_epochs cannot be combined with the plateau schedule",
                          hint="set schedule.warmup_epochs=0 or use cosine/step/piecewise")
    if cfg.name in ("constant", "plateau"):
        sched = lr
    elif cfg.name == "cosine":
        return S.CosineDecay(0.0 if warmup else lr, decay_steps=max(1, total - warmup), alpha=cfg.min_lr / lr if lr else 0.0,
                             warmup_target=lr if warmup else None, warmup_steps=warmup)
    elif cfg.name == "step":
        sched = S.ExponentialDecay(lr, decay_steps=cfg.step_epochs * spe, decay_rate=cfg.gamma, staircase=True)
    elif cfg.name == "piecewise":
        if len(cfg.values) != len(cfg.boundaries) + 1:
            raise CnnctlError(
                f"schedule.values needs one more entry than schedule.boundaries "
                f"(got {len(cfg.values)} values, {len(cfg.boundaries)} boundaries)",
                hint="e.g. boundaries = [30, 60] (epochs), values = [0.1, 0.01, 0.001]")
        sched = S.PiecewiseConstantDecay([int(b * spe) for b in cfg.boundaries], list(cfg.values))
    else:
        raise CnnctlError(f"unknown schedule {cfg.name!r}")
    if warmup and not isinstance(sched, float):
        return LinearWarmup(sched, warmup)
    if warmup:  # a constant rate after warm-up
        return LinearWarmup(S.PiecewiseConstantDecay([1], [sched, sched]), warmup)
    return sched


OPTIMIZERS = {"sgd": SGDWithL2, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "rmsprop": keras.optimizers.RMSprop, "adagrad": keras.optimizers.Adagrad}
BODY_SCALED = {name: _body_scaled(cls) for name, cls in OPTIMIZERS.items()}  # registered at import


def make_optimizer(cfg: OptimizerConfig, schedule, scaled_paths=(), lr_scale: float = 1.0) -> keras.optimizers.Optimizer:
    """The recipe's optimizer; ``scaled_paths`` (variable paths) step at ``lr_scale`` x the rate."""
    clip = {"global_clipnorm": cfg.clipnorm} if cfg.clipnorm > 0 else {}
    wd = cfg.weight_decay or None
    if cfg.name not in OPTIMIZERS:
        raise CnnctlError(f"unknown optimizer {cfg.name!r}", hint="choose sgd, adam, adamw, rmsprop or adagrad")
    cls = OPTIMIZERS[cfg.name]
    if scaled_paths and lr_scale != 1.0:
        cls, clip = BODY_SCALED[cfg.name], {**clip, "scaled_paths": list(scaled_paths), "lr_scale": lr_scale}
    if cfg.name == "sgd":
        return cls(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov, l2=cfg.weight_decay, **clip)
    if cfg.name == "adam":
        return cls(schedule, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, weight_decay=wd, **clip)
    if cfg.name == "adamw":
        return cls(schedule, beta_1=cfg.beta_1, beta_2=cfg.beta_2, weight_decay=cfg.weight_decay,
                   epsilon=cfg.epsilon, **clip)
    if cfg.name == "rmsprop":
        return cls(schedule, momentum=cfg.momentum, epsilon=cfg.epsilon, weight_decay=wd, **clip)
    return cls(schedule, epsilon=cfg.epsilon, weight_decay=wd, **clip)

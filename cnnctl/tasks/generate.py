"""Image generation with GANs (``task = "generate"``): GAN, cGAN, DCGAN, WGAN, WGAN-GP.

The data are the classification pipeline's (pixels in [0, 255], one-hot labels), so every image
source cnnctl reads trains a GAN. The model (``cnnctl.models.gans.GAN``) owns the adversarial
``train_step`` with one optimizer per network; this module says what the engine needs:

- state: both networks, both optimizers and the model's seed generator (the resume backup);
- progress: D loss, G loss, the critic's Wasserstein estimate (WGANs), and FID after each epoch;
- per epoch: a fixed-noise sample grid (``samples/epoch-NNN.png``) and the sample scores of
  ``cnnctl.metrics.gan`` on the judge classifier's features (``cnnctl.train.judge``) into
  history.csv, with a warning when one class takes more than half of the samples;
- at the end: the same scores on ``generate.final_samples`` samples, the real-vs-real floor of
  two disjoint test halves, and the Parzen-window log-likelihood (Goodfellow et al. 2014);
  with ``generate.inception_samples = n``, also FID and KID in the standard space (Inception
  pool3, ``cnnctl.metrics.inception_space``) on ``n`` samples, with its floor at the same ``n``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np

from cnnctl.errors import CnnctlError
from cnnctl.tasks.base import TASKS, Field, Task

COLLAPSE_SHARE = 0.5     # one class above this share of the samples: mode collapse


def to_pixels(images, output_range: str) -> np.ndarray:
    """G's output -> uint8 pixels [0, 255]."""
    x = np.asarray(images, np.float32)
    x = x * 255.0 if output_range == "unit" else (x + 1.0) * 127.5
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def fixed_noise(model, n: int, seed: int) -> np.ndarray:
    """``(n, noise_dim)`` from the model's noise distribution, drawn by numpy from ``seed`` alone (the
    model's own seed generator, which training draws from, is left alone)."""
    rng = np.random.default_rng([seed, 0x6A7])
    shape = (n, model.noise_dim)
    if model.noise == "uniform":
        return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), shape).astype(np.float32)
    if model.noise == "unit_uniform":
        return rng.uniform(0.0, 1.0, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def generate(model, z: np.ndarray, labels: np.ndarray | None = None, batch: int = 500) -> np.ndarray:
    """uint8 images ``(n, h, w, c)`` from noise rows ``z`` (and class indices on conditional models)."""
    out = []
    for s in range(0, len(z), batch):
        zi = z[s:s + batch]
        if model.num_classes:
            y = np.eye(model.num_classes, dtype=np.float32)[labels[s:s + batch]]
            images = model.generator([zi, y], training=False)
        else:
            images = model.generator(zi, training=False)
        out.append(to_pixels(images, model.output_range))
    return np.concatenate(out) if out else np.zeros((0, *model.generator.output_shape[1:]), np.uint8)


def balanced_labels(n: int, classes: int) -> np.ndarray | None:
    """0, 1, ..., classes-1, 0, 1, ...: every class equally often (``None`` when unconditional)."""
    return np.arange(n) % classes if classes else None


class SampleScorer:
    """Scores generated images against the real test images in the judge's feature space."""

    def __init__(self, judge, real_pixels: np.ndarray, real_labels: np.ndarray):
        from cnnctl.metrics.gan import gaussian_stats

        self.judge = judge
        self.real_features, _ = judge.describe(real_pixels)
        self.real_stats = gaussian_stats(self.real_features)
        self.real_labels = real_labels
        self.classes = len(judge.class_names)

    def score(self, pixels: np.ndarray, labels: np.ndarray | None, by_class: bool = False) -> dict[str, Any]:
        from cnnctl.metrics.gan import (
            class_coverage,
            frechet_distance,
            gaussian_stats,
            inception_score,
            kid,
        )

        feats, probs = self.judge.describe(pixels)
        predicted = probs.argmax(axis=1)
        out = {"fid": frechet_distance(*self.real_stats, *gaussian_stats(feats)),
               "kid": kid(self.real_features, feats, subsets=10, subset_size=min(1000, len(feats)))[0],
               "is": inception_score(probs)[0], **class_coverage(predicted, self.classes)}
        if labels is not None:
            out["label_accuracy"] = float(np.mean(predicted == labels))
            if by_class:    # what `cnnctl generate --label NAME` gives, class by class
                out["label_accuracy_by_class"] = {name: float(np.mean(predicted[labels == c] == c))
                                                  for c, name in enumerate(self.judge.class_names)
                                                  if np.any(labels == c)}
        return out

    def floor(self, seed: int = 0) -> dict[str, float]:
        """FID and KID between two disjoint random halves of the real test images: the best a
        generator can expect with this many samples."""
        from cnnctl.metrics.gan import fid, kid

        order = np.random.default_rng(seed).permutation(len(self.real_features))
        a, b = self.real_features[order[::2]], self.real_features[order[1::2]]
        return {"fid": fid(a, b), "kid": kid(a, b, subset_size=min(1000, len(a), len(b)))[0]}


def sample_grid(model, path: Path, grid: int, seed: int = 0) -> None:
    """``grid x grid`` samples from fixed noise into one PNG; conditional models: row r is class r."""
    from cnnctl.generator import save_png, tile

    classes = model.num_classes
    labels = np.repeat(np.arange(grid) % classes, grid) if classes else None
    save_png(tile(generate(model, fixed_noise(model, grid * grid, seed), labels), grid), path)


class EpochSamples(keras.callbacks.Callback):
    """After each epoch: the sample grid, then the sample scores into the epoch's logs (so they reach
    history.csv, TensorBoard and ``best.keras``'s monitor)."""

    def __init__(self, run, scorer: SampleScorer | None, samples: int, grid: int, log):
        super().__init__()
        self.run, self.scorer, self.samples, self.grid, self.log = run, scorer, samples, grid, log

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        sample_grid(self.model, self.run.file("samples") / f"epoch-{epoch + 1:03d}.png", self.grid)
        if self.scorer is None or not self.samples:
            return
        labels = balanced_labels(self.samples, self.model.num_classes)
        pixels = generate(self.model, fixed_noise(self.model, self.samples, 1), labels)
        scores = self.scorer.score(pixels, labels)
        logs.update(scores)
        if scores["top_class_share"] > COLLAPSE_SHARE:
            self.log(f"warning: mode collapse? {scores['top_class_share']:.0%} of the epoch-{epoch + 1} samples "
                     f"are one class (judge's reading); see samples/epoch-{epoch + 1:03d}.png")


@TASKS.register("generate", about="GANs: GAN, cGAN, DCGAN, WGAN, WGAN-GP (images from noise)")
class GenerateTask(Task):
    name = "generate"
    loss_keys = ("d_loss", "g_loss")
    progress_fields = (Field("d_loss", "D"), Field("g_loss", "G"), Field("fid", "FID"))
    monitor = "fid"
    modes: ClassVar[dict[str, str]] = {"d_loss": "min", "g_loss": "min", "w_dist": "min", "fid": "min",
                                       "kid": "min", "is": "max", "covered": "max", "class_kl": "min",
                                       "label_accuracy": "max"}

    def __init__(self):
        self.scorer: SampleScorer | None = None
        self.inception = None      # an InceptionSpace when generate.inception_samples > 0
        self.log = print

    # ------------------------------------------------------------------ data and run files
    def write_run_files(self, run, data) -> None:
        run.write_json("classes.json", data.class_names)

    def check_resume(self, run, data) -> None:
        if run.read_json("classes.json") != data.class_names:
            raise CnnctlError("the data's classes differ from the run's classes.json",
                              hint="resume with the data the run was started on")

    def prepare(self, run, data, cfg, log) -> None:
        """The judge and the real test images' features (for every epoch's scores)."""
        from cnnctl.tasks.base import model_input_shape
        from cnnctl.train.judge import Judge, ensure_judge

        self.log, self.cfg = log, cfg
        _check_batch(cfg, _configured_d_steps(cfg))     # before the judge and Inception set-up, not after
        gc = cfg.generate
        if not (gc.eval_samples or gc.final_samples) or data.test is None:
            return
        judge = Judge(ensure_judge(gc, cfg.data, model_input_shape(cfg), data.train.count, log))
        if judge.class_names != data.class_names:
            raise CnnctlError(f"the judge {judge.run} knows the classes {judge.class_names[:5]}..., "
                              f"the data {data.class_names[:5]}...",
                              hint="give generate.judge a classify run on the same classes, or leave it empty")
        self.real_pixels, self.real_labels = _split_arrays(data, "test")
        self.scorer = SampleScorer(judge, self.real_pixels, self.real_labels)
        if gc.inception_samples and gc.final_samples:
            # before training, so that a missing network or too small a test split stops the run now
            from cnnctl.metrics.inception_space import InceptionSpace

            self.inception = InceptionSpace(self.real_pixels, gc.inception_samples, log)

    # ------------------------------------------------------------------ model
    def build(self, cfg, data, log):
        from cnnctl.tasks.base import build_model

        model = build_model(cfg, data.num_classes)
        model.total_steps = cfg.train.epochs * data.steps("train")
        _check_batch(cfg, model.d_steps)
        self.progress_fields = (Field("d_loss", "D"), Field("g_loss", "G")) + (
            (Field("w_dist", "W"),) if model.wasserstein else ()) + (
            (Field("fid", "FID"),) if cfg.generate.eval_samples and self.scorer is not None else ())
        return model, []

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        """G steps with the engine's optimizer (its step counter drives the schedule and the resume
        bookkeeping); D gets its own of the same kind and settings."""
        from cnnctl.train.optim import make_optimizer, make_schedule

        schedule = make_schedule(cfg.schedule, cfg.optimizer.lr, data.steps("train") * model.d_steps,
                                 cfg.train.epochs)
        model.compile(optimizer=optimizer, d_optimizer=make_optimizer(cfg.optimizer, schedule),
                      jit_compile=cfg.train.jit)

    def state_variables(self, model) -> list:
        return list(model.variables) + list(model.optimizer.variables) + list(model.d_optimizer.variables)

    def epoch_callbacks(self, run, data, cfg) -> list:
        return [EpochSamples(run, self.scorer, cfg.generate.eval_samples, cfg.generate.grid, self.log)]

    # ------------------------------------------------------------------ evaluation
    def final_metrics(self, model, data) -> dict[str, Any]:
        from cnnctl.metrics.gan import parzen_log_likelihood, parzen_sigma

        cfg = self.cfg
        n = cfg.generate.final_samples
        if self.scorer is None or not n:
            return {}
        labels = balanced_labels(n, model.num_classes)
        pixels = generate(model, fixed_noise(model, n, 2), labels)
        out = {f"test_{k}": v for k, v in self.scorer.score(pixels, labels, by_class=True).items()}
        out.update({f"real_floor_{k}": v for k, v in self.scorer.floor().items()})
        out["judge_test_accuracy"] = self.scorer.judge.test_accuracy
        out["judge_run"] = str(self.scorer.judge.run)
        # Parzen windows in [0, 1] pixel units (the 2014 paper's), sigma from validation images
        val = _split_arrays(data, "val")[0] if data.val is not None and data.val is not data.test else None
        samples = pixels.reshape(len(pixels), -1) / 255.0
        tuning = (val if val is not None else self.real_pixels[: len(self.real_pixels) // 2])
        tuning = tuning[:1000].reshape(min(1000, len(tuning)), -1) / 255.0
        sigma = parzen_sigma(samples, tuning)
        test = self.real_pixels.reshape(len(self.real_pixels), -1) / 255.0
        ll = parzen_log_likelihood(samples, test, sigma)
        out.update(test_parzen_ll=float(ll.mean()), test_parzen_ll_se=float(ll.std(ddof=1) / np.sqrt(len(ll))),
                   parzen_sigma=sigma, test_samples=n, test_real_images=len(self.real_pixels))

        if self.inception is not None:
            out.update(inception_scores(model, self.inception, pixels))
        return out

    def summary_keys(self) -> tuple[str, ...]:
        return ("test_inception_fid", "real_floor_inception_fid", "test_fid", "real_floor_fid", "test_kid",
                "test_is", "test_covered", "test_label_accuracy", "test_parzen_ll", "judge_test_accuracy")


def _configured_d_steps(cfg) -> int:
    """D steps per G step as the recipe sets them (``n_critic`` / ``d_steps``, else the builder's default)."""
    import inspect

    from cnnctl import models

    params = inspect.signature(models.MODELS.get(cfg.model.name).fn).parameters
    for key in ("n_critic", "d_steps"):
        if key in params:
            return int(cfg.model.options.get(key, params[key].default))
    return 1


def _check_batch(cfg, d_steps: int) -> None:
    if d_steps >= 1 and cfg.train.batch_size % d_steps:
        raise CnnctlError(f"train.batch_size {cfg.train.batch_size} is not a multiple of the "
                          f"{d_steps} discriminator steps per generator step",
                          hint=f"use e.g. --batch-size {d_steps * 64} ({d_steps} minibatches of 64)")


def inception_scores(model, space, generated: np.ndarray | None = None) -> dict[str, float]:
    """FID/KID in Inception pool3 space (an ``InceptionSpace`` of ``n``): ``n`` samples (the final
    ones: fixed noise seed 2, balanced labels) against ``n`` real test images, and the floor of those
    against ``n`` other real ones."""
    n = space.n
    if generated is None or len(generated) < n:
        generated = generate(model, fixed_noise(model, n, 2), balanced_labels(n, model.num_classes))
    out = {f"test_inception_{k}": v for k, v in space.score(generated).items()}
    out.update({f"real_floor_inception_{k}": v for k, v in space.floor().items()})
    out["inception_samples"] = n
    return out


def _split_arrays(data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every image of ``split`` as uint8 ``(n, h, w, c)`` with its class index, in file order."""
    images, labels = [], []
    for x, y in data.eval_dataset(split):
        images.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
        labels.append(np.argmax(y.numpy(), axis=1))
    return np.concatenate(images), np.concatenate(labels)

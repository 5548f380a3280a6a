"""Show and Tell's two-stage schedule, probed on the human-written captions: stage two only.

im2txt trains the LSTM on a frozen encoder first, then fine-tunes the encoder with it. Stage one is
a finished ``cnnctl train caption-human`` run (its ``model.keras``, 30 epochs on frozen
EfficientNet-Lite0 features). This script is stage two: the run's decoder on a trainable encoder
(``cnnctl.models.captioning.with_encoder``; batch norm frozen, as ``caption.train_encoder`` does),
fine-tuned for ``--epochs`` on the training images' pixels with Adam at ``--lr`` for the decoder
and ``--encoder-lr`` for the encoder, encoder in mixed bfloat16. After each epoch the validation
images are encoded by the fine-tuned encoder and captioned as the recipe does (beam 3, ranked per
word); the test split is scored once, at the end.

It is a measurement, not a training path: there is no resume and no run directory. What it shows
is whether fine-tuning after the decoder has converged helps; docs/captioning.md reports it.

    python benchmarks/caption_two_stage.py RUN [--epochs 2] [--lr 1e-4] [--encoder-lr 1e-5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a finished caption-human run (stage one)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4, help="the decoder's Adam rate")
    ap.add_argument("--encoder-lr", type=float, default=1e-5, help="the encoder's Adam rate")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import keras
    import tensorflow as tf

    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl.config import load_run_config
    from cnnctl.models.captioning import CaptionStepper, with_encoder
    from cnnctl.models.encoders import EncoderSpec, encode_pixels, trainable_encoder
    from cnnctl.tasks.caption import CaptionDataModule, beam_search, caption_scores
    from cnnctl.train.rundir import RunDir

    cfg = load_run_config(args.run)
    cfg.caption.train_encoder = True                  # the data module then also holds every split's pixels
    data = CaptionDataModule(cfg, cfg.train.batch_size, cfg.train.seed, log=print)
    spec = EncoderSpec.from_config(cfg.caption)
    with tempfile.TemporaryDirectory() as scratch:    # the run's cached frozen features, not recomputed
        for name in ("features.npz", "features.json"):
            shutil.copy(args.run / name, Path(scratch) / name)
        data.prepare(RunDir(Path(scratch)), spec)
    decoder = keras.saving.load_model(args.run / "model.keras")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    encoder = trainable_encoder(spec, print)
    keras.mixed_precision.set_global_policy("float32")
    model = with_encoder(encoder, decoder)
    enc_vars, dec_vars = encoder.trainable_variables, decoder.trainable_variables
    enc_opt, dec_opt = keras.optimizers.Adam(args.encoder_lr), keras.optimizers.Adam(args.lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, enc_vars + dec_vars)
        enc_opt.apply_gradients(zip(grads[:len(enc_vars)], enc_vars))
        dec_opt.apply_gradients(zip(grads[len(enc_vars):], dec_vars))
        return loss

    def scores(split):
        best = beam_search(CaptionStepper(decoder), encode_pixels(encoder, split.pixels), cfg.caption.beam,
                           cfg.caption.max_words, cfg.caption.length_norm)
        return caption_scores([data.vocab.decode(ids) for ids, _ in best], split.references)

    rows = [("stage one (the run's decoder, encoder as trained on ImageNet)", "", scores(data.val))]
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        # the epochs after stage one's: orders that run never drew
        losses = [float(step(x, y)) for x, y in data.train_dataset(cfg.train.epochs + epoch)]
        seconds = time.perf_counter() - t0
        rows.append((f"stage two, epoch {epoch + 1} (training loss {np.mean(losses):.3f})", f"{seconds:.0f}",
                     scores(data.val)))
        print(rows[-1][0], flush=True)
    test = scores(data.test)
    print(f"\n### Two-stage probe from {args.run.name}: decoder lr {args.lr:g}, encoder lr {args.encoder_lr:g}\n")
    print("| validation | epoch s | BLEU-4 | CIDEr-D |")
    print("|---|---:|---:|---:|")
    for label, seconds, s in rows:
        print(f"| {label} | {seconds} | {s['bleu4']:.3f} | {s['cider_d']:.3f} |")
    print(f"\ntest, after the last epoch: BLEU-4 {test['bleu4']:.3f}, CIDEr-D {test['cider_d']:.3f}")


if __name__ == "__main__":
    main()

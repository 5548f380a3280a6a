"""A caption run's final model decoded with other beam widths, ranked per word or by total
log-probability, on its validation and test images: does a wider beam help?

    python benchmarks/caption_beams.py RUN [--beams 1 3 5 10]

Reads the run's cached encoder features (``features.npz``, the features its own scores came from) and
its captions (the run's data, split as training split it). Prints a markdown table of BLEU-4 and CIDEr-D
(docs/captioning.md, "Also tried", carries it for the human captions' seed-0 run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5, 10])
    args = ap.parse_args()

    from cnnctl.captioner import Captioner
    from cnnctl.config import load_run_config
    from cnnctl.tasks.caption import CaptionDataModule, caption_scores

    cfg = load_run_config(args.run)
    captioner = Captioner(args.run, best=False)                 # the final model, as metrics.json scores it
    data = CaptionDataModule(cfg, cfg.train.batch_size, cfg.train.seed, log=lambda m: None)
    with np.load(args.run / "features.npz") as f:
        features = {s: f[f"{s}_features"] for s in ("val", "test") if f"{s}_features" in f.files}
    print("| split | beam | ranked | BLEU-4 | CIDEr-D |\n|---|---:|---|---:|---:|")
    for split, feats in features.items():
        for beam in args.beams:
            for per_word in ((True,) if beam == 1 else (True, False)):
                decoded = captioner.decode(feats, beam, length_norm=per_word)
                s = caption_scores([words for words, _ in decoded], data.tokens[split])
                ranked = "greedy" if beam == 1 else ("per word" if per_word else "total")
                print(f"| {split} | {beam} | {ranked} | {s['bleu4']:.3f} | {s['cider_d']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

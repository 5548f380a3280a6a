"""Which of a caption run's two models to score: the last epoch's (``model.keras``, what metrics.json has
scored so far) or the epoch with the highest validation CIDEr-D (``best.keras``, what
``cnnctl caption --model RUN`` loads by default). Mean ± sd over the runs, on validation and test.

Each model decodes as its run does (``Captioner.decode``: beam, length normalisation, max_words, fluent
rules from its caption.json and vocab.json), over the run's cached frozen features. The validation column of
``best.keras`` is the maximum it was chosen by, so it is optimistic by construction; test is the
honest comparison.

    python benchmarks/caption_checkpoint.py checkpoints/bench-human/seed-{0,1,2}

Prints a markdown table (docs/captioning.md carries it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caption_human import mean_sd

FILES = (("the last epoch (model.keras)", False), ("the best validation CIDEr-D (best.keras)", True))


def score_run(run: Path) -> dict[bool, dict[str, float]]:
    """{best: {"val_bleu4", "val_cider_d", "test_bleu4", "test_cider_d", "epoch"}} for one run."""
    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl.captioner import Captioner
    from cnnctl.config import load_run_config
    from cnnctl.tasks.caption import CaptionDataModule, caption_scores

    data = CaptionDataModule(load_run_config(run), 64, 0, log=lambda *a: None)
    with np.load(run / "features.npz") as f:
        features = {split: f[f"{split}_features"] for split in ("val", "test")}
    metrics = json.loads((run / "metrics.json").read_text())
    out = {}
    for _, best in FILES:
        cap = Captioner(run, best=best)
        row = {"epoch": metrics["best_epoch"] if best else metrics["epochs_trained"]}
        for split in ("val", "test"):
            scores = caption_scores([words for words, _ in cap.decode(features[split])], data.tokens[split])
            row[f"{split}_bleu4"], row[f"{split}_cider_d"] = scores["bleu4"], scores["cider_d"]
        out[best] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    scored = [score_run(r) for r in args.runs]
    print(f"{len(args.runs)} runs: {', '.join(map(str, args.runs))}\n")
    print("| model file | epoch | val BLEU-4 | val CIDEr-D | test BLEU-4 | test CIDEr-D |")
    print("|---|---|---:|---:|---:|---:|")
    for label, best in FILES:
        epochs = ", ".join(str(s[best]["epoch"]) for s in scored)
        cells = [mean_sd(np.array([s[best][k] for s in scored]))
                 for k in ("val_bleu4", "val_cider_d", "test_bleu4", "test_cider_d")]
        print(f"| {label} | {epochs} | " + " | ".join(cells) + " |")
    m = json.loads((args.runs[0] / "metrics.json").read_text())
    print("| baseline: nearest training image's caption | | " + " | ".join(
        f"{m[k]:.3f}" for k in ("val_baseline_nearest_bleu4", "val_baseline_nearest_cider_d",
                                "baseline_nearest_bleu4", "baseline_nearest_cider_d")) + " |")
    print("\nper run, test CIDEr-D (last, best): " + "; ".join(
        f"{r.name} {s[False]['test_cider_d']:.3f}, {s[True]['test_cider_d']:.3f}" for r, s in zip(args.runs, scored)))


if __name__ == "__main__":
    main()

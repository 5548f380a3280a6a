"""Fluent decoding (``caption.fluent``) and the image beside every word (``model.image_every_step``), on
the validation split the recipe is chosen on, mean ± sd over runs of each model.

Each run's final model decodes its validation and test images as the run decodes (beam, length
normalisation, max_words from its caption.json) twice: as it is, and with ``caption.fluent``'s two
rules (no word twice in a row; no caption ending right after a word that almost never ends a training
caption, the vocabulary's ``rarely_last``, rebuilt here from the training captions for runs made
before vocab.json kept it). Also the captions' form on test (benchmarks/caption_human.py,
``caption_form``) and the nearest-neighbour baseline from each run's metrics.json.

    python benchmarks/caption_fluent.py --group "show_and_tell" checkpoints/bench-plain/seed-{0,1,2} \
        --group "show_and_tell, image_every_step" checkpoints/bench-beside/seed-{0,1,2}

The runs are `cnnctl train caption-human --seed S [--set model.image_every_step=true]` made with the
recipe before it decoded fluently. Prints markdown tables (docs/captioning.md carries them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caption_human import caption_form, mean_sd


def decode_run(run: Path) -> dict[str, dict[str, float]]:
    """{"plain" | "fluent": {"val_bleu4", "val_cider_d", "test_bleu4", "test_cider_d", form keys}}."""
    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl.captioner import Captioner
    from cnnctl.config import load_run_config
    from cnnctl.data.text import Vocab
    from cnnctl.tasks.caption import (
        CaptionDataModule,
        beam_search,
        caption_scores,
        fluent_rule,
    )

    cap = Captioner(run, best=False)
    data = CaptionDataModule(load_run_config(run), 64, 0, log=lambda *a: None)
    train = [c for caps in data.tokens["train"] for c in caps]
    vocab = Vocab.build(train, cap.vocab.min_count)
    if vocab.words != cap.vocab.words:
        sys.exit(f"{run}: the training captions no longer give the run's vocabulary (was the data rebuilt?)")
    s = cap.settings
    out = {}
    with np.load(run / "features.npz") as f:
        features = {split: f[f"{split}_features"] for split in ("val", "test")}
    for name, rule in (("plain", None), ("fluent", fluent_rule(vocab, True))):
        row = {}
        for split in ("val", "test"):
            best = beam_search(cap.stepper, features[split], cap.beam, int(s["max_words"]),
                               bool(s.get("length_norm", False)), allow_unk=bool(s.get("allow_unk", False)),
                               fluent=rule)
            hyps = [vocab.decode(ids) for ids, _ in best]
            scores = caption_scores(hyps, data.tokens[split])
            row[f"{split}_bleu4"], row[f"{split}_cider_d"] = scores["bleu4"], scores["cider_d"]
            if split == "test":
                row.update(caption_form(hyps, train))
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"),
                    help="a label and its runs (repeatable)")
    args = ap.parse_args()
    print("| model | decoding | val BLEU-4 | val CIDEr-D | test BLEU-4 | test CIDEr-D | test: cut off | "
          "test: repeats a word |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    nearest = None
    for label, *runs in args.group:
        decoded = [decode_run(Path(r)) for r in runs]
        for name in ("plain", "fluent"):
            cells = [mean_sd(np.array([d[name][k] for d in decoded]))
                     for k in ("val_bleu4", "val_cider_d", "test_bleu4", "test_cider_d", "cut off", "repeats")]
            print(f"| {label} ({len(runs)} runs) | {'fluent' if name == 'fluent' else 'as trained'} | "
                  + " | ".join(cells) + " |")
        metrics = json.loads((Path(runs[0]) / "metrics.json").read_text())
        nearest = [metrics[k] for k in ("val_baseline_nearest_bleu4", "val_baseline_nearest_cider_d",
                                        "baseline_nearest_bleu4", "baseline_nearest_cider_d")]
    print("| baseline: nearest training image's caption | | " + " | ".join(f"{v:.3f}" for v in nearest) + " | | |")


if __name__ == "__main__":
    main()

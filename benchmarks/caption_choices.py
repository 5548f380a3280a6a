"""How pipelines/caption-human.toml was chosen: candidate settings scored on the validation split.

Each candidate is ``cnnctl train caption-human --seed 0 --set ...`` with every setting that differs
between candidates spelled out (so the table does not depend on what the recipe says today). The
final model of each run then captions the 543 validation images three ways -- greedy, beam 3, and
beam 3 ranked by log-probability per word -- and is scored beside the nearest-neighbour baseline on
the same images. The test split is not read: the recipe is the best row here, and its test scores
come from ``benchmarks/caption_human.py`` (3 seeds).

    python benchmarks/caption_choices.py [--out checkpoints/caption-choices] [--skip-train] [--only NAME ...]

Prints a markdown table (docs/captioning.md, "Choosing the recipe on the validation split").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

FIXED = {"caption.length_norm": "false", "caption.word_vectors": "''", "model.embed_dim": "512"}


def candidate(dropout: str, epochs: int, min_count: int, flip: bool, **more: str) -> dict[str, str]:
    """The ``--set`` values of one candidate (beside FIXED)."""
    return {"model.dropout": dropout, "train.epochs": str(epochs), "caption.min_count": str(min_count),
            "caption.flip": "true" if flip else "false", **more}


# name -> the settings that differ between candidates (the rest is the recipe's)
CANDIDATES = {
    "d5-e8-m5": candidate("0.5", 8, 5, False),
    "d2-e20-m5": candidate("0.2", 20, 5, False),
    "d0-e20-m5": candidate("0.0", 20, 5, False),
    "d2-e20-m2": candidate("0.2", 20, 2, False),
    "d1-e30-m1": candidate("0.1", 30, 1, False),
    "d2-e30-m1": candidate("0.2", 30, 1, False),
    "d3-e30-m1": candidate("0.3", 30, 1, False),
    "d0-e30-m1-flip": candidate("0.0", 30, 1, True),
    "d1-e30-m1-flip": candidate("0.1", 30, 1, True),
    "d2-e30-m1-flip": candidate("0.2", 30, 1, True),
    "d2-e40-m1-flip": candidate("0.2", 40, 1, True),
    "d3-e40-m1-flip": candidate("0.3", 40, 1, True),
    "d2-e30-m1-flip-glove": candidate("0.2", 30, 1, True, **{"caption.word_vectors": "'glove100'",
                                                             "model.embed_dim": "100"}),
}
DECODINGS = (("greedy", 1, False), ("beam 3", 3, False), ("beam 3, per word", 3, True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="checkpoints/caption-choices")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/NAME runs")
    ap.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), default=list(CANDIDATES))
    args = ap.parse_args()
    out = Path(args.out)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for name in args.only:
        if args.skip_train:
            continue
        if (out / name).exists():
            sys.exit(f"{out / name} exists: remove it or pass --skip-train")
        settings = {**FIXED, **CANDIDATES[name]}
        subprocess.run([sys.executable, "-m", "cnnctl", "train", "caption-human", "--seed", "0", "--out-dir", str(out),
                        "--name", name, *(a for k, v in settings.items() for a in ("--set", f"{k}={v}"))], check=True)
    rows, nearest = [], None
    for name in args.only:
        scores, nearest = validation_scores(out / name)
        rows.append((name, scores))
    print(f"\n### Candidates on the validation split ({nearest['images']} images; seed 0, final model)\n")
    print("| candidate | dropout | epochs | min_count | mirror view | " +
          " | ".join(f"{d} BLEU-4 | {d} CIDEr-D" for d, _, _ in DECODINGS) + " |")
    print("|---|---:|---:|---:|---|" + "---:|" * (2 * len(DECODINGS)))
    for name, s in rows:
        cfg = s["cfg"]
        cells = " | ".join(f"{s[d]['bleu4']:.3f} | {s[d]['cider_d']:.3f}" for d, _, _ in DECODINGS)
        extra = " (GloVe 100d)" if cfg.caption.word_vectors else ""
        print(f"| {name}{extra} | {cfg.model.options['dropout']} | {cfg.train.epochs} | {cfg.caption.min_count} | "
              f"{'yes' if cfg.caption.flip else 'no'} | {cells} |")
    print(f"| baseline: nearest training image's caption | | | | | {nearest['bleu4']:.3f} | {nearest['cider_d']:.3f} "
          "| | | | |")
    best = max(rows, key=lambda r: max(r[1][d]["cider_d"] for d, _, _ in DECODINGS))
    d = max(DECODINGS, key=lambda x: best[1][x[0]]["cider_d"])[0]
    print(f"\nhighest validation CIDEr-D: {best[0]}, {d} ({best[1][d]['cider_d']:.3f}; BLEU-4 {best[1][d]['bleu4']:.3f})")


def validation_scores(run: Path):
    """The run's final model on its validation split, each decoding -> ({decoding: scores, "cfg"}, baseline)."""
    import keras

    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl import config
    from cnnctl.data.text import Vocab
    from cnnctl.models.captioning import CaptionStepper
    from cnnctl.tasks.caption import (
        CaptionDataModule,
        PairSplit,
        beam_search,
        caption_scores,
        fluent_rule,
        nearest_neighbour_captions,
    )

    cfg = config.load_run_config(run)
    data = CaptionDataModule(cfg, 64, cfg.train.seed, log=lambda *a: None)
    vocab = Vocab.from_json(json.loads((run / "vocab.json").read_text()))
    with np.load(run / "features.npz") as f:
        train, val = f["train_features"], f["val_features"]
    refs = data.tokens["val"]
    stepper = CaptionStepper(keras.models.load_model(run / "model.keras", safe_mode=True))
    out = {"cfg": cfg}
    for label, beam, norm in DECODINGS:
        best = beam_search(stepper, val, beam, cfg.caption.max_words, norm,
                           fluent=fluent_rule(vocab, cfg.caption.fluent))          # as the run decodes
        out[label] = caption_scores([vocab.decode(ids) for ids, _ in best], refs)
    base = PairSplit(train, None, None, data.tokens["train"])
    nearest = caption_scores(nearest_neighbour_captions(base, val), refs)
    return out, {**nearest, "images": len(val)}


if __name__ == "__main__":
    main()

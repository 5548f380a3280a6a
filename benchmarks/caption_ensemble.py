"""Show and Tell's ensembling (sec. 4.3.1: "dropout and ensembling ... gave a few BLEU points"): caption
runs decoding as one model, the mean of their next-word probabilities (``EnsembleStepper``;
``cnnctl caption -m RUN -m RUN ...``), against each run alone and the two baselines.

Each ``--ensemble`` is one ensemble (its runs trained with different seeds on the same data); with
several, the table gives mean ± sd over the ensembles, so that three ensembles give the mean of three
seeds as for a single model. Each run's final model (``model.keras``, what its metrics.json scores)
decodes the validation and test images over the run's cached features as the run decodes
(``Captioner.decode``: beam, length normalisation, max_words, fluent rules); an ensemble decodes as its
first run does.

    # the three runs of benchmarks/caption_human.py as one ensemble (docs/captioning.md)
    python benchmarks/caption_ensemble.py --ensemble checkpoints/bench-human/seed-0 \
        checkpoints/bench-human/seed-1 checkpoints/bench-human/seed-2
    # three ensembles of two runs each: the mean of three ensemble seeds
    python benchmarks/caption_ensemble.py --ensemble A0 A1 --ensemble B0 B1 --ensemble C0 C1

Prints markdown tables (docs/captioning.md carries them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caption_human import SIMILARITY_BANDS, mean_sd, nearest_similarity

KEYS = ("val_bleu4", "val_cider_d", "test_bleu1", "test_bleu4", "test_cider_d")


def score(captioner, features: dict[str, np.ndarray], references: dict[str, list]) -> dict:
    """``captioner``'s validation and test scores, decoded as its (first) run decodes, and its per-image
    test CIDEr-D (``"per_image"``)."""
    from cnnctl.metrics.captions import cider_d
    from cnnctl.tasks.caption import caption_scores

    row = {}
    for split in ("val", "test"):
        hyps = [words for words, _ in captioner.decode(features[split])]
        scores = caption_scores(hyps, references[split])
        row.update({f"{split}_{k}": scores[k] for k in ("bleu1", "bleu4", "cider_d")})
        if split == "test":
            row["per_image"] = np.asarray(cider_d(hyps, references[split])[1])
    return row


def band_rows(similarity: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Per-image test CIDEr-D by each test image's nearest training image's cosine ``similarity`` (the
    neighbour's pick), in benchmarks/caption_human.py's groups: where ensembling gains and loses."""
    print("\nTest images by their nearest training image's cosine similarity (mean per-image CIDEr-D):\n")
    print("| nearest training image's similarity | images | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for lo, hi in SIMILARITY_BANDS:
        group = (similarity >= lo) & (similarity < hi)
        if group.any():
            print(f"| {lo:.2f} to {min(hi, 1.0):.2f} | {int(group.sum())} | "
                  + " | ".join(f"{v[group].mean():.3f}" for v in columns.values()) + " |")
    print(f"| all | {len(similarity)} | " + " | ".join(f"{v.mean():.3f}" for v in columns.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ensemble", nargs="+", action="append", required=True, type=Path, metavar="RUN",
                    help="the runs of one ensemble (repeatable: one per ensemble seed)")
    args = ap.parse_args()
    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl.captioner import Captioner
    from cnnctl.config import load_run_config
    from cnnctl.tasks.caption import CaptionDataModule

    alone, together, firsts = [], [], None
    first = args.ensemble[0][0]
    data = CaptionDataModule(load_run_config(first), 64, 0, log=lambda *a: None)
    references = {split: data.tokens[split] for split in ("val", "test")}
    for runs in args.ensemble:
        with np.load(runs[0] / "features.npz") as f:
            features = {split: f[f"{split}_features"] for split in ("train", "val", "test")}
        for run in runs[1:]:                     # the members share the data: the same cached features
            with np.load(run / "features.npz") as f:
                if not all(np.array_equal(f[f"{s}_features"], features[s]) for s in features):
                    sys.exit(f"{run}'s features differ from {runs[0]}'s: ensemble runs of one data build")
        members = [Captioner(run, best=False) for run in runs]
        ensemble = Captioner(runs[0], best=False).ensemble(members[1:])
        alone += [score(m, features, references) for m in members]
        together.append(score(ensemble, features, references))
        if firsts is None:                       # the first ensemble and its runs, for the similarity tables
            firsts = (features, alone[-len(runs):], together[-1],
                      [(run.name, m) for run, m in zip(runs, members)] + [("the ensemble", ensemble)])
        each = ", ".join(f"{a['test_cider_d']:.3f}" for a in alone[-len(runs):])
        print(f"ensemble of {', '.join(map(str, runs))}: test CIDEr-D {together[-1]['test_cider_d']:.3f} "
              f"(alone: {each})", flush=True)
    m = json.loads((first / "metrics.json").read_text())
    nearest = {"val_bleu4": m["val_baseline_nearest_bleu4"], "val_cider_d": m["val_baseline_nearest_cider_d"],
               **{f"test_{k}": m[f"baseline_nearest_{k}"] for k in ("bleu1", "bleu4", "cider_d")}}
    sizes = sorted({len(r) for r in args.ensemble})
    print(f"\n{len(args.ensemble)} ensemble(s) of {'/'.join(map(str, sizes))} runs; {len(alone)} runs alone; "
          f"{m['test_images']} test images\n")
    print("| | val BLEU-4 | val CIDEr-D | test BLEU-1 | test BLEU-4 | test CIDEr-D |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rows in ((f"show_and_tell, ensemble of {'/'.join(map(str, sizes))} ({len(together)} ensembles)",
                         together), (f"show_and_tell, one run ({len(alone)} runs)", alone)):
        print(f"| {label} | " + " | ".join(mean_sd(np.array([r[k] for r in rows])) for k in KEYS) + " |")
    print("| baseline: nearest training image's caption | " + " | ".join(f"{nearest[k]:.3f}" for k in KEYS) + " |")
    d4 = np.array([r["test_bleu4"] for r in together]) - nearest["test_bleu4"]
    dc = np.array([r["test_cider_d"] for r in together]) - nearest["test_cider_d"]
    print(f"\nensemble minus the nearest-neighbour caption on test: BLEU-4 {d4.mean():+.3f}, CIDEr-D "
          f"{dc.mean():+.3f}; ensembles ahead on both: {int(np.sum((d4 > 0) & (dc > 0)))} of {len(together)}")
    from cnnctl.metrics.captions import cider_d
    from cnnctl.tasks.caption import PairSplit, nearest_neighbour_captions

    features, members, ensemble, decoders = firsts
    train, test = features["train"], features["test"]
    nearest_caps = nearest_neighbour_captions(PairSplit(train, None, None, data.tokens["train"]), test)
    band_rows(nearest_similarity(train, test),
              {"one run (mean of the first ensemble's runs)": np.mean([a["per_image"] for a in members], 0),
               "the first ensemble": ensemble["per_image"],
               "nearest neighbour": np.asarray(cider_d(nearest_caps, references["test"])[1])})
    twins(features, data.tokens["train"], decoders)


def twins(features: dict[str, np.ndarray], train_captions: list, decoders) -> None:
    """How many validation and test images have a close training image (cosine >= 0.8), and, for the test
    images at 0.8 to 0.9 (where the neighbour leads), whether each decoder (label, Captioner) writes that
    training image's own caption when given its features (memorised) and the same caption for the test
    image (consistent)."""
    from cnnctl.tasks.caption_consensus import unit_rows

    train = unit_rows(features["train"])
    similarity = {split: unit_rows(features[split]) @ train.T for split in ("val", "test")}
    close = ", ".join(f"{split} {np.mean(sim.max(axis=1) >= 0.8):.0%} of {len(sim)}" for split, sim in similarity.items())
    print(f"\nimages whose nearest training image has cosine >= 0.8: {close}")
    top = similarity["test"].max(axis=1)
    band = np.flatnonzero((top >= 0.8) & (top < 0.9))
    twin = similarity["test"].argmax(axis=1)[band]
    print(f"\nthe {len(band)} test images at 0.8 to 0.9, and their nearest training images:\n")
    print("| decoder | on the training image: its own caption | on the test image: the same caption as on the training image |")
    print("|---|---:|---:|")
    for label, captioner in decoders:
        on_twin = [words for words, _ in captioner.decode(features["train"][twin])]
        on_test = [words for words, _ in captioner.decode(features["test"][band])]
        memorised = np.mean([c in train_captions[i] for c, i in zip(on_twin, twin)])
        print(f"| {label} | {memorised:.0%} | {np.mean([a == b for a, b in zip(on_twin, on_test)]):.0%} |")


if __name__ == "__main__":
    main()

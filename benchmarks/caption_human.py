"""Captioning with human-written sentences: Show and Tell against the two baselines, mean of 3 seeds.

The data are openclipart drawings with their titles and Tux Paint stamps with their sentences (the
photo cut-outs also pasted onto real photos); the split is caption-disjoint, so no test sentence
was ever seen in training and no method can copy one. For each seed the script runs
``cnnctl train caption-human --seed S`` (the EfficientNet-Lite0 features are computed by the first
run and reused by the others) and reads the run's metrics.json: the model's test scores (beam 3)
and the two baselines computed on the same test images -- the most frequent training caption, and
the caption of the nearest training image in encoder feature space (Devlin et al. 2015).

    cnnctl data openclipart checkpoints/data/human && cnnctl data tuxpaint checkpoints/data/human
    python benchmarks/caption_human.py [--out checkpoints/bench-human] [--seeds 0 1 2] [--skip-train]
                                       [--split family] [--set KEY=VALUE ...]

``--split family`` re-splits the same images family-disjointly (``cnnctl.data.caption_families``:
captions sharing at least half of their content words, and their chains, go to one split) into
``captions-family.csv`` beside the data, and trains ``OUT/family-seed-S``. It measures how much of
the nearest-neighbour baseline's score comes from sibling titles ("... signal flag golf" in test,
"... signal flag tango" in training) that a caption-disjoint split leaves on both sides.

Then the captions' form, beside the test references': words per caption, captions cut off (ending on
a common word that training captions almost never end on: "breakfast b" for "... b and w", "a man
in"), captions repeating a word back to back ("man in in"), and captions that are a training caption
word for word. Scores alone miss these.

Last, the first seed's test images grouped by the cosine similarity of their nearest training image
(the neighbour's pick): each group's per-image CIDEr-D for the model and the neighbour, and its share
of the corpus gap between them.

Prints markdown tables (docs/captioning.md carries them).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BASELINES = (("baseline: nearest training image's caption", "baseline_nearest_"),
             ("baseline: most frequent training caption", "baseline_frequent_"))


def decoding_rows(beam: int, length_norm: bool) -> tuple[tuple[str, str], ...]:
    """The model's rows: the recipe's decoding (``test_``), and greedy beside it when that is a beam."""
    if beam == 1:
        return (("show_and_tell, greedy (the recipe's decoding)", "test_"),)
    per_word = ", ranked per word" if length_norm else ""
    return ((f"show_and_tell, beam {beam}{per_word} (the recipe's decoding)", "test_"),
            ("show_and_tell, greedy", "test_greedy_"))
KEYS = ("bleu1", "bleu4", "cider_d")


def mean_sd(v: np.ndarray) -> str:
    """``mean ± sd`` over seeds (sd 0 for one seed)."""
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="checkpoints/data/human/captions.csv")
    ap.add_argument("--out", default="checkpoints/bench-human")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/seed-S runs")
    ap.add_argument("--split", choices=("caption", "family"), default="caption",
                    help="caption: the data's own caption-disjoint split; family: re-split family-disjointly")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to `cnnctl train` (settings tried beside the recipe's; repeatable)")
    args = ap.parse_args()
    out = Path(args.out)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(sibling_report(Path(args.data)))
    if args.split == "family":
        args.data = str(write_family_split(Path(args.data)))
    run_prefix = "family-" if args.split == "family" else ""
    runs, walls = [], []
    for seed in args.seeds:
        run = out / f"{run_prefix}seed-{seed}"
        if not args.skip_train:
            if run.exists():
                sys.exit(f"{run} exists: remove it or pass --skip-train")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cnnctl", "train", "caption-human", "--data", args.data,
                            "--out-dir", str(out), "--name", run.name, "--seed", str(seed),
                            *(a for kv in args.set for a in ("--set", kv))], check=True)
            walls.append(time.perf_counter() - t0)
        runs.append(json.loads((run / "metrics.json").read_text()))
    m = runs[0]
    print(f"\n### Human-written captions, {args.split}-disjoint split: {m['test_images']} test images, "
          f"mean ± sd over seeds {', '.join(map(str, args.seeds))}\n")
    print("| | BLEU-1 | BLEU-4 | CIDEr-D |")
    print("|---|---:|---:|---:|")
    table = {}
    first = out / f"{run_prefix}seed-{args.seeds[0]}"
    length_norm = json.loads((first / "caption.json").read_text()).get("length_norm", False)
    rows = decoding_rows(m["test_beam"], length_norm) + BASELINES
    for label, prefix in rows:
        vals = {k: np.array([r[prefix + k] for r in runs]) for k in KEYS}
        table[prefix] = vals
        print(f"| {label} | " + " | ".join(mean_sd(v) for v in vals.values()) + " |")
    decoding = "greedy" if m["test_beam"] == 1 else f"beam {m['test_beam']}"
    print(f"\n| show_and_tell ({decoding}) minus | BLEU-4 | CIDEr-D | seeds ahead on both |")
    print("|---|---:|---:|---:|")
    for label, prefix in BASELINES:
        d4 = table["test_"]["bleu4"] - table[prefix]["bleu4"]
        dc = table["test_"]["cider_d"] - table[prefix]["cider_d"]
        print(f"| {label} | {d4.mean():+.3f} | {dc.mean():+.3f} | {int(np.sum((d4 > 0) & (dc > 0)))} of {len(runs)} |")
    if "val_cider_d" in m and "val_baseline_nearest_cider_d" in m:
        print("\nThe validation split (what settings are chosen on; the model's captions decoded as on test):\n")
        print("| validation | BLEU-4 | CIDEr-D |")
        print("|---|---:|---:|")
        for label, b4, cd in (("show_and_tell", "val_bleu4", "val_cider_d"),
                              ("baseline: nearest training image's caption", "val_baseline_nearest_bleu4",
                               "val_baseline_nearest_cider_d")):
            v4, vc = (np.array([r[k] for r in runs]) for k in (b4, cd))
            print(f"| {label} | {mean_sd(v4)} | {mean_sd(vc)} |")
    print(f"\nvocabulary {m.get('vocab_size', '?')} words; test sentences never seen in training "
          f"(exact-sentence match: model {np.mean([r['test_exact'] for r in runs]):.1%}, nearest baseline "
          f"{np.mean([r['baseline_nearest_exact'] for r in runs]):.1%})")
    # how far the test captions are from what a word-level model can write: the first run's vocabulary
    saved_vocab = json.loads((first / "vocab.json").read_text())
    vocab = set(saved_vocab["words"])
    from cnnctl.data.text import tokenize

    refs = [tokenize(c["references"][0]) for c in json.loads((first / "captions.json").read_text())]
    words = [w for r in refs for w in r]
    min_count = saved_vocab["min_count"]
    unseen = "never seen in training" if min_count <= 1 else f"seen < {min_count} times in training"
    print(f"test caption words outside the vocabulary ({unseen}): "
          f"{np.mean([w not in vocab for w in words]):.0%} of words; captions with at least one: "
          f"{np.mean([any(w not in vocab for w in r) for r in refs]):.0%}")
    for seed in args.seeds:                       # what the validation loss would have picked
        with (out / f"{run_prefix}seed-{seed}" / "history.csv").open() as f:
            hist = list(csv.DictReader(f))
        if hist and "val_cider_d" in hist[0]:
            lo = min(hist, key=lambda r: float(r["val_loss"]))
            hi = max(hist, key=lambda r: float(r["val_cider_d"]))
            print(f"seed {seed}: lowest val_loss at epoch {lo['epoch']} (val CIDEr-D there "
                  f"{float(lo['val_cider_d']):.3f}); highest val CIDEr-D at epoch {hi['epoch']} "
                  f"({float(hi['val_cider_d']):.3f}) of {len(hist)}")
    form_rows([out / f"{run_prefix}seed-{seed}" for seed in args.seeds], Path(args.data))
    similarity_rows(first)
    if walls:
        print(f"training wall time per seed (features computed once, by the first): "
              f"{', '.join(f'{w:.0f} s' for w in walls)}")


def caption_form(captions: list[list[str]], train: list[list[str]]) -> dict[str, float]:
    """Words per caption and the shares of captions that are cut off (they end on a word that almost
    never ends a training caption: the vocabulary's ``rarely_last``, "in", "and", "a"), that repeat a word
    back to back, and that are a training caption word for word."""
    from cnnctl.data.text import Vocab

    never_last = set(Vocab.build(train, min_count=1).rarely_last)
    whole = {" ".join(c) for c in train}
    return {"words": float(np.mean([len(c) for c in captions])),
            "cut off": float(np.mean([bool(c) and c[-1] in never_last for c in captions])),
            "repeats": float(np.mean([any(a == b for a, b in itertools.pairwise(c)) for c in captions])),
            "copied": float(np.mean([" ".join(c) in whole for c in captions]))}


def form_rows(runs: list[Path], data: Path) -> None:
    from cnnctl.data.text import tokenize

    rows = _rows(data)
    base = data.parent
    train = [tokenize(r["caption"]) for r in rows if r["split"] == "train"]
    per_run = [caption_form([c["caption"].split() for c in json.loads((run / "captions.json").read_text())], train)
               for run in runs]
    refs = caption_form([tokenize(r["caption"]) for r in rows if r["split"] == "test"], train)
    print(f"\nThe test captions' form ({base}; mean ± sd over the runs):\n")
    print("| | words per caption | cut off | repeats a word back to back | "
          "a training caption word for word |")
    print("|---|---:|---:|---:|---:|")
    print("| show_and_tell (the recipe's decoding) | " + " | ".join(
        mean_sd(np.array([f[k] for f in per_run])) for k in ("words", "cut off", "repeats", "copied")) + " |")
    print(f"| the test references | {refs['words']:.3f} | {refs['cut off']:.3f} | {refs['repeats']:.3f} | "
          f"{refs['copied']:.3f} |")


# groups of test images by their nearest training image's cosine similarity (the neighbour's pick)
SIMILARITY_BANDS = ((0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01))


def nearest_similarity(train: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(queries,) cosine similarity of each query's nearest training image, in the frozen features."""
    from cnnctl.tasks.caption_consensus import unit_rows

    return (unit_rows(query) @ unit_rows(train).T).max(axis=1)


def similarity_rows(run: Path) -> None:
    """Where the neighbour's lead comes from: the test images grouped by the cosine similarity of their
    nearest training image (the baseline's pick), each group's mean per-image CIDEr-D (document
    frequencies of the whole test split, as the corpus score) for the run's captions and the neighbour's."""
    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl.config import load_run_config
    from cnnctl.metrics.captions import cider_d
    from cnnctl.tasks.caption import (
        CaptionDataModule,
        PairSplit,
        nearest_neighbour_captions,
    )

    data = CaptionDataModule(load_run_config(run), 64, 0, log=lambda *a: None)
    with np.load(run / "features.npz") as f:
        train, test = f["train_features"], f["test_features"]
    captions = json.loads((run / "captions.json").read_text())
    hyps = [c["caption"].split() for c in captions]
    refs = data.tokens["test"]
    nearest = nearest_neighbour_captions(PairSplit(train, None, None, data.tokens["train"]), test)
    model_scores, nearest_scores = cider_d(hyps, refs)[1], cider_d(nearest, refs)[1]

    similarity = nearest_similarity(train, test)
    n = len(hyps)
    print(f"\n{run.name}'s test images by their nearest training image's cosine similarity (per-image "
          "CIDEr-D; share of the corpus gap = the group's difference x its share of the images):\n")
    print("| nearest training image's similarity | images | show_and_tell | nearest neighbour | "
          "same caption | share of the gap |")
    print("|---|---:|---:|---:|---:|---:|")
    for lo, hi in SIMILARITY_BANDS:
        group = (similarity >= lo) & (similarity < hi)
        if not group.any():
            continue
        same = np.mean([hyps[i] == nearest[i] for i in np.flatnonzero(group)])
        gap = (nearest_scores[group] - model_scores[group]).sum() / n
        print(f"| {lo:.2f} to {min(hi, 1.0):.2f} | {int(group.sum())} | {model_scores[group].mean():.3f} | "
              f"{nearest_scores[group].mean():.3f} | {same:.0%} | {gap:+.3f} |")
    copied = np.mean([" ".join(h) in {" ".join(c) for caps in data.tokens["train"] for c in caps} for h in hyps])
    print(f"| all | {n} | {model_scores.mean():.3f} | {nearest_scores.mean():.3f} | | "
          f"{nearest_scores.mean() - model_scores.mean():+.3f} |")
    print(f"\n{run.name}'s test captions that copy a training caption word for word: {copied:.0%}")


def _rows(data: Path) -> list[dict]:
    with data.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def sibling_report(data: Path) -> str:
    """How many test captions have a training caption sharing at least half of their content words."""
    from cnnctl.data.caption_families import content_words

    rows = _rows(data)
    train = {content_words(r["caption"]) for r in rows if r["split"] == "train"}
    test = [content_words(r["caption"]) for r in rows if r["split"] == "test"]
    near = [any(len(t & w) >= 0.5 * len(t | w) for w in train) for t in test]
    return (f"{data}: {len(test)} test captions; {np.mean(near):.0%} have a training caption sharing at least "
            f"half of their content words (Jaccard >= 0.5)")


def write_family_split(data: Path) -> Path:
    """``captions-family.csv`` beside ``data``: the same rows, family-disjoint splits."""
    from cnnctl.data.caption_families import family_split

    rows = _rows(data)
    splits = family_split([r["caption"] for r in rows])
    path = data.with_name("captions-family.csv")
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "caption", "split"])
        writer.writerows((r["image"], r["caption"], s) for r, s in zip(rows, splits))
    print(f"{path}: family-disjoint split; " + sibling_report(path).split(": ", 1)[1])
    return path


if __name__ == "__main__":
    main()

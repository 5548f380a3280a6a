"""Consensus re-ranking (``caption.consensus``) applied to trained caption runs: chosen on validation,
reported on test beside the nearest-neighbour baseline.

    python benchmarks/caption_consensus.py RUN [RUN ...] [--beams 3 5 10] [--ks 1 3 5 10 20]
                                           [--weights 0 0.3 1 3]

Each run's final model (``model.keras``, as its ``metrics.json`` scores it) decodes its validation and
test images with beams of each width, ranked per word as the run ranks them. Of each image's finished
beams, ``cnnctl.tasks.caption_consensus.Consensus`` chooses by the captions of its ``k`` nearest training
images (the run's own cached features and training captions), weighing in the log-probability per token.

The setting (beam, k, weight) is chosen on the mean validation CIDEr-D over the runs; the test split is
read only for that one setting. Consensus only re-ranks, so these are the figures a run trained with
``--set caption.beam=B --set caption.consensus=K --set caption.consensus_weight=W`` reports
(``test_*`` in its metrics.json); the script checks that its choice equals ``Consensus.choose``'s.

Prints markdown tables (docs/captioning.md carries them).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np


def mean_sd(v) -> str:
    v = np.asarray(v, float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--beams", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 1.0, 3.0])
    args = ap.parse_args()

    import cnnctl.models  # noqa: F401 - registers the layers model.keras names
    from cnnctl.captioner import Captioner
    from cnnctl.config import load_run_config
    from cnnctl.tasks.caption import (
        CaptionDataModule,
        PairSplit,
        beam_search,
        caption_scores,
        fluent_rule,
        nearest_neighbour_captions,
    )
    from cnnctl.tasks.caption_consensus import Consensus, unit_rows

    settings = list(itertools.product(args.beams, args.ks, args.weights))
    val_scores = {s: [] for s in settings}
    prepared = []
    for run in args.runs:
        cfg = load_run_config(run)
        captioner = Captioner(run, best=False)
        data = CaptionDataModule(cfg, cfg.train.batch_size, cfg.train.seed, log=lambda m: None)
        with np.load(run / "features.npz") as f:
            feats = {s: f[f"{s}_features"] for s in ("train", "val", "test")}
        chooser = Consensus(feats["train"], data.tokens["train"], max(args.ks))
        norm, max_words = captioner.settings.get("length_norm", False), int(captioner.settings["max_words"])
        fluent = fluent_rule(captioner.vocab, bool(captioner.settings.get("fluent", False)))   # as the run decodes
        beams = {}
        for split in ("val", "test"):
            near = chooser.neighbours(feats[split])
            for beam in args.beams:
                cands = beam_search(captioner.stepper, feats[split], beam, max_words, norm, every_beam=True,
                                    fluent=fluent)
                words = [[captioner.vocab.decode(ids) for ids, _ in c] for c in cands]
                per_token = [np.array([lp / (len(ids) + 1) for ids, lp in c]) for c in cands]
                # (candidates, neighbours) CIDEr-D of each candidate against each neighbour's captions
                pair = [np.array([[chooser.agreement(w, near[i, j:j + 1]) for j in range(near.shape[1])]
                                  for w in words[i]]) for i in range(len(cands))]
                beams[split, beam] = (cands, words, per_token, pair)
        prepared.append((run, captioner, data, feats, beams))

        def pick(split, beam, k, weight, beams=beams):
            cands, words, per_token, pair = beams[split, beam]
            return [words[i][int(np.argmax(pair[i][:, :k].mean(axis=1) + weight * per_token[i]))]
                    for i in range(len(cands))]

        prepared[-1] += (pick,)
        for s in settings:
            val_scores[s].append(caption_scores(pick("val", *s), data.tokens["val"])["cider_d"])
        print(f"{run}: decoded", flush=True)

    print(f"\n### Consensus re-ranking on validation: mean CIDEr-D over {len(args.runs)} run(s)\n")
    print("| beam | k | weight | validation CIDEr-D |\n|---:|---:|---:|---:|")
    for s in settings:
        print(f"| {s[0]} | {s[1]} | {s[2]:g} | {mean_sd(val_scores[s])} |")
    best = max(settings, key=lambda s: np.mean(val_scores[s]))
    beam, k, weight = best
    print(f"\nchosen on validation: beam {beam}, k {k}, weight {weight:g}\n")

    rows = {"model": [], "alone": [], "recipe": [], "nearest": []}
    for run, captioner, data, feats, beams, pick in prepared:
        chosen = pick("test", beam, k, weight)
        # the script's choice is the package's: the same chooser, at the chosen setting
        package = Consensus(feats["train"], data.tokens["train"], k, weight).choose(
            feats["test"], beams["test", beam][0], captioner.vocab.decode)
        assert [captioner.vocab.decode(ids) for ids, _ in package] == chosen, "the script and Consensus disagree"
        refs = data.tokens["test"]
        rows["model"].append(caption_scores(chosen, refs))
        rows["alone"].append(caption_scores([w[0] for w in beams["test", beam][1]], refs))
        metrics = json.loads((run / "metrics.json").read_text())          # the run's own decoding, as trained
        rows["recipe"].append({m: metrics[f"test_{m}"] for m in ("bleu1", "bleu4", "cider_d")})
        nearest = nearest_neighbour_captions(PairSplit(feats["train"], None, None, data.tokens["train"]),
                                             feats["test"])
        rows["nearest"].append(caption_scores(nearest, refs))
    n = len(prepared)
    print(f"### Test, mean ± sd over {n} run(s)\n")
    print("| | BLEU-1 | BLEU-4 | CIDEr-D |\n|---|---:|---:|---:|")
    for label, key in ((f"show_and_tell, beam {beam} re-ranked by consensus (k {k}, weight {weight:g})", "model"),
                       (f"show_and_tell, beam {beam} alone", "alone"),
                       ("show_and_tell as the run decodes (its metrics.json)", "recipe"),
                       ("baseline: nearest training image's caption", "nearest")):
        print(f"| {label} | " + " | ".join(mean_sd([r[m] for r in rows[key]]) for m in ("bleu1", "bleu4", "cider_d"))
              + " |")
    d4 = np.array([m["bleu4"] - b["bleu4"] for m, b in zip(rows["model"], rows["nearest"])])
    dc = np.array([m["cider_d"] - b["cider_d"] for m, b in zip(rows["model"], rows["nearest"])])
    print(f"\nre-ranked minus nearest neighbour: BLEU-4 {d4.mean():+.3f}, CIDEr-D {dc.mean():+.3f}; "
          f"runs ahead on both: {int(np.sum((d4 > 0) & (dc > 0)))} of {n}")
    # why re-ranking can or cannot close the gap: is the neighbour's caption among the beam's candidates?
    wide = max(args.beams)
    print(f"\nWhere the neighbour's caption is in the widest beam ({wide}), first run's test images by their "
          "nearest training image's cosine similarity:\n")
    print(f"| similarity | images | the beam's best | among its {wide} beams |\n|---|---:|---:|---:|")
    run, captioner, data, feats, beams, pick = prepared[0]
    sim = unit_rows(feats["test"]) @ unit_rows(feats["train"]).T
    nearest, similarity = sim.argmax(axis=1), sim.max(axis=1)
    words = beams["test", wide][1]
    twin = [data.tokens["train"][j][0] for j in nearest]
    first = np.array([w[0] == t for w, t in zip(words, twin)])
    inside = np.array([t in w for w, t in zip(words, twin)])
    for lo, hi in ((0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01)):
        g = (similarity >= lo) & (similarity < hi)
        if g.any():
            print(f"| {lo:.2f} to {min(hi, 1.0):.2f} | {int(g.sum())} | {first[g].mean():.0%} | {inside[g].mean():.0%} |")
    same = np.mean([np.mean([" ".join(c) in {" ".join(t) for caps in data.tokens["train"] for t in caps}
                             for c in pick("test", beam, k, weight)]) for _, _, data, _, _, pick in prepared])
    print(f"re-ranked test captions that copy a training caption word for word: {same:.0%}")


if __name__ == "__main__":
    main()

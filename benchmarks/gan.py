"""The GAN line on the bundled Fashion-MNIST: final scores per model, FID per epoch on one plot, and
whether the WGAN critic's estimate tracks sample quality (Arjovsky et al. 2017, Fig. 3-4).

For each recipe the script runs ``cnnctl train RECIPE --seed S`` into OUT/RECIPE (unless
``--skip-train``) and reads the run's history.csv and metrics.json. Scores are in the judge
classifier's feature space (cnnctl.train.judge): comparable between these runs, not with published
FIDs (Inception pool3 features).

    python benchmarks/gan.py [--recipes dcgan-fashion cgan-fashion ...] [--out checkpoints/bench-gan]
                             [--skip-train] [--plot docs/images/gan-fid.png]
    python benchmarks/gan.py --noise-ablation [--sigma 0.1] [--out checkpoints/bench-gan]

``--inception N`` (default 2000; 0 = skip) also scores each run's final model in the standard space:
FID/KID on Inception pool3 features (cnnctl.metrics.inception_space) of N samples against N real
test images, with the floor of those N against N other real ones. About 0.12 s per image here, so
it is a separate step after training (not in the wall times); the result is kept in
RUN/inception-N.json and reused.

``--noise-ablation`` trains dcgan-fashion four times: without and with instance noise (Arjovsky &
Bottou 2017, sec. 4; sigma annealed to 0 over the first half), at the paper's learning rate and at
5x it, and prints FID, the best epoch's FID and whether the run diverged (stopped by the NaN guard).

Prints markdown tables (docs/gans.md carries them).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RECIPES = ("gan-fashion", "cgan-fashion", "dcgan-fashion", "wgan-fashion", "wgan-gp-fashion")


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):                      # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--out", default="checkpoints/bench-gan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/RECIPE runs")
    ap.add_argument("--plot", default="", help="write the FID-per-epoch plot here (PNG)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="passed to every run")
    ap.add_argument("--label", default="sneaker", help="conditional runs: the class `cnnctl generate --label` draws")
    ap.add_argument("--judge", default="", help="the judge run (default: the one each run's metrics.json names)")
    ap.add_argument("--inception", type=int, default=2000, help="samples scored in Inception space (0 = skip)")
    ap.add_argument("--noise-ablation", action="store_true")
    ap.add_argument("--sigma", type=float, default=0.1, help="instance noise of the ablation (G's units)")
    args = ap.parse_args()
    if args.noise_ablation:
        return noise_ablation(args)
    out = Path(args.out)
    runs = {}
    for recipe in args.recipes:
        run = out / recipe
        if not args.skip_train:
            if run.exists():
                sys.exit(f"{run} exists: remove it or pass --skip-train")
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "cnnctl", "train", recipe, "--out-dir", str(out), "--name", recipe,
                   "--seed", str(args.seed)] + [x for o in args.overrides for x in ("--set", o)]
            subprocess.run(cmd, check=True)
            print(f"{recipe}: {time.perf_counter() - t0:.0f} s", flush=True)
        history = list(csv.DictReader((run / "history.csv").open()))
        runs[recipe] = (history, json.loads((run / "metrics.json").read_text()))

    first = next(iter(runs.values()))[1]
    print(f"\n### Final scores: {first.get('test_samples')} samples against {first.get('test_real_images')} real "
          f"test images (judge test accuracy {first.get('judge_test_accuracy', float('nan')):.4f})\n")
    print("| recipe | epochs | s/epoch | FID | KID | IS analogue | classes covered | class KL | label acc. | "
          "Parzen LL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for recipe, (hist, m) in runs.items():
        sec = np.mean([float(r["seconds"]) for r in hist])
        label = f"{m['test_label_accuracy']:.3f}" if "test_label_accuracy" in m else "-"
        print(f"| {recipe} | {len(hist)} | {sec:.0f} | {m['test_fid']:.1f} | {m['test_kid']:.2f} | {m['test_is']:.2f} | "
              f"{m['test_covered']} | {m['test_class_kl']:.3f} | {label} | {m['test_parzen_ll']:.0f} ± "
              f"{m['test_parzen_ll_se']:.0f} |")
    print(f"\nreal-vs-real floor (two halves of the test set): FID {first['real_floor_fid']:.1f}, "
          f"KID {first['real_floor_kid']:.2f}. Goodfellow et al. 2014, Table 1 (MNIST, not Fashion-MNIST): "
          "GAN Parzen log-likelihood 225 ± 2.")

    if args.inception:
        print(f"\n### Standard space: Inception pool3 FID / KID, {args.inception} samples against "
              f"{args.inception} real test images\n")
        print("| recipe | FID (Inception) | KID (Inception) |")
        print("|---|---:|---:|")
        scores = {recipe: inception_scores(out / recipe, args.inception) for recipe in runs}
        for recipe, sc in scores.items():
            print(f"| {recipe} | {sc['test_inception_fid']:.1f} | {sc['test_inception_kid']:.3f} |")
        sc = next(iter(scores.values()))
        print(f"\nreal-vs-real floor at this size ({args.inception} against {args.inception} other test images): "
              f"FID {sc['real_floor_inception_fid']:.1f}, KID {sc['real_floor_inception_kid']:.3f}.")

    for recipe, (_, m) in runs.items():
        if "test_label_accuracy" in m:
            judge = args.judge or m.get("judge_run")
            if not judge:
                print(f"\n{recipe}: its metrics.json names no judge run; pass --judge RUN for the label check")
                continue
            print(f"\n{recipe}: " + label_check(out / recipe, judge, args.label, args.seed))

    print("\n### Does the loss track sample quality? Spearman correlation with FID over epochs\n")
    print("| recipe | signal | Spearman rho | epochs |")
    print("|---|---|---:|---:|")
    for recipe, (hist, _) in runs.items():
        fid = [float(r["fid"]) for r in hist]
        key = "w_dist" if "w_dist" in hist[0] else "d_loss"
        rho = spearman([float(r[key]) for r in hist], fid)
        what = "critic's Wasserstein estimate" if key == "w_dist" else "discriminator loss"
        print(f"| {recipe} | {what} | {rho:+.2f} | {len(hist)} |")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for recipe, (hist, _) in runs.items():
            ax.plot([int(r["epoch"]) for r in hist], [float(r["fid"]) for r in hist], marker="o", label=recipe)
        ax.axhline(first["real_floor_fid"], color="grey", ls="--", label="real vs real")
        ax.set_xlabel("epoch")
        ax.set_ylabel("FID (judge features)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=100)
        print(f"\nplot: {args.plot}")


def inception_scores(run: Path, n: int) -> dict:
    """The run's final model scored in Inception pool3 space (``cnnctl.tasks.generate.inception_scores``,
    as ``generate.inception_samples = n`` does at the end of training); kept in RUN/inception-N.json."""
    kept = run / f"inception-{n}.json"
    metrics = json.loads((run / "metrics.json").read_text())
    if metrics.get("inception_samples") == n:
        return metrics
    if kept.exists():
        return json.loads(kept.read_text())
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.generator import load_generator
    from cnnctl.metrics.inception_space import InceptionSpace
    from cnnctl.tasks import generate

    model, _ = load_generator(run, best=False)
    t0 = time.perf_counter()
    space = InceptionSpace(fashion_mnist()["test"].images, n, log=lambda m: print(m, flush=True))
    scores = generate.inception_scores(model, space)
    print(f"{run.name}: Inception scores in {time.perf_counter() - t0:.0f} s", flush=True)
    kept.write_text(json.dumps(scores, indent=2))
    return scores


def label_check(run: Path, judge_run: str, label: str, seed: int, n: int = 1000) -> str:
    """``cnnctl generate RUN --label LABEL --n 1000`` as a user runs it, read back from the PNG files and
    classified by the run's judge."""
    import tempfile

    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cnnctl.train.judge import Judge

    judge = Judge(Path(judge_run))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "cnnctl", "generate", str(run), "--label", label, "--n", str(n),
                        "--seed", str(seed), "--out", tmp], check=True, capture_output=True)
        pixels = np.stack([np.asarray(Image.open(Path(tmp) / f"{i:06d}.png")) for i in range(n)])
    _, probs = judge.describe(pixels[..., None] if pixels.ndim == 3 else pixels)
    index = [c.lower() for c in judge.class_names].index(label.lower())
    accuracy = float(np.mean(probs.argmax(axis=1) == index))
    return f"`cnnctl generate --label {label} --n {n}`: the judge reads {accuracy:.1%} of them as {label}"


def noise_ablation(args):
    out = Path(args.out)
    rows = []
    for lr_scale in (1, 5):
        for sigma in (0.0, args.sigma):
            name = f"dcgan-noise{sigma:g}-lr{lr_scale}x"
            run = out / name
            if not args.skip_train:
                if run.exists():
                    sys.exit(f"{run} exists: remove it or pass --skip-train")
                cmd = [sys.executable, "-m", "cnnctl", "train", "dcgan-fashion", "--out-dir", str(out), "--name", name,
                       "--seed", str(args.seed), "--set", f"optimizer.lr={2e-4 * lr_scale}",
                       "--set", f"model.instance_noise={sigma}"] + [x for o in args.overrides for x in ("--set", o)]
                code = subprocess.run(cmd, check=False).returncode
            else:
                code = 0 if (run / "metrics.json").exists() else 2
            history = list(csv.DictReader((run / "history.csv").open())) if (run / "history.csv").exists() else []
            metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
            fids = [float(r["fid"]) for r in history if r.get("fid")]
            rows.append((sigma, lr_scale, metrics.get("test_fid"), min(fids) if fids else None, len(history),
                         code != 0 or not metrics))
    print("\n### Instance noise on DCGAN (Fashion-MNIST, judge features)\n")
    print("| instance noise sigma | learning rate | final FID | best epoch FID | epochs | diverged (NaN guard) |")
    print("|---:|---|---:|---:|---:|---|")
    for sigma, scale, final, best, epochs, diverged in rows:
        f = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"| {sigma:g} | {scale} x 2e-4 | {f(final)} | {f(best)} | {epochs} | {'yes' if diverged else 'no'} |")


if __name__ == "__main__":
    main()

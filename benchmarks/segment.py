"""Segmentation on real nuclei and on Fashion-MNIST free scenes: test scores per run, the nuclei
count with and without U-Net's weight map, and overlap-tile inference speed.

    python benchmarks/segment.py [--runs nuclei nuclei-no-weight-map nuclei-same scenes]
                                 [--out checkpoints/bench-segment] [--skip-train] [--speed]

Runs (each ``cnnctl train RECIPE --name RUN --seed S [--set ...]`` into OUT/RUN, unless --skip-train):

- ``nuclei``: ``segment-nuclei`` (valid-padding U-Net, weight map, SGD momentum 0.99, batch 1) on the
  bundled DSB2018 image, tested on its right quarter, which training never sees;
- ``nuclei-no-weight-map``: the same without the weight map (``segment.weight_map = false``);
- ``nuclei-same``: the same with a same-padding U-Net (``model.padding = "same"``, 128x128 tiles);
- ``nuclei-segnet``: ``segment-nuclei-segnet``, the same data, weights and optimiser with
  ``segnet_small`` (decoder: unpooling by the encoder's switches, no skip connections) on 128x128
  windows: SegNet against ``nuclei-same``'s U-Net at the same number of epochs;
- ``scenes``: ``segment-scenes``, a same-padding U-Net on Fashion-MNIST free scenes (synthetic
  layout, real objects), 500 test scenes from Fashion-MNIST's test images;
- ``scenes-segnet``: ``segment-scenes-segnet``, ``segnet_small`` on the same scenes with the same
  optimiser and epochs: SegNet against ``scenes``' U-Net;
- ``scenes-encoder``: ``segment-scenes`` with a U-Net on the bundled Fashion-MNIST classifier's
  convolutions (``model.encoder = "fashion_cnn:fashion_mnist"``, strides 2 and 4; the rest of the
  contracting path new) at the recipe's earlier settings (no stem, 16 base filters, depth 4, 6 epochs
  of 6,000 scenes): a pretrained encoder against a U-Net trained from scratch.

For the nuclei runs the script also counts the nuclei ``cnnctl segment --instances`` would find
(connected components of the predicted nuclei) in the test region, against the true count there.

``--independent N``: N test scenes built by ``benchmarks/independent_scenes.py`` (written from
shared/SCENES.md alone: its own random stream, resize and placement) are written as an image/mask
folder, segmented with the ``scenes`` run's network as ``cnnctl segment --model RUN`` does
(``cnnctl.segmenter``), and scored beside the run's own test scenes, each mIoU with its bootstrap
standard error over scenes: "scenes built elsewhere score the same".

``--objects N``: for each scenes run, on N test scenes, where its errors come from: the foreground IoU
with the classes ignored (the masks), and the share of items whose predicted pixels name their class
by majority vote (the classes), with the three worst classes; and, as the yardstick for that column,
the bundled Fashion-MNIST classifier on each true item cut out and resized back to 28x28. Then each
scenes run's test scores under each decoding (``segment.tta``, ``segment.vote``,
``segment.instances``): the plain per-pixel argmax with objects made of each class or of the
foreground, flip TTA, one class per object, and both, the run's own marked.

``--picture PNG``: the nuclei run on the held-out quarter, three panels side by side: the image,
the true nuclei, the predicted ones (each instance its own colour; predicted instances are the
connected components ``cnnctl segment --instances`` finds).

``--scenes-picture PNG``: the scenes run on the first 6 test scenes: the images, the true classes and
the predicted ones (``cnnctl segment``'s decoding), in the palette of ``cnnctl segment``'s overlays.

``--speed``: megapixels per second of ``cnnctl.segmenter.predict_tiled`` on a 1024x1024 image with
each run's network (``nuclei``: valid padding, 316 -> 132 tiles; ``nuclei-same``: same padding, 128
tiles with a 16-pixel margin), float32 and mixed_bfloat16, each in its own process, after one
warm-up call.

Prints markdown tables (docs/segmentation.md carries them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "nuclei": ("segment-nuclei", []),
    "nuclei-no-weight-map": ("segment-nuclei", ["segment.weight_map=false"]),
    "nuclei-same": ("segment-nuclei", ["model.padding='same'", "model.input_shape=[128, 128, 1]"]),
    "nuclei-segnet": ("segment-nuclei-segnet", []),
    "scenes": ("segment-scenes", []),
    "scenes-segnet": ("segment-scenes-segnet", []),
    # the U-Net the recipe had before its stem (an encoder reads the full-resolution image itself)
    "scenes-encoder": ("segment-scenes", ["model.encoder='fashion_cnn:fashion_mnist'", "model.stem=1",
                                          "model.base_filters=16", "model.depth=4", "data.scene_counts=[6000, 500, 500]",
                                          "train.epochs=6", "schedule.warmup_epochs=0"]),
}


def train(out: Path, name: str, seed: int, extra: list[str]) -> float:
    recipe, overrides = RUNS[name]
    if (out / name).exists():
        sys.exit(f"{out / name} exists: remove it or pass --skip-train")
    cmd = [sys.executable, "-m", "cnnctl", "train", recipe, "--out-dir", str(out), "--name", name,
           "--seed", str(seed)] + [x for o in overrides + extra for x in ("--set", o)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def speed_one(run: str, precision: str, side: int = 1024) -> dict:
    """In a fresh process: megapixels/s of overlap-tile prediction of a side x side image."""
    import keras
    import numpy as np

    from cnnctl.config import load_run_config
    from cnnctl.inference import load_keras_file
    from cnnctl.segmenter import predict_tiled
    from cnnctl.tasks import build_model

    trained = load_keras_file(Path(run) / "model.keras", hint="train the run again")
    keras.config.set_dtype_policy(precision)          # the recipe's network rebuilt under the policy
    model = build_model(load_run_config(run), int(trained.output_shape[-1]))
    model.set_weights(trained.get_weights())
    image = np.random.default_rng(0).integers(0, 256, (side, side, int(model.input_shape[-1]))).astype(np.uint8)
    predict_tiled(model, image[:256, :256])
    t0 = time.perf_counter()
    predict_tiled(model, image)
    seconds = time.perf_counter() - t0
    return {"mpix_per_s": side * side / 1e6 / seconds, "seconds": seconds,
            "tile": f"{model.input_shape[1]} -> {model.output_shape[1]}"}


def encoder(cfg_text: str) -> str:
    """", encoder NAME" when the run's U-Net sat on a pretrained encoder."""
    import tomllib

    name = tomllib.loads(cfg_text).get("model", {}).get("encoder", "")
    return f", encoder {name}" if name else ""


def independent_row(run: Path, count: int, folder: Path) -> None:
    """The scenes run on cnnctl's test scenes and on independently built ones, mIoU +- bootstrap SE."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import independent_scenes
    from PIL import Image

    from cnnctl.data.segmentation import SegSplit, free_scenes
    from cnnctl.metrics.segmentation import confusion
    from cnnctl.segmenter import load_segmenter, predict_labels

    independent_scenes.write(folder, count, "test", 0)
    model, _, decoding = load_segmenter(run)
    ours = free_scenes((0, 0, count)).splits["test"]
    files = sorted((folder / "images").glob("*.png"))       # read as `cnnctl segment` reads them: PNG files
    theirs = SegSplit(np.stack([np.asarray(Image.open(f))[..., None] for f in files]),
                      np.stack([np.asarray(Image.open(folder / "masks" / f.name)) for f in files]))
    print(f"\n| test scenes ({count}) | built by | mIoU | bootstrap SE |\n|---|---|---:|---:|")
    for name, split in (("scenes:free (cnnctl.data.scenes)", ours), ("benchmarks/independent_scenes.py", theirs)):
        labels = np.asarray(split.labels)
        predicted = predict_labels(model, np.asarray(split.images), batch=50, decoding=decoding)
        per_scene = np.stack([confusion(labels[i], predicted[i], 11) for i in range(len(labels))])

        def miou(m):
            tp = np.diag(m).astype(float)
            union = m.sum(0) + m.sum(1) - tp
            return float((tp[union > 0] / union[union > 0]).mean())
        rng = np.random.default_rng(0)
        boot = [miou(per_scene[rng.integers(0, len(labels), len(labels))].sum(0)) for _ in range(200)]
        print(f"| {name} | {'cnnctl' if 'cnnctl' in name else 'independent'} | {miou(per_scene.sum(0)):.3f} | "
              f"{np.std(boot):.3f} |")


def objects_rows(out: Path, runs: list[str], test) -> None:
    """Where a scene run's errors come from: the masks (foreground against background, classes ignored)
    or the classes (each true item's class by the majority vote of its predicted foreground pixels).
    ``test``: the scenes' test split (``free_scenes``)."""
    import numpy as np

    from cnnctl.data.scenes import SCENE_CLASSES
    from cnnctl.segmenter import load_segmenter, predict_labels

    count = len(test.images)
    labels, instances = np.asarray(test.labels), np.asarray(test.instances)
    print(f"\n| run ({count} test scenes) | foreground IoU (classes ignored) | items | items whose pixel majority "
          "names their class | worst classes (share right) |\n|---|---:|---:|---:|---|")
    for name in runs:
        model, _, decoding = load_segmenter(out / name)
        predicted = predict_labels(model, np.asarray(test.images), batch=50, decoding=decoding)
        fg_p, fg_t = predicted > 0, labels > 0
        right, total = np.zeros(10), np.zeros(10)
        for j in range(count):
            for k in range(1, int(instances[j].max()) + 1):
                where = instances[j] == k
                truth = int(labels[j][where][0]) - 1
                votes = predicted[j][where]
                votes = votes[votes > 0]
                total[truth] += 1
                right[truth] += bool(len(votes)) and int(np.bincount(votes - 1, minlength=10).argmax()) == truth
        share = right / np.maximum(total, 1)
        worst = ", ".join(f"{SCENE_CLASSES[c]} {share[c]:.2f}" for c in np.argsort(share)[:3])
        print(f"| {name} | {(fg_p & fg_t).sum() / (fg_p | fg_t).sum():.3f} | {int(total.sum())} | "
              f"{right.sum() / total.sum():.3f} | {worst} |")
    classifier_row(test.images, labels, instances, count)


def decoding_rows(out: Path, runs: list[str], test) -> None:
    """Each scenes run's test scores under each decoding (cnnctl.segmenter.Decoding): the plain
    per-pixel argmax (objects of each class, or of the foreground), flip TTA, one class per object,
    both; the run's own decoding marked. ``test``: the scenes' test split (``free_scenes``)."""
    import numpy as np

    from cnnctl.metrics.segmentation import instance_scores, semantic_scores
    from cnnctl.segmenter import Decoding, load_segmenter, predict_labels

    count = len(test.images)
    labels, instances = np.asarray(test.labels), np.asarray(test.instances)
    print(f"\n| run ({count} test scenes) | decoding | test mIoU | Dice (fg) | instance F1 @0.5 | DSB score | "
          "objects found / true | s to label them |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for name in runs:
        model, classes, own = load_segmenter(out / name)
        predict_labels(model, np.asarray(test.images[:50]), batch=50)            # trace once, outside the clock
        for decoding in (Decoding(), Decoding(instances="foreground"), Decoding(flip=True, instances="foreground"),
                         Decoding(vote=True), Decoding(flip=True, vote=True)):
            t0 = time.perf_counter()
            predicted = predict_labels(model, np.asarray(test.images), batch=50, decoding=decoding)
            seconds = time.perf_counter() - t0
            s = semantic_scores(labels, predicted, classes)
            i = instance_scores(instances, predicted, by=decoding.instances)
            mark = " (the run's)" if decoding == own else ""
            print(f"| {name} | {decoding.describe()}{mark} | {s['miou']:.3f} | {s['dice']:.3f} | "
                  f"{i['instance_f1']:.3f} | {i['dsb_score']:.3f} | {i['instances_predicted']} / {i['instances_true']} | "
                  f"{seconds:.1f} |")


def classifier_row(images, labels, instances, count: int) -> None:
    """The yardstick for the classes column: the bundled Fashion-MNIST classifier (fashion_cnn, which
    scores its own accuracy on the 28x28 test images) on each true item, cut out as the square around
    its tight box (side = the box's longer side, centred, zero beyond the canvas) and resized back to
    28x28 with area averaging -- the item as the scene shows it, after its scaling by s in [1, 2]."""
    import numpy as np
    import tensorflow as tf

    from cnnctl.data.scenes import SCENE_CLASSES
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.inference import logits_of
    from cnnctl.weights import load_pretrained

    net = load_pretrained("fashion_cnn", "fashion_mnist", log=lambda *a: None)
    crops, truths = [], []
    for j in range(count):
        image = np.asarray(images[j][..., 0], np.float32)
        for k in range(1, int(instances[j].max()) + 1):
            ys, xs = np.nonzero(instances[j] == k)
            side = int(max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()))
            top = round((ys.min() + ys.max() + 1 - side) / 2)
            left = round((xs.min() + xs.max() + 1 - side) / 2)
            padded = np.pad(image, side)                                   # zero beyond the canvas
            crop = padded[top + side:top + 2 * side, left + side:left + 2 * side]
            crops.append(tf.image.resize(crop[None, :, :, None], (28, 28), method="area")[0].numpy())
            truths.append(int(labels[j][ys[0], xs[0]]) - 1)
    truths = np.array(truths)
    guess = logits_of(net, np.stack(crops), 256).argmax(-1)
    share = np.array([(guess[truths == c] == c).mean() for c in range(10)])
    worst = ", ".join(f"{SCENE_CLASSES[c]} {share[c]:.2f}" for c in np.argsort(share)[:3])
    test = fashion_mnist("")["test"]
    plain = (logits_of(net, test.images, 500).argmax(-1) == test.labels).mean()
    print(f"| fashion_cnn:fashion_mnist on each true item's crop ({plain:.3f} on the 28x28 test images) | - | "
          f"{len(truths)} | {(guess == truths).mean():.3f} | {worst} |")


def _instance_colours(ids, image):
    import numpy as np

    rng = np.random.default_rng(0)
    colours = rng.integers(60, 256, (int(ids.max()) + 1, 3)).astype(np.float32)
    rgb = np.repeat(image.astype(np.float32), 3, axis=-1)
    mix = np.where(ids[..., None] > 0, 0.45 * rgb + 0.55 * colours[ids], rgb)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8)


def picture(run: Path, path: Path) -> None:
    """Image | truth | prediction on the nuclei test region, 2x enlarged."""
    import numpy as np
    from PIL import Image

    from cnnctl.data.segmentation import nuclei
    from cnnctl.metrics.segmentation import components
    from cnnctl.segmenter import labels_of, load_segmenter, predict_probs

    test = nuclei().splits["test"]
    image, truth = test.images[0], test.instances[0]
    model, _, decoding = load_segmenter(run)
    predicted = components(labels_of(predict_probs(model, image, flip=decoding.flip), decoding), decoding.instances)
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    panels = [np.repeat(image, 3, axis=-1), gap, _instance_colours(truth, image), gap,
              _instance_colours(predicted, image)]
    out = Image.fromarray(np.concatenate(panels, axis=1))
    out = out.resize((out.width * 2, out.height * 2), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)


def scenes_picture(run: Path, path: Path, count: int = 6) -> None:
    """The first ``count`` test scenes in three rows, 2x enlarged: the image, the true classes, the
    classes ``cnnctl segment`` writes with the run (its decoding), in ``cnnctl.segmenter.palette``."""
    import numpy as np
    from PIL import Image

    from cnnctl.data.segmentation import free_scenes
    from cnnctl.segmenter import load_segmenter, overlay, predict_labels

    test = free_scenes((0, 0, count)).splits["test"]
    model, classes, decoding = load_segmenter(run)
    images = np.asarray(test.images)
    predicted = predict_labels(model, images, decoding=decoding)

    def row(panels):
        gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
        return np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    rows = [row([np.repeat(im, 3, axis=-1) for im in images]),
            row([overlay(im, lab, len(classes), alpha=0.7) for im, lab in zip(images, test.labels)]),
            row([overlay(im, lab, len(classes), alpha=0.7) for im, lab in zip(images, predicted)])]
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    out = Image.fromarray(np.concatenate([rows[0], gap, rows[1], gap, rows[2]], axis=0))
    out = out.resize((out.width * 2, out.height * 2), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", default="checkpoints/bench-segment")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="passed to every run")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--independent", type=int, default=0, help="score the scenes run on N independently built scenes")
    ap.add_argument("--picture", default="", help="write the nuclei test-region picture here (PNG)")
    ap.add_argument("--scenes-picture", default="", help="write 6 test scenes, truth and prediction here (PNG)")
    ap.add_argument("--objects", type=int, default=0,
                    help="on N test scenes: each scenes run's foreground IoU and its per-item class accuracy")
    ap.add_argument("--speed-one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.speed_one:
        print("RESULT " + json.dumps(speed_one(*a.speed_one)))
        return
    out = Path(a.out)
    walls = {}
    for name in a.runs:
        if not a.skip_train:
            walls[name] = train(out, name, a.seed, a.overrides)
            print(f"{name}: {walls[name]:.0f} s", flush=True)

    print("\n| run | data | network | epochs | wall s | test mIoU | pixel acc. | Dice (fg) | instance F1 @0.5 | "
          "DSB score | objects found / true |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.runs:
        run = out / name
        m = json.loads((run / "metrics.json").read_text())
        cfg = (run / "config.toml").read_text()
        padding = "same" if "padding = \"same\"" in cfg else "valid"
        network = "SegNet (small)" if "segnet_small" in cfg else f"U-Net, {padding}"
        wall = f"{walls[name]:.0f}" if name in walls else f"{m['wall_time_s']:.0f}"
        print(f"| {name} | {RUNS[name][0].removeprefix('segment-').split('-')[0]} | {network}{encoder(cfg)} | {m['epochs_trained']} | "
              f"{wall} | {m['test_miou']:.3f} | {m['test_pixel_accuracy']:.3f} | {m['test_dice']:.3f} | "
              f"{m.get('test_instance_f1', float('nan')):.3f} | {m.get('test_dsb_score', float('nan')):.3f} | "
              f"{m.get('test_instances_predicted', '-')} / {m.get('test_instances_true', '-')} |")
    print("\nReferences (other data, Ronneberger et al. 2015, Table 2, IoU): PhC-U373 0.9203, DIC-HeLa 0.7756.")

    if a.independent:
        independent_row(out / "scenes", a.independent, out / "independent-scenes")

    if a.objects:
        from cnnctl.data.segmentation import free_scenes

        test = free_scenes((0, 0, a.objects)).splits["test"]        # built once for both tables
        scene_runs = [r for r in a.runs if r.startswith("scenes")]
        objects_rows(out, scene_runs, test)
        decoding_rows(out, scene_runs, test)

    if a.picture:
        picture(out / "nuclei", Path(a.picture))
        print(f"\nwrote {a.picture}")

    if a.scenes_picture:
        scenes_picture(out / "scenes", Path(a.scenes_picture))
        print(f"\nwrote {a.scenes_picture}")

    if a.speed:
        print("\n| network | tile | precision | megapixels / s | seconds for 1024x1024 |")
        print("|---|---|---|---:|---:|")
        for name in a.runs:
            for precision in ("float32", "mixed_bfloat16"):
                p = subprocess.run([sys.executable, __file__, "--speed-one", str(out / name), precision],
                                   capture_output=True, text=True, check=False)
                line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(f"| {name} | - | {precision} | failed: {p.stderr.strip().splitlines()[-1:]} | - |")
                    continue
                r = json.loads(line[7:])
                print(f"| {name} | {r['tile']} | {precision} | {r['mpix_per_s']:.3f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()

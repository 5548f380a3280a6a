"""``cnnctl visualize KIND RUN_DIR [IMAGE...]``: pictures of what a trained network does, as PNG files."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, quiet_tensorflow, report_errors

app = typer.Typer(help="Pictures of what a trained network learned (PNG files in the run directory or --out).",
                  no_args_is_help=True)

RUN = typer.Argument(..., help="A run directory written by `cnnctl train` or `cnnctl finetune`, or a pretrained "
                                "network as NAME:WEIGHTS (efficientnet_lite0:imagenet) with image files.")
IMAGES = typer.Argument(None, help="Image files; default: the first test images of the run's data, one per class first.")
OUT = typer.Option(None, "--out", "-o", help="Folder for the PNG files (default: RUN_DIR/visualize).")
COUNT = typer.Option(8, "--count", "-n", help="How many test images when no IMAGE is given.")
BEST = typer.Option(False, "--best", help="Use best.keras instead of the last model.keras.")


def _setup(run_dir: Path, out: Path | None, best: bool):
    quiet_tensorflow()
    text = str(run_dir)
    if ":" in text and not Path(text).exists():  # a pretrained network, e.g. efficientnet_lite0:imagenet
        from cnnctl.config import Config
        from cnnctl.weights import imagenet_class_names, load_pretrained

        name, weights = text.rsplit(":", 1)
        model = load_pretrained(name, weights, log=_log)
        classes = imagenet_class_names() if weights == "imagenet" else [str(i) for i in range(model.outputs[0].shape[-1])]
        cfg = Config()
        cfg.data.source, cfg.data.path = "pretrained", ""
        folder = Path(out) if out else Path("visualize") / name
    else:
        from cnnctl.inference import load_run_model

        model, classes, cfg = load_run_model(run_dir, "best" if best else "model")
        folder = Path(out) if out else Path(run_dir) / "visualize"
    folder.mkdir(parents=True, exist_ok=True)
    return model, classes, cfg, folder


def _log(message: str) -> None:
    console(stderr=True).print(message, style="dim", markup=False, soft_wrap=True)


@app.command("stn")
@report_errors
def stn(run_dir: Path = RUN, images: list[str] | None = IMAGES, out: Path | None = OUT, count: int = COUNT,
        best: bool = BEST):
    """Inputs beside the output of each spatial transformer: a trained RTS model undoes rotation and centres the object.

    Examples:

        cnnctl visualize stn checkpoints/st_cnn-distorted-20261123-120000

        cnnctl visualize stn checkpoints/my-st-run photo1.png photo2.png --out pictures/
    """
    model, classes, cfg, folder = _setup(run_dir, out, best)
    from cnnctl.viz.inputs import run_images
    from cnnctl.viz.stn import stn_grid

    x, labels, names = run_images(model, cfg, images or [], count, log=_log)
    path = folder / "stn.png"
    layers = stn_grid(model, x, path, names, classes, labels)
    console().print(f"wrote {path} ({len(x)} images x {', '.join(layers)})", markup=False, soft_wrap=True)


LAYER = typer.Option(None, "--layer", "-l", help="Layer name (a bad name lists every layer with its output shape).")


def _images(model, cfg, images, count, log=_log):
    from cnnctl.viz.inputs import run_images

    return run_images(model, cfg, images or [], count, log=log)


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name)[:60]


def _done(paths) -> None:
    for p in paths:
        console().print(f"wrote {p}", markup=False, soft_wrap=True)


@app.command("filters")
@report_errors
def filters(run_dir: Path = RUN, layer: str | None = LAYER, out: Path | None = OUT, best: bool = BEST,
            maximise: int = typer.Option(0, "--maximise", help="For a deeper --layer: synthesise inputs that excite its first N channels (activation maximisation).")):
    """The first convolution's kernels as a grid (per-filter contrast); deeper layers via --maximise N.

    Examples:

        cnnctl visualize filters checkpoints/my-run

        cnnctl visualize filters checkpoints/my-run --layer conv2 --maximise 16
    """
    model, _, _, folder = _setup(run_dir, out, best)
    from cnnctl.viz import inside, pictures

    net = inside.main_network(model)
    if maximise:
        name = layer or inside.default_conv_layer(net, last=True).name
        channels = list(range(min(maximise, int(inside.get_layer(net, name).output.shape[-1]))))
        synth = inside.maximise_activation(net, name, channels)
        path = folder / f"maximise-{name}.png"
        pictures.tiles(synth, path, f"{net.name} {name}: inputs that excite channels 0-{channels[-1]}",
                       [str(c) for c in channels])
    else:
        kernels, name = inside.first_layer_filters(net, layer)
        path = folder / f"filters-{name}.png"
        pictures.tiles(kernels, path, f"{net.name} {name}: {len(kernels)} filters "
                       f"{kernels.shape[1]}x{kernels.shape[2]}x{kernels.shape[3]}")
    _done([path])


@app.command("activations")
@report_errors
def activations_cmd(run_dir: Path = RUN, images: list[str] | None = IMAGES, layer: str | None = LAYER,
                    out: Path | None = OUT, best: bool = BEST):
    """The feature maps of a layer for an image (default: the last convolution), with the layer's shape."""
    model, _, cfg, folder = _setup(run_dir, out, best)
    from cnnctl.viz import inside, pictures

    net = inside.main_network(model)
    if layer:
        inside.get_layer(net, layer)  # a bad name fails before any image is read
    x, _, names = _images(net, cfg, images, 1 if not images else len(images))
    paths = []
    for i in range(len(x)):
        maps, lname, shape = inside.activations(net, x[i:i + 1], layer)
        path = folder / f"activations-{lname}-{_stem(names[i])}.png"
        pictures.activation_maps(maps, path, f"{net.name} {lname} output {shape} for {names[i]}")
        paths.append(path)
    _done(paths)


@app.command("deconvnet")
@report_errors
def deconvnet_cmd(run_dir: Path = RUN, images: list[str] | None = IMAGES, layer: str | None = LAYER,
                  out: Path | None = OUT, best: bool = BEST, top: int = typer.Option(9, "--top", help="Projections per picture."),
                  dataset: int = typer.Option(0, "--dataset", help="Search this many test images for the channel's 9 strongest (ZFNet's figures) instead of one image.")):
    """ZFNet's deconvnet: the top activations of a layer projected back to pixel space.

    One image: its `--top` strongest channels. With --dataset N: the strongest channel's `--top`
    strongest images among N test images. Conv/ReLU/pool stacks get the exact deconvnet
    (max-unpooling with switches); other networks guided backpropagation, said in the title.
    """
    model, _, cfg, folder = _setup(run_dir, out, best)
    from cnnctl.viz import inside, pictures

    net = inside.main_network(model)
    if layer:
        inside.get_layer(net, layer)
    x, _, names = _images(net, cfg, images, max(1, dataset) if not images else len(images))
    if not dataset:
        x, names = x[:1], names[:1]
    proj, src, captions, method, lname = inside.deconvnet(net, x, layer, top=top)
    path = folder / f"deconvnet-{lname}.png"
    what = names[0] if len(x) == 1 else f"{len(x)} test images"
    pictures.projections(proj, src, path, f"{net.name} {lname}, {what}: {method}", captions)
    _done([path])


@app.command("occlusion")
@report_errors
def occlusion_cmd(run_dir: Path = RUN, images: list[str] | None = IMAGES, out: Path | None = OUT, best: bool = BEST,
                  size: int = typer.Option(0, "--size", help="Side of the grey square in pixels (default: a sixth of the image)."),
                  stride: int = typer.Option(0, "--stride", help="Step between positions (default: half the square)."),
                  layer: str | None = LAYER, count: int = COUNT):
    """ZFNet's occlusion test: the true class's probability (and the strongest feature map's activity)
    with a grey square at each position, over the image."""
    model, classes, cfg, folder = _setup(run_dir, out, best)
    from cnnctl.viz import inside, pictures

    net = inside.main_network(model)
    if layer:
        inside.get_layer(net, layer)
    x, labels, names = _images(net, cfg, images, min(count, 4))
    paths = []
    for i in range(len(x)):
        label = None if labels is None else int(labels[i])
        pm, fm, label, p0, sz, st, lname, ch = inside.occlusion(net, x[i], label, size or None, stride or None,
                                                                 feature_layer=layer)
        h, w = x.shape[1:3]
        prob = inside.occlusion_to_pixels(pm, (h, w), sz, st)
        extra = None if fm is None else (inside.occlusion_to_pixels(fm, (h, w), sz, st), f"{lname} channel {ch} activity")
        path = folder / f"occlusion-{_stem(names[i])}.png"
        pictures.overlay(x[i], prob, path, f"{names[i]}: p({classes[label]}) = {p0:.3f} unoccluded; "
                         f"{sz}x{sz} grey square, stride {st}", f"p({classes[label]}) with the square here",
                         cmap="jet_r", extra=extra)
        paths.append(path)
    _done(paths)


@app.command("saliency")
@report_errors
def saliency_cmd(run_dir: Path = RUN, images: list[str] | None = IMAGES, out: Path | None = OUT, best: bool = BEST,
                 count: int = COUNT):
    """Vanilla gradient saliency of the predicted class: max over channels of |d score / d pixel|."""
    model, classes, cfg, folder = _setup(run_dir, out, best)
    from cnnctl.viz import inside, pictures

    net = inside.main_network(model)
    x, _, names = _images(net, cfg, images, min(count, 4))
    paths = []
    for i in range(len(x)):
        sal, label = inside.saliency(net, x[i])
        path = folder / f"saliency-{_stem(names[i])}.png"
        pictures.overlay(x[i], sal, path, f"{names[i]}: saliency of {classes[label]}", "|d score / d pixel|", cmap="hot")
        paths.append(path)
    _done(paths)


@app.command("gradcam")
@report_errors
def gradcam_cmd(run_dir: Path = RUN, images: list[str] | None = IMAGES, layer: str | None = LAYER,
                out: Path | None = OUT, best: bool = BEST, count: int = COUNT):
    """Grad-CAM of the predicted class at a layer (default: the last convolution)."""
    model, classes, cfg, folder = _setup(run_dir, out, best)
    import numpy as np
    import tensorflow as tf

    from cnnctl.viz import inside, pictures

    net = inside.main_network(model)
    if layer:
        inside.get_layer(net, layer)
    x, _, names = _images(net, cfg, images, min(count, 4))
    paths = []
    for i in range(len(x)):
        cam, label, lname = inside.gradcam(net, x[i], layer)
        big = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear").numpy()[..., 0]
        path = folder / f"gradcam-{_stem(names[i])}.png"
        pictures.overlay(x[i], np.maximum(big, 0), path, f"{names[i]}: Grad-CAM of {classes[label]} at {lname}",
                         f"Grad-CAM ({cam.shape[0]}x{cam.shape[1]} at {lname})")
        paths.append(path)
    _done(paths)


@app.command("curves")
@report_errors
def curves_cmd(run_dir: Path = RUN, out: Path | None = OUT):
    """Training and validation loss and accuracy per epoch, from the run's history.csv."""
    quiet_tensorflow()
    import csv

    from cnnctl.errors import CnnctlError
    from cnnctl.viz.plots import curves

    history = Path(run_dir) / "history.csv"
    if not history.is_file():
        raise CnnctlError(f"{run_dir} has no history.csv", hint="give a run that finished at least one epoch")
    with open(history, newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    folder = Path(out) if out else Path(run_dir) / "visualize"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "curves.png"
    curves(rows, path, title=f"{Path(run_dir).name}")
    _done([path])


@app.command("confusion")
@report_errors
def confusion_cmd(run_dir: Path = RUN, out: Path | None = OUT, best: bool = BEST):
    """The confusion matrix on the run's test split (as `cnnctl evaluate` computes it)."""
    model, classes, cfg, folder = _setup(run_dir, out, best)
    import numpy as np

    from cnnctl.data.pipeline import DataModule
    from cnnctl.data.tta import predict_probs
    from cnnctl.inference import input_spec
    from cnnctl.tasks.classify import evaluate_predictions
    from cnnctl.viz.plots import confusion

    dm = DataModule(cfg.data, input_spec(model), 256, cfg.train.seed, log=_log)
    split = "test" if dm.test is not None else "val"
    labels, probs = [], []
    for x, y in dm.eval_dataset(split):
        probs.append(np.asarray(predict_probs(model, x), dtype=np.float64))
        labels.append(np.argmax(y.numpy(), axis=1))
    result = evaluate_predictions(np.concatenate(labels), np.concatenate(probs), classes)
    path = folder / "confusion.png"
    confusion(np.asarray(result["confusion"]), classes, path,
              title=f"{cfg.model.name}: top-1 {result['top1']:.4f} on {result['images']} {split} images")
    _done([path])


@app.command("captions")
@report_errors
def captions_cmd(run_dir: Path = RUN, out: Path | None = OUT, count: int = typer.Option(12, "--count", "-n",
                 help="How many test images.")):
    """A grid of test images with the run's generated caption (green when it equals a reference) and a
    reference caption, from the run's captions.json.

    Example:

        cnnctl visualize captions checkpoints/show_and_tell-scenes-grid-20261203
    """
    quiet_tensorflow()
    import json
    import re

    import numpy as np

    from cnnctl.config import load_run_config
    from cnnctl.data.images import ImageError, load_image
    from cnnctl.data.text import tokenize
    from cnnctl.errors import CnnctlError
    from cnnctl.viz.pictures import captioned

    source = Path(run_dir) / "captions.json"
    if not source.is_file():
        raise CnnctlError(f"{run_dir} has no captions.json",
                          hint="give a caption run that finished (task = \"caption\")")
    rows = json.loads(source.read_text())[:max(1, count)]
    cfg = load_run_config(run_dir)
    images = []
    for r in rows:
        m = re.fullmatch(r"scenes:grid:test\[(\d+)\]", r["image"])
        if m:
            from cnnctl.data.scenes import grid_scene
            from cnnctl.data.sources import fashion_mnist

            test = fashion_mnist("")["test"]
            images.append(grid_scene(test.images[..., 0], test.labels, "test", cfg.data.scene_seed,
                                     int(m.group(1))).image[..., None])
            continue
        try:
            images.append(load_image(r["image"], 3))
        except ImageError as e:
            raise CnnctlError(f"cannot read {r['image']}: {e}", hint="the run's test images have moved") from None
    right = [any(tokenize(r["caption"]) == tokenize(ref) for ref in r["references"]) for r in rows]
    folder = Path(out) if out else Path(run_dir) / "visualize"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "captions.png"
    captioned(images, [r["caption"] for r in rows], [r["references"][0] for r in rows], right, path,
              f"{Path(run_dir).name}: generated (green = a reference) and reference captions")
    console().print(f"{int(np.sum(right))} of {len(rows)} captions equal a reference")
    _done([path])


@app.command("alignment")
@report_errors
def alignment_cmd(run_dir: Path = RUN, image: str = typer.Argument(..., help="An image file."),
                  sentence: str = typer.Argument(..., help="A sentence to align, in quotes."),
                  out: Path | None = OUT, best: bool = BEST):
    """Each word of SENTENCE beside the image region it aligns to (Karpathy & Fei-Fei Fig. 5), with a
    run of the alignment model (model brnn_alignment, task align).

    Example:

        cnnctl visualize alignment checkpoints/align-scenes scene.png "a bag above a sandal"
    """
    quiet_tensorflow()
    import keras
    import numpy as np

    from cnnctl.captioner import Captioner
    from cnnctl.data.images import ImageError, load_image
    from cnnctl.data.text import tokenize
    from cnnctl.errors import CnnctlError
    from cnnctl.viz.pictures import alignment

    if not Path(image).is_file():
        raise CnnctlError(f"image {image} does not exist")
    words = tokenize(sentence)
    if not words:
        raise CnnctlError(f"the sentence {sentence!r} has no words", hint='give a sentence in quotes: "a cat on a mat"')
    run = Captioner(run_dir, best=best, decoder=False)
    if run.model.name != "brnn_alignment":
        raise CnnctlError(f"{run_dir} holds {run.model.name}, not the alignment model",
                          hint="train one with `cnnctl train align-scenes` (model brnn_alignment)")
    features = run.features([image])                                              # (1, cells, d)
    tokens = np.array([[1, *run.vocab.encode(words)]], np.int32)
    regions = keras.Model(run.model.inputs, run.model.get_layer("region_embed").output)
    states = keras.Model(run.model.inputs, run.model.get_layer("word_embed_out").output)
    v = np.asarray(regions([features, tokens]))[0]                                 # (cells + 1, h)
    s = np.asarray(states([features, tokens]))[0, 1:]                              # (words, h)
    dots = s @ v.T                                                                 # (words, regions)
    best_region = dots.argmax(axis=1)
    spec = run.spec
    try:
        shown = load_image(image, 3 if run.encoder.inputs[0].shape[-1] == 3 else 1)
    except ImageError as e:
        raise CnnctlError(f"cannot read image {image}: {e}") from None
    from cnnctl.models.encoders import fit_image

    shown = fit_image(shown, shown.shape[-1], spec.image_size)
    cell = spec.image_size // spec.grid
    boxes = [(c * cell, r * cell, (c + 1) * cell, (r + 1) * cell) for r in range(spec.grid) for c in range(spec.grid)]
    boxes.append(None)                                                              # the whole image
    unknown = [w for w in words if w not in run.vocab.index]
    shown_words = [w if w in run.vocab.index else f"{w} (<unk>)" for w in words]
    folder = Path(out) if out else Path(run_dir) / "visualize"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"alignment-{Path(image).stem}.png"
    alignment(shown, boxes, shown_words, best_region.tolist(), dots.max(axis=1).tolist(), path,
              f"{sentence!r}: each word and its best region (score v_i . s_t)")
    for w, r in zip(shown_words, best_region):
        console().print(f"{w}: {'whole image' if boxes[r] is None else f'cell {r + 1}'}", markup=False)
    if unknown:
        console().print(f"not in the vocabulary (read as <unk>): {', '.join(unknown)}", markup=False)
    _done([path])

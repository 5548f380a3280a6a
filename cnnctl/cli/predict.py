"""``cnnctl predict``: top-k labels of image files from a trained run or a pretrained network."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def predict(
    targets: list[str] = typer.Argument(..., metavar="[RUN_DIR] IMAGE...",
                                        help="A run directory written by `cnnctl train`/`finetune`, then image files "
                                             "(JPEG, PNG, BMP, GIF, WebP, TIFF). With --model: image files only."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many labels to show per image."),
    best: bool = typer.Option(False, "--best", help="Use best.keras instead of the last model.keras."),
    model_name: str | None = typer.Option(None, "--model", "-m", help="A pretrained network instead of a run, e.g. efficientnet_lite0 (with --weights)."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="With --model: imagenet (converted once, offline) or a .pth / .weights.h5 / .keras file."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass (files decode in "
                                                                     "threads while the model runs)."),
    precision: str = typer.Option("auto", "--precision", help="auto | float32 | mixed_bfloat16. auto: the faster "
                                                              "of the two for this model on this CPU, measured once "
                                                              "and cached."),
):
    """Classify images with a trained run or a pretrained network: top-k labels with probabilities.

    Examples:

        cnnctl predict checkpoints/fashion_cnn-fashion_mnist-20261123-120000 shoe.png

        cnnctl predict checkpoints/my-run photos/*.jpg --top-k 3 --json

        cnnctl predict --model efficientnet_lite0 --weights imagenet cat.jpg
    """
    from cnnctl.errors import CnnctlError
    from cnnctl.inference import check_images

    # Everything that can be checked without TensorFlow is checked first: a bad call answers at once.
    if top_k <= 0:
        raise CnnctlError(f"--top-k {top_k} must be positive")
    if batch_size <= 0:
        raise CnnctlError(f"--batch-size {batch_size} must be positive")
    if precision not in ("auto", "float32", "mixed_bfloat16"):
        raise CnnctlError(f"unknown --precision {precision!r}", hint="auto, float32 or mixed_bfloat16")
    if model_name is None and weights is not None:
        raise CnnctlError("--weights goes with --model", hint="cnnctl predict --model efficientnet_lite0 --weights imagenet IMAGE")
    if model_name is None:
        if len(targets) < 2:
            raise CnnctlError("give a run directory and at least one image",
                              hint="cnnctl predict RUN_DIR IMAGE...  (or --model NAME --weights imagenet IMAGE...)")
        run_dir, images = Path(targets[0]), [Path(t) for t in targets[1:]]
    else:
        images = [Path(t) for t in targets]
    check_images(images)

    quiet_tensorflow()
    import numpy as np

    from cnnctl.inference import (
        eval_short_side,
        image_batches,
        imagenet_short_side,
        input_spec,
        load_images,
        load_run_model,
        logits_of,
        softmax,
    )
    from cnnctl.train.runtime import explain_precision

    log = lambda m: console(stderr=True).print(f"[dim]{m}[/]", soft_wrap=True)
    if model_name is None:
        model, classes, cfg = load_run_model(run_dir, "best" if best else "model")
        policy = explain_precision(precision, cfg.model.name, "infer", log)[0]
        spec = input_spec(model)
        short = eval_short_side(cfg.data)
    else:
        import keras

        from cnnctl.weights import imagenet_class_names, load_pretrained

        policy = explain_precision(precision, model_name, "infer", log)[0]
        keras.mixed_precision.set_global_policy(policy)       # the network is built in it
        model = load_pretrained(model_name, weights or "imagenet", log=log)
        spec = input_spec(model)
        classes = imagenet_class_names() if (weights or "imagenet") == "imagenet" else None
        from cnnctl.models import model_num_outputs

        n = model_num_outputs(model)
        if classes is None or len(classes) != n:
            classes = imagenet_class_names() if n == 1000 else [f"class {i}" for i in range(n)]
        short = imagenet_short_side(spec.height)
    if len(images) <= batch_size:   # one forward pass: no trace needed for a cold one-off call
        logits = logits_of(model, load_images(images, spec, short), batch_size, once=True, policy=policy)
    else:                           # files decode in threads while the traced function runs
        logits = np.concatenate([logits_of(model, x, batch_size, policy=policy)
                                 for _, x in image_batches(images, spec, short, batch_size)])
    probs = softmax(logits.astype(np.float64))
    k = min(top_k, len(classes))
    results = []
    for p, row in zip(images, probs):
        order = np.argsort(-row)[:k]
        results.append({"image": str(p),
                        "top": [{"label": classes[i], "index": int(i), "probability": float(row[i])} for i in order]})
    if json_:
        echo_json(results)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"predictions ({spec.height}x{spec.width}x{spec.channels} input, {policy})")
    table.add_column("image", overflow="fold")
    table.add_column("rank", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for r in results:
        for rank, t in enumerate(r["top"], start=1):
            table.add_row(escape(r["image"]) if rank == 1 else "", str(rank), escape(t["label"]),
                          f"{t['probability']:.4f}")
    console().print(table)

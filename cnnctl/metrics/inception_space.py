"""FID and KID in the standard feature space: pool3 of TF's "inception-2015-12-05" graph.

``InceptionSpace(n).score(generated)`` compares ``n`` generated images with ``n`` real test images,
and ``floor()`` gives FID/KID between those ``n`` and ``n`` *other* real test images: the same
sample sizes on both sides, so the floor is the score a perfect generator would expect at this
``n`` (FID is biased upwards at small ``n``; published FIDs use 10k or 50k samples).

The network runs at 299x299 (28x28 images are upsampled by the graph's own bilinear resize):
about 0.12 s per image on 2 cores, so the ``2n`` real images' features are cached under
``$CNNCTL_CACHE/fid_inception/``, keyed by the hash of their pixels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

FEATURE_BATCH = 50


def _cache_root() -> Path:
    from cnnctl.data.sources import _cache_root as cnnctl_cache

    return cnnctl_cache() / "fid_inception"


class InceptionSpace:
    """The network, and the features of ``2n`` real images split into two disjoint halves."""

    def __init__(self, real_pixels: np.ndarray, n: int, log=print, seed: int = 0):
        import tensorflow as tf

        from cnnctl.models.fid_inception import fid_inception_inputs
        from cnnctl.weights.fid_inception import load_fid_inception

        if n < 2:
            raise CnnctlError(f"generate.inception_samples = {n} is too few for FID", hint="use at least 2, e.g. 2000")
        if 2 * n > len(real_pixels):
            raise CnnctlError(f"generate.inception_samples = {n} needs {2 * n} real test images (two disjoint "
                              f"halves for the floor); the test split has {len(real_pixels)}",
                              hint=f"set generate.inception_samples to at most {len(real_pixels) // 2}")
        self.n, self.log = n, log
        model = load_fid_inception(log)
        self._features = tf.function(lambda x: model(fid_inception_inputs(x), training=False),
                                     reduce_retracing=True)
        chosen = np.sort(np.random.default_rng(seed).permutation(len(real_pixels))[: 2 * n])
        real = np.ascontiguousarray(real_pixels[chosen])
        feats = self._cached_real_features(real)
        self.real_a, self.real_b = feats[0::2], feats[1::2]

    def features(self, pixels: np.ndarray, what: str = "images") -> np.ndarray:
        """uint8 ``(m, h, w, c)`` -> float64 ``(m, 2048)``."""
        import time

        out, start, said = [], time.perf_counter(), 0.0
        for s in range(0, len(pixels), FEATURE_BATCH):
            out.append(np.asarray(self._features(np.asarray(pixels[s:s + FEATURE_BATCH])), np.float64))
            elapsed = time.perf_counter() - start
            if elapsed - said > 60:          # a long job says how far it is, once a minute
                said = elapsed
                self.log(f"Inception features of {what}: {s + FEATURE_BATCH}/{len(pixels)} ({elapsed:.0f} s)")
        return np.concatenate(out) if out else np.zeros((0, 2048))

    def _cached_real_features(self, real: np.ndarray) -> np.ndarray:
        digest = hashlib.sha256(real.tobytes() + str(real.shape).encode()).hexdigest()[:20]
        path = _cache_root() / f"{digest}.npy"
        if path.is_file():
            try:
                feats = np.load(path, allow_pickle=False)
                if feats.shape == (len(real), 2048):
                    return feats
            except (OSError, ValueError):
                pass
        self.log(f"Inception features of {len(real)} real test images (once; cached in {path.parent})")
        feats = self.features(real, "the real test images")
        try:
            from cnnctl.files import atomic_write

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: np.save(tmp, feats), suffix=".npy")
        except (OSError, CnnctlError):
            pass
        return feats

    def score(self, generated: np.ndarray) -> dict[str, float]:
        """FID and KID of the first ``n`` generated images against the first real half."""
        from cnnctl.metrics.gan import fid, kid

        if len(generated) < self.n:
            raise ValueError(f"{self.n} generated images needed, got {len(generated)}")
        fake = self.features(generated[: self.n], "the generated images")
        return {"fid": fid(self.real_a, fake), "kid": kid(self.real_a, fake, subset_size=min(1000, self.n))[0]}

    def floor(self) -> dict[str, float]:
        from cnnctl.metrics.gan import fid, kid

        return {"fid": fid(self.real_a, self.real_b),
                "kid": kid(self.real_a, self.real_b, subset_size=min(1000, self.n))[0]}

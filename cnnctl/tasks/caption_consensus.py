"""Consensus re-ranking of a captioner's beam (Devlin et al. 2015, "Exploring Nearest Neighbor Approaches
for Image Captioning", sec. 3; Mao et al. 2015 re-rank m-RNN beams the same way).

The language model still writes every caption. Of the finished captions of an image's beam, the one
chosen is the one that agrees most with the captions of the image's ``k`` nearest training images in
encoder feature space (cosine): mean CIDEr-D against each of their captions, with document frequencies
over the training captions, plus ``weight`` times the candidate's log-probability per token.

Why: on small caption sets with near-twin images (a drawing and its black-and-white version, titled
alike) the beam often holds the twin's title, but ranks a caption of another object above it; the
neighbours' captions vote for the one that names what the nearest images show.

The run keeps what this needs in ``consensus.npz`` (the training images' features, float16) and
``consensus.json`` (their captions and the settings), so ``cnnctl caption`` and ``cnnctl evaluate``
choose as training's final evaluation did.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

FEATURES, CAPTIONS = "consensus.npz", "consensus.json"


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, ...) -> (n, d) float32 rows of length 1 (cosine similarity is then a dot product)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Consensus:
    """``Consensus(train_features, train_captions, k, weight).choose(features, candidates)``.

    ``train_features`` (n, cells, dim) or (n, dim); ``train_captions``: each training image's token lists.
    The features are held as float16 (what the run stores): the chooser gives the same choice in
    training's final evaluation and in a later ``cnnctl caption``.
    """

    def __init__(self, train_features: np.ndarray, train_captions: list[list[list[str]]], k: int,
                 weight: float = 0.0):
        from cnnctl.metrics.captions import CiderD

        if len(train_features) != len(train_captions):
            raise ValueError(f"{len(train_features)} feature rows but {len(train_captions)} caption lists")
        self.features = np.asarray(train_features, np.float16).reshape(len(train_features), -1)
        self.captions = [[list(c) for c in caps] for caps in train_captions]
        self.k, self.weight = int(min(k, len(self.captions))), float(weight)
        self._base = unit_rows(self.features)
        self._cider = CiderD(self.captions)

    def neighbours(self, features: np.ndarray, batch: int = 512) -> np.ndarray:
        """(queries, k) indices of the nearest training images, nearest first."""
        out = []
        for s in range(0, len(features), batch):
            sim = unit_rows(np.asarray(features[s:s + batch], np.float16)) @ self._base.T
            top = np.argpartition(-sim, self.k - 1, axis=1)[:, :self.k]
            order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
            out.append(np.take_along_axis(top, order, axis=1))
        return np.concatenate(out) if out else np.zeros((0, self.k), int)

    def agreement(self, words: list[str], neighbours: np.ndarray) -> float:
        """Mean over the ``neighbours`` of ``words``' mean CIDEr-D against each neighbour's captions."""
        return float(np.mean([np.mean([self._cider.score(words, c) for c in self.captions[j]])
                              for j in neighbours]))

    def choose(self, features: np.ndarray, candidates: list[list[tuple[list[int], float]]],
               decode) -> list[tuple[list[int], float]]:
        """Each image's chosen (word ids, log-probability) of its beam's ``candidates`` (best first, as
        ``beam_search(..., every_beam=True)`` gives them); ``decode``: word ids -> words."""
        chosen = []
        for cands, near in zip(candidates, self.neighbours(features)):
            score = [self.agreement(decode(ids), near) + self.weight * lp / (len(ids) + 1) for ids, lp in cands]
            chosen.append(cands[int(np.argmax(score))])      # ties: the beam's own order
        return chosen

    # ------------------------------------------------------------------------ the run's files
    def save(self, folder: Path) -> None:
        from cnnctl.files import atomic_write_npz, atomic_write_text

        atomic_write_npz(Path(folder) / FEATURES, {"features": self.features})
        atomic_write_text(Path(folder) / CAPTIONS, json.dumps(
            {"k": self.k, "weight": self.weight, "captions": [[" ".join(c) for c in caps] for caps in self.captions]}))

    @classmethod
    def load(cls, folder: Path) -> Consensus | None:
        """The run's chooser, or None when the run decodes by the beam alone (no consensus files)."""
        folder = Path(folder)
        if not (folder / CAPTIONS).is_file():
            return None
        try:
            meta = json.loads((folder / CAPTIONS).read_text(encoding="utf-8"))
            with np.load(folder / FEATURES) as f:
                features = f["features"]
            captions = [[c.split() for c in caps] for caps in meta["captions"]]
            return cls(features, captions, int(meta["k"]), float(meta["weight"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CnnctlError(f"cannot read the consensus files of {folder} ({FEATURES}, {CAPTIONS}): {e}",
                              hint="the run's files are damaged or mixed with another run's; train it again "
                                   "or decode by the beam alone (--set caption.consensus=0 when training)") from e

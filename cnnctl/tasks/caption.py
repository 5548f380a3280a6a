"""Image captioning (Vinyals et al. 2015; Karpathy & Fei-Fei 2015) as a task on the one engine.

Data: caption data in any supported format (``cnnctl.data.captions``) ->
the vocabulary of the training captions (``vocab.json``) -> the frozen
encoder's features of every image, computed once and cached under a hash of
the encoder's weights and the images (``cnnctl.train.feature_cache``) ->
batches of ``({"features": (b, cells, dim), "tokens": (b, T)}, next words
(b, T))``, one example per (image, caption) pair, in an order that is a
function of (seed, epoch) so that a resumed run sees what an uninterrupted
one would.

Training: masked softmax cross-entropy over the next word (padding ignored).
Evaluation: beam search (and greedy) on the test images -> corpus BLEU-1..4,
CIDEr-D and exact-sentence match, beside two baselines that need no
language model: the most frequent training caption and the caption of the
nearest training image in encoder feature space (Devlin et al. 2015).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any, ClassVar

import keras
import numpy as np

from cnnctl.data.pipeline import shard_by_example
from cnnctl.errors import CnnctlError
from cnnctl.tasks.base import TASKS, Field, Task

PAPERS = {  # reference figures, on other data (BLEU x100 as the papers print them)
    "Karpathy & Fei-Fei 2015, Flickr8K (Table 4)": {"bleu1": 57.9, "bleu2": 38.3, "bleu3": 24.5, "bleu4": 16.0},
    "Karpathy & Fei-Fei 2015, COCO (Table 4)": {"bleu1": 62.5, "bleu2": 45.0, "bleu3": 32.1, "bleu4": 23.0,
                                                "cider_d": 66.0},
    "Vinyals et al. 2015, COCO (Table 1)": {"bleu4": 27.7, "cider_d": 85.5},
}


# ---------------------------------------------------------------------------- a split as the engine sees it
class PairSplit:
    """(image, caption) pairs of one split: ``image`` (pairs,) index into ``features``; ``tokens`` rows."""

    def __init__(self, features: np.ndarray, image: np.ndarray, tokens: np.ndarray, references: list,
                 pixels: np.ndarray | None = None, mirrored: np.ndarray | None = None,
                 views: list[np.ndarray] | None = None):
        self.features, self.image, self.tokens, self.references = features, image, tokens, references
        self.pixels = pixels          # uint8 (images, S, S, c) at the encoder's size when it trains, else None
        self.mirrored = mirrored      # features of the mirror images (caption.flip, frozen encoder), else None
        self.views = views or []      # features of K distorted views (caption.views), each like ``features``

    @property
    def alternatives(self) -> list[np.ndarray]:
        """What a pair may see instead of its image's features: view k (1..) is alternatives[k - 1]."""
        return self.views or ([self.mirrored] if self.mirrored is not None else [])

    @property
    def count(self) -> int:   # what the engine counts as "examples" (images/s is pairs/s here)
        return len(self.image)

    @property
    def images(self) -> int:
        return len(self.features)


class CaptionDataModule:
    """The engine's data protocol for captions: ``train`` / ``val`` / ``test``, ``steps``, datasets.

    ``prepare(run)`` computes (or finds) the encoder features; until then only counts are known.
    """

    def __init__(self, cfg, batch_size: int, seed: int, log=print):
        from cnnctl.data.captions import load_captions, problem_report
        from cnnctl.data.text import Vocab, tokenize

        self.cfg, self.batch_size, self.seed, self.log = cfg, batch_size, seed, log
        cc = cfg.caption
        raw = load_captions(cfg.data.path, cfg.data.scene_counts, cfg.data.scene_seed)
        self.source = raw.source
        self.problems = raw.problems
        if raw.problems:
            if not cfg.data.skip_bad:
                raise CnnctlError(problem_report(raw.problems),
                                  hint="fix those lines, or pass --skip-bad to train without them")
            log(f"skipped {len(raw.problems)} bad caption line(s) or image(s) (--skip-bad)")
        splits = dict(raw.splits)
        if splits["val"] is None and cfg.data.val_split > 0:
            train = splits["train"]
            order = np.random.default_rng([seed, 0xCA97]).permutation(train.count)
            held = max(1, round(cfg.data.val_split * train.count)) if train.count > 1 else 0
            splits["val"], splits["train"] = train.subset(np.sort(order[:held])), train.subset(np.sort(order[held:]))
        if splits["test"] is None and splits["val"] is not None:
            log("no test split in the caption data: the validation split is used as the test set")
            splits["test"] = splits["val"]
        self.raw = splits
        self.tokens = {s: [[tokenize(c) for c in caps] for caps in sp.captions] if sp else None
                       for s, sp in splits.items()}
        self.vocab = Vocab.build((t for caps in self.tokens["train"] for t in caps), cc.min_count)
        self.train = self.val = self.test = None
        self.word_vectors: dict | None = None      # {"vectors", "found"} when caption.word_vectors is set
        self.consensus = None                      # the beam's chooser when caption.consensus is set
        self._counts = {s: (sum(len(c) for c in sp.captions) if sp else 0) for s, sp in splits.items()}

    # ------------------------------------------------------------------ the engine's protocol
    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    def steps(self, split: str = "train") -> int:
        return math.ceil(self._counts[split] / self.batch_size) if self._counts.get(split) else 0

    def describe(self) -> str:
        parts = [f"{self.raw[s].count} {s} images ({self._counts[s]} captions)" for s in ("train", "val", "test")
                 if self.raw[s] is not None]
        return ", ".join(parts) + f"; vocabulary {len(self.vocab)} words (min count {self.vocab.min_count})"

    def prepare(self, run, encoder_spec) -> None:
        """Features of every image (cached), then the (image, caption) pairs of every split."""
        from cnnctl.data import caption_views
        from cnnctl.data.text import token_rows
        from cnnctl.train import feature_cache

        cc = self.cfg.caption
        encoder = encoder_spec.build(self.log)
        flip = cc.flip and not cc.train_encoder       # a trained encoder mirrors its pixels batch by batch
        views = [] if cc.train_encoder else [f"train_view{k}" for k in range(1, cc.views + 1)]
        key = feature_cache.key(feature_cache.weights_digest(encoder), self._data_digest(),
                                json.dumps(encoder_spec.to_json()), *(["mirrored train images"] if flip else []),
                                *([f"{len(views)} distorted views, {caption_views.VERSION}"] if views else []))
        splits = {s: sp for s, sp in self.raw.items() if sp is not None}

        def compute():
            from cnnctl.models.encoders import encode

            out = {}
            for s, sp in splits.items():
                same = next((t for t in out if splits[t.removesuffix("_features")] is sp), None)
                if same is not None:                       # no test split: the validation split stands in
                    out[f"{s}_features"] = out[same]
                    self.log(f"features of the {s} split: those of the {same.removesuffix('_features')} split")
                    continue
                feats, bad = encode(encoder, encoder_spec, sp.images, self.log)
                if bad:
                    shown = "\n".join(f"  {p}: {why}" for p, why in bad[:10])
                    raise CnnctlError(f"{len(bad)} unusable image file(s) in the {s} split:\n{shown}",
                                      hint="fix or remove them (`cnnctl data inspect FOLDER` lists every problem)")
                out[f"{s}_features"] = feats
                self.log(f"features of {len(feats)} {s} images: {feats.shape[1]} cell(s) x {feats.shape[2]}")
            if flip:
                out["train_mirrored"], _ = encode(encoder, encoder_spec, splits["train"].images, self.log,
                                                  mirror=True)
                self.log(f"features of the {len(out['train_mirrored'])} training images mirrored (caption.flip)")
            for k, name in enumerate(views, 1):
                out[name], _ = encode(encoder, encoder_spec, splits["train"].images, self.log,
                                      transform=caption_views.distorted(k))
                self.log(f"features of distorted view {k} of {len(views)} of the {len(out[name])} training images "
                         "(caption.views)")
            return out

        arrays, info = feature_cache.load_or_compute(run, key, compute, self.log)
        self.feature_info = info
        pixels = {}
        for s, sp in splits.items() if cc.train_encoder else ():
            same = next((t for t in pixels if splits[t] is sp), None)    # val standing in for test: held once
            pixels[s] = pixels[same] if same is not None else self._pixels(s, sp, encoder, encoder_spec)
        made = {}
        for s, sp in splits.items():
            captions = [t for caps in self.tokens[s] for t in caps]
            image = np.repeat(np.arange(sp.count), [len(c) for c in self.tokens[s]]).astype(np.int64)
            rows, cut = token_rows(self.vocab, captions, cc.max_words)
            if cut and s == "train":
                self.log(f"{cut} training caption(s) longer than caption.max_words = {cc.max_words} were cut")
            made[s] = PairSplit(arrays[f"{s}_features"], image, rows, self.tokens[s], pixels.get(s),
                                arrays.get("train_mirrored") if s == "train" else None,
                                [arrays[v] for v in views] if s == "train" else None)
        self.train, self.val, self.test = made["train"], made.get("val"), made.get("test")
        if self.test is None and self.val is not None:
            self.test = self.val

    def _pixels(self, split: str, sp, encoder, spec) -> np.ndarray:
        """Every image of ``split`` at the encoder's input size (uint8), for training the encoder."""
        from cnnctl.models.encoders import fitted_images

        channels = int(encoder.inputs[0].shape[-1])
        pixels, bad = fitted_images(sp.images, channels, spec.image_size)
        if bad:
            raise CnnctlError(f"cannot read image {bad[0][0]}: {bad[0][1]}", hint="fix or remove it")
        self.log(f"{split}: {len(pixels)} images held at {spec.image_size}x{spec.image_size} "
                 f"({pixels.nbytes / 2**20:.0f} MiB) for the trainable encoder")
        return pixels

    def _data_digest(self) -> str:
        h = hashlib.sha256()
        for s in ("train", "val", "test"):
            sp = self.raw[s]
            h.update(s.encode())
            if sp is None:
                continue
            if sp.in_memory:
                h.update(np.ascontiguousarray(sp.images).tobytes())
            else:
                import os

                for p in sp.images:
                    st = os.stat(p)
                    h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def _dataset(self, split: PairSplit, order: np.ndarray | None, skip: int, view: np.ndarray | None = None):
        """Batches of ``split`` in ``order`` from batch ``skip`` on; ``view`` (pairs,) int: which pairs see
        their image (0) or its k-th alternative (``split.alternatives``: the mirror image's or a distorted
        view's cached features; the trainable encoder's pixels flipped)."""
        import tensorflow as tf

        n, b = split.count, self.batch_size
        idx = order if order is not None else np.arange(n)
        starts = list(range(skip * b, n, b))
        image, rows = split.image, split.tokens
        # the trainable encoder sees the images; a frozen one was run once, its features are the input
        key, source = ("image", split.pixels) if split.pixels is not None else ("features", split.features)
        dtype = tf.uint8 if key == "image" else tf.float32

        def inputs(pick):
            x = source[image[pick]]                             # a copy: fancy indexing
            if view is None:
                return x
            v = view[pick]
            if key == "image":                                  # (b, S, S, c): flip the columns
                x[v > 0] = x[v > 0][:, :, ::-1]
            else:                                               # (b, cells, dim) from the cached alternatives
                for k, alternative in enumerate(split.alternatives, 1):
                    x[v == k] = alternative[image[pick][v == k]]
            return x

        def batches():
            for s in starts:
                pick = idx[s:s + b]
                tok = rows[pick]
                width = int((tok != 0).sum(axis=1).max())          # trim padding to the longest row
                yield {key: inputs(pick), "tokens": tok[:, :width - 1]}, tok[:, 1:width]

        spec = ({key: tf.TensorSpec((None, *source.shape[1:]), dtype),
                 "tokens": tf.TensorSpec((None, None), tf.int32)}, tf.TensorSpec((None, None), tf.int32))
        return shard_by_example(tf.data.Dataset.from_generator(batches, output_signature=spec)).prefetch(2)

    def train_dataset(self, epoch: int, skip_batches: int = 0):
        from cnnctl.data.pipeline import epoch_permutation

        view = None                 # a function of (seed, epoch) only: resume sees the same views
        if self.train.views:        # the image or one of its K distorted views, each as likely
            view = np.random.default_rng([self.seed, epoch, 0x71E3]).integers(0, len(self.train.views) + 1,
                                                                               self.train.count)
        elif self.cfg.caption.flip:
            view = (np.random.default_rng([self.seed, epoch, 0xF11F]).random(self.train.count) < 0.5).astype(int)
        return self._dataset(self.train, epoch_permutation(self.train.count, self.seed, epoch), skip_batches,
                             view)

    def eval_dataset(self, split: str = "val"):
        sp = getattr(self, split)
        return None if sp is None else self._dataset(sp, None, 0)


# ---------------------------------------------------------------------------- decoding
def fluent_rule(vocab, on: bool) -> list[int] | None:
    """``caption.fluent``'s ids for ``beam_search(fluent=...)``: the vocabulary's ``rarely_last`` words, or None
    when the setting is off."""
    return [vocab.index[w] for w in vocab.rarely_last] if on else None


def beam_search(stepper, features: np.ndarray, beam: int = 3, max_words: int = 20, length_norm: bool = False,
                batch: int = 256, allow_unk: bool = False, every_beam: bool = False,
                fluent: list[int] | None = None) -> list:
    """Best caption of each image -> [(word ids without <start>/<end>, log-probability incl. <end>)].

    ``beam = 1`` is greedy decoding. Finished beams (ended with ``<end>``) keep their score; after
    ``max_words`` words ``<end>`` is forced. With ``length_norm`` beams are ranked by log-prob per token.
    ``<pad>`` and ``<start>`` are never written, nor ``<unk>`` unless ``allow_unk``: "<unk>" describes
    nothing, and on data with many rare words it would otherwise be the likeliest word everywhere.
    A caption has at least one word (``<end>`` cannot come first).
    ``every_beam``: each image's finished beams, best first -> [[(word ids, log-probability), ...], ...]
    (the candidates consensus re-ranking chooses from).
    ``fluent`` (``caption.fluent``; ids from ``fluent_rule``): no word follows itself, and no caption ends
    right after one of these ids (words that almost never end a training caption: "in", "and", "a")
    unless ``max_words`` forces the end. Without it a model that sees the image beside every word
    writes "man in in" and "breakfast b" (docs/captioning.md).
    """
    banned = [0, 1] if allow_unk else [0, 1, 3]
    no_end_after = None if fluent is None else np.asarray(fluent, np.int64)
    out = []
    for s in range(0, len(features), batch):
        out += _beam_batch(stepper, np.asarray(features[s:s + batch], np.float32), beam, max_words, length_norm,
                           banned, every_beam, no_end_after)
    return out


def _beam_batch(stepper, features, k, max_words, length_norm, banned=(0, 1, 3), every_beam=False,
                no_end_after=None):
    n = len(features)
    state, bias = stepper.start(features)
    state = [np.repeat(np.asarray(x), k, axis=0) for x in state]          # (n*k, H)
    bias = np.repeat(np.asarray(bias), k, axis=0)                         # (n*k, E or H)
    tokens = np.full(n * k, 1, np.int32)                                   # <start>
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0                                                     # one live beam to begin with
    seqs = np.zeros((n, k, 0), np.int32)
    finished = np.zeros((n, k), bool)
    rows = np.arange(n)[:, None]
    for t in range(max_words + 1):
        logp, new_state, new_bias = stepper.step(tokens, state, bias)
        logp = np.asarray(logp, np.float64).reshape(n, k, -1)
        vocab = logp.shape[-1]
        logp[..., list(banned)] = -np.inf                                  # live beams never write these
        if no_end_after is not None:                                       # caption.fluent
            prev = tokens.reshape(n, k)
            i, j = np.nonzero(prev > 3)                                    # beams whose last token is a word
            logp[i, j, prev[i, j]] = -np.inf                               # ... never write it again at once
            if t < max_words:
                logp[np.isin(prev, no_end_after), 2] = -np.inf             # ... nor stop on "in", "and", "a"
        if t == 0:
            logp[..., 2] = -np.inf                                         # a caption has at least one word
        logp[finished] = -np.inf
        logp[finished, 0] = 0.0                                            # a finished beam only pads
        if t == max_words:                                                 # out of room: end every live beam
            end = logp[..., 2].copy()
            logp[~finished] = -np.inf
            logp[~finished, 2] = end[~finished]
        cand = (scores[:, :, None] + logp).reshape(n, k * vocab)
        top = np.argsort(-cand, axis=1, kind="stable")[:, :k]              # (n, k)
        source, word = top // vocab, (top % vocab).astype(np.int32)
        scores = np.take_along_axis(cand, top, axis=1)
        seqs = np.concatenate([seqs[rows, source], word[..., None]], axis=2)
        finished = finished[rows, source] | (word == 2)
        state = [np.asarray(x).reshape(n, k, -1)[rows, source].reshape(n * k, -1) for x in new_state]
        bias = np.asarray(new_bias).reshape(n, k, -1)[rows, source].reshape(n * k, -1)
        tokens = word.reshape(-1)
        if finished.all():
            break
    lengths = (seqs != 0).sum(axis=2)                                      # words + <end>
    rank = scores / np.maximum(lengths, 1) if length_norm else scores
    rank = np.where(finished, rank, -np.inf)
    if every_beam:
        order = np.argsort(-rank, axis=1, kind="stable")
        return [[([int(w) for w in seqs[i, j] if w not in (0, 2)], float(scores[i, j]))
                 for j in order[i] if np.isfinite(rank[i, j])] for i in range(n)]
    best = np.argmax(rank, axis=1)
    result = []
    for i, j in enumerate(best):
        ids = [int(w) for w in seqs[i, j] if w not in (0, 2)]
        result.append((ids, float(scores[i, j])))
    return result


def decode_best(stepper, features: np.ndarray, beam: int, max_words: int, length_norm: bool, allow_unk: bool,
                consensus=None, decode=None, fluent: list[int] | None = None) -> list[tuple[list[int], float]]:
    """Each image's caption as a run decodes: its beam's best, or -- with a ``consensus`` chooser
    (``caption.consensus``) and a beam wider than 1 -- the finished beam the nearest training images'
    captions agree with most (``decode``: word ids -> words, for that choice). ``fluent``: see
    ``beam_search``."""
    if consensus is None or beam <= 1:
        return beam_search(stepper, features, beam, max_words, length_norm, allow_unk=allow_unk, fluent=fluent)
    candidates = beam_search(stepper, features, beam, max_words, length_norm, allow_unk=allow_unk, every_beam=True,
                             fluent=fluent)
    return consensus.choose(features, candidates, decode)


def caption_scores(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    from cnnctl.metrics.captions import cider_d, corpus_bleu

    bleu = corpus_bleu(hypotheses, references)
    exact = float(np.mean([any(h == r for r in refs) for h, refs in zip(hypotheses, references)]))
    return {**{f"bleu{i + 1}": b for i, b in enumerate(bleu)}, "cider_d": cider_d(hypotheses, references)[0],
            "exact": exact}


def nearest_neighbour_captions(train: PairSplit, query: np.ndarray, batch: int = 512) -> list[list[str]]:
    """The first caption of the training image nearest to each query (cosine, flattened features)."""
    from cnnctl.tasks.caption_consensus import unit_rows

    base = unit_rows(train.features)
    out = []
    for s in range(0, len(query), batch):
        nearest = np.argmax(unit_rows(query[s:s + batch]) @ base.T, axis=1)
        out += [train.references[i][0] for i in nearest]
    return out


class ValidationCaptions(keras.callbacks.Callback):
    """After each epoch: the first ``caption.val_images`` validation images captioned as the run's
    ``caption.beam`` decodes -> ``val_bleu4`` and ``val_cider_d`` in the logs (the caption monitor).

    Next-word loss is a poor guide for a generator: on small caption sets it rises from the
    third epoch while the captions themselves keep improving for many more, so ``best.keras`` and
    settings chosen on the validation split follow the caption scores instead.
    """

    def __init__(self, data):
        super().__init__()
        self.data = data
        self._stepper = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.data.val is None:
            return
        from cnnctl.models.captioning import CaptionStepper, split_captioner
        from cnnctl.models.encoders import encode_pixels

        cc, val = self.data.cfg.caption, self.data.val
        n = min(cc.val_images, val.images)
        encoder, decoder = split_captioner(self.model)
        if self._stepper is None:               # the decoder's own layers: trained weights as they stand
            self._stepper = CaptionStepper(decoder)
        features = val.features[:n] if encoder is None else encode_pixels(encoder, val.pixels[:n])
        best = decode_best(self._stepper, features, cc.beam, cc.max_words, cc.length_norm, cc.allow_unk,
                           self.data.consensus, self.data.vocab.decode, fluent_rule(self.data.vocab, cc.fluent))
        scores = caption_scores([self.data.vocab.decode(ids) for ids, _ in best], val.references[:n])
        logs["val_bleu4"], logs["val_cider_d"] = scores["bleu4"], scores["cider_d"]


# ---------------------------------------------------------------------------- the task
@TASKS.register("caption", about="image captioning: Show and Tell, Karpathy's mRNN (frozen encoder features)")
class CaptionTask(Task):
    name = "caption"
    progress_fields = (Field("loss", "loss"), Field("accuracy", "word acc"), Field("bleu4", "BLEU-4"),
                       Field("cider_d", "CIDEr-D"))
    monitor = "val_cider_d"
    modes: ClassVar[dict[str, str]] = {"loss": "min", "accuracy": "max", "bleu4": "max", "cider_d": "max"}

    def data(self, cfg, batch_size: int, log):
        if cfg.caption.consensus and cfg.caption.train_encoder:
            raise CnnctlError("caption.consensus (choosing among the beam by the nearest training images' "
                              "captions, in frozen encoder features) cannot be combined with caption.train_encoder",
                              hint="set one of them")
        if cfg.caption.views and (cfg.caption.flip or cfg.caption.train_encoder):
            raise CnnctlError("caption.views (distorted views of a frozen encoder's images, each flipped or not) "
                              "cannot be combined with caption." + ("flip" if cfg.caption.flip else "train_encoder"),
                              hint="set one of them")
        if cfg.caption.val_images <= 0 and cfg.train.monitor.removeprefix("val_") in ("bleu4", "cider_d"):
            raise CnnctlError(f"train.monitor = {cfg.train.monitor!r} needs the validation captions, but "
                              "caption.val_images is 0", hint='--set train.monitor="val_loss" (or caption.val_images=1000)')
        return CaptionDataModule(cfg, batch_size, cfg.train.seed, log)

    def epoch_callbacks(self, run, data, cfg) -> list:
        return [ValidationCaptions(data)] if cfg.caption.val_images > 0 else []

    def prepare(self, run, data, cfg, log) -> None:
        from cnnctl.models.encoders import EncoderSpec

        spec = EncoderSpec.from_config(cfg.caption)
        data.prepare(run, spec)
        if cfg.caption.consensus:                   # the chooser's training features and captions, kept in the run
            from cnnctl.tasks.caption_consensus import Consensus

            data.consensus = Consensus(data.train.features, data.train.references, cfg.caption.consensus,
                                       cfg.caption.consensus_weight)
            data.consensus.save(run.path)
        if cfg.caption.word_vectors:
            self._word_vectors(run, data, cfg, log)
        run.write_json("caption.json", {"encoder": spec.to_json(), "max_words": cfg.caption.max_words,
                                        "beam": cfg.caption.beam, "length_norm": cfg.caption.length_norm,
                                        "allow_unk": cfg.caption.allow_unk, "fluent": cfg.caption.fluent})

    def write_run_files(self, run, data) -> None:
        data.vocab.save(run.file("vocab.json"))

    @staticmethod
    def _word_vectors(run, data, cfg, log) -> None:
        """``word_vectors.npz``: the pretrained vectors of the run's vocabulary (once per run)."""
        from cnnctl.data.word_vectors import vectors_for

        name = cfg.caption.word_vectors
        path = run.file("word_vectors.npz")
        if path.is_file():
            with np.load(path) as saved:
                if list(saved["words"]) == data.vocab.words:
                    data.word_vectors = dict(saved)
                    return
        vectors, found = vectors_for(data.vocab.words, name, log)
        from cnnctl.files import atomic_write

        atomic_write(path, lambda tmp: np.savez(tmp, words=np.array(data.vocab.words), vectors=vectors, found=found),
                     suffix=".npz")
        data.word_vectors = {"vectors": vectors, "found": found}
        words = data.vocab.words[4:]
        log(f"{name}: {int(found[4:].sum())} of {len(words)} vocabulary words start from their pretrained vectors")

    def check_resume(self, run, data) -> None:
        saved = run.read_json("vocab.json")
        if saved.get("words") != data.vocab.words:
            raise CnnctlError("the caption data gives a different vocabulary than the run's vocab.json",
                              hint="resume with the data (and caption.min_count) the run was started on")

    def build(self, cfg, data, log):
        from cnnctl import models

        options = {k: v for k, v in cfg.model.options.items() if k != "input_shape"}
        feats = data.train.features
        model = models.build(cfg.model.name, num_classes=len(data.vocab), input_shape=feats.shape[1:], **options)
        pretrained = data.word_vectors
        if pretrained is not None:                       # found words take their vectors; others keep the init
            table = model.get_layer("word_embed").embeddings
            dims, width = pretrained["vectors"].shape[1], int(table.shape[1])
            if dims != width:
                raise CnnctlError(f"caption.word_vectors = {cfg.caption.word_vectors!r} has {dims} dimensions "
                                  f"but the model's word embeddings have {width}",
                                  hint=f"--set model.embed_dim={dims}")
            found = pretrained["found"]
            table.assign(np.where(found[:, None], pretrained["vectors"], np.asarray(table.numpy())))
        norm = model.get_layer("image_norm")            # per-dimension mean / variance of the training features
        if len(norm.input.shape) == 3:                  # regions (b, cells + 1, dim): cells and the whole image
            norm.adapt(np.concatenate([feats, feats.mean(axis=1, keepdims=True)], axis=1))
        else:
            norm.adapt(feats.reshape(len(feats), -1))
        if not cfg.caption.train_encoder:
            return model, []
        from cnnctl.models.captioning import with_encoder
        from cnnctl.models.encoders import EncoderSpec, trainable_encoder

        encoder = trainable_encoder(EncoderSpec.from_config(cfg.caption), log)
        log(f"the encoder trains too ({sum(int(np.prod(v.shape)) for v in encoder.trainable_variables):,} "
            f"weights at finetune.body_lr_scale = {cfg.finetune.body_lr_scale} x lr; batch norm frozen)")
        return with_encoder(encoder, model), [v.path for v in encoder.trainable_variables]

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
                      metrics=[WordAccuracy()], jit_compile=cfg.train.jit)

    @staticmethod
    def _decode_test(model, data) -> tuple[dict[str, Any], dict[str, tuple[list, list]]]:
        """``model``'s test captions, greedy and as the run decodes -> (``test_*`` / ``test_greedy_*`` scores,
        {"greedy" | "beam": (captions as word lists, log-probabilities)})."""
        from cnnctl.models.captioning import CaptionStepper, split_captioner
        from cnnctl.models.encoders import encode_pixels

        cc, test = data.cfg.caption, data.test
        encoder, decoder = split_captioner(model)
        stepper = CaptionStepper(decoder)
        # a trained encoder describes the test images anew; the baselines keep the frozen features
        features = test.features if encoder is None else encode_pixels(encoder, test.pixels)
        refs = test.references
        fluent = fluent_rule(data.vocab, cc.fluent)
        results, decoded = {}, {}
        for name, k in (("greedy", 1), ("beam", cc.beam)):
            if name == "beam" and k == 1:                 # the recipe decodes greedily: already done
                decoded["beam"] = decoded["greedy"]
            else:
                best = decode_best(stepper, features, k, cc.max_words, cc.length_norm, cc.allow_unk,
                                   data.consensus if name == "beam" else None, data.vocab.decode, fluent)
                decoded[name] = ([data.vocab.decode(ids) for ids, _ in best], [lp for _, lp in best])
            for key, v in caption_scores(decoded[name][0], refs).items():
                results[f"test_{key}" if name == "beam" else f"test_greedy_{key}"] = v
        if data.consensus is not None and cc.beam > 1:   # what the consensus changed: the beam's own best beside
            alone = beam_search(stepper, features, cc.beam, cc.max_words, cc.length_norm, allow_unk=cc.allow_unk,
                                fluent=fluent)
            for key, v in caption_scores([data.vocab.decode(ids) for ids, _ in alone], refs).items():
                results[f"test_beam_alone_{key}"] = v
        return results, decoded

    def after_training(self, run, model, data, log) -> dict[str, Any]:
        """``best.keras`` (the epoch with the highest ``val_cider_d``: what ``cnnctl caption --model RUN``
        loads) scored on test beside the last epoch's model -> ``test_best_*``
        (its epoch is ``best_epoch``)."""
        if data.test is None or not run.file("best.keras").is_file():
            return {}
        from cnnctl.inference import load_keras_file

        try:
            best = load_keras_file(run.file("best.keras"), hint="")
        except CnnctlError as e:                      # the run's own results do not depend on it
            log(f"test_best_* left out: {e}")
            return {}
        scores, _ = self._decode_test(best, data)
        return {f"test_best_{k.removeprefix('test_')}": v for k, v in scores.items()}

    def final_metrics(self, model, data) -> dict[str, Any]:
        test = data.test
        if test is None:
            return {}
        results, decoded = self._decode_test(model, data)
        refs = test.references
        cc = data.cfg.caption
        frequent = Counter(" ".join(c) for caps in data.train.references for c in caps).most_common(1)[0][0].split()
        for key, v in caption_scores([frequent] * test.images, refs).items():
            results[f"baseline_frequent_{key}"] = v
        for key, v in caption_scores(nearest_neighbour_captions(data.train, test.features), refs).items():
            results[f"baseline_nearest_{key}"] = v
        val = data.val
        if val is not None and val is not test:          # the yardstick for val_bleu4 / val_cider_d
            n = min(cc.val_images, val.images) if cc.val_images > 0 else val.images
            for key, v in caption_scores(nearest_neighbour_captions(data.train, val.features[:n]),
                                         val.references[:n]).items():
                results[f"val_baseline_nearest_{key}"] = v
        results.update(test_images=test.images, test_beam=cc.beam, vocab_size=len(data.vocab),
                       feature_extraction_s=data.feature_info["seconds"], features_reused=data.feature_info["reused"])
        self.last_decoded = decoded
        return results

    def write_outputs(self, run, data) -> None:
        """``captions.json``: every test image's generated caption (beam) and references."""
        if getattr(self, "last_decoded", None) is None or data.test is None:
            return
        hyps, logps = self.last_decoded["beam"]
        images = data.raw["test"].images
        # In-memory images (scenes) are named by source, split and index: `visualize captions` rebuilds them.
        names = ([str(p) for p in images] if not data.raw["test"].in_memory
                 else [f"{data.source}:test[{i}]" for i in range(len(hyps))])
        run.write_json("captions.json", [{"image": n, "caption": " ".join(h), "log_prob": lp,
                                          "references": [" ".join(r) for r in refs]}
                                         for n, h, lp, refs in zip(names, hyps, logps, data.test.references)])

    def summary_keys(self) -> tuple[str, ...]:
        return ("test_bleu4", "test_cider_d", "test_exact", "test_greedy_bleu4", "baseline_nearest_bleu4",
                "baseline_frequent_bleu4", "val_cider_d", "val_loss")


class _Ratio(keras.metrics.Metric):
    """hits / total, summed over the epoch; subclasses say what a hit is in ``update_state``."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def result(self):
        return self.hits / keras.ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.hits.assign(0.0)
        self.total.assign(0.0)


@keras.saving.register_keras_serializable(package="cnnctl")
class WordAccuracy(_Ratio):
    """Next-word accuracy over real words (padding, id 0, not counted)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(ops.not_equal(y_true, 0), "float32")
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
        self.hits.assign_add(ops.sum(hit * mask))
        self.total.assign_add(ops.sum(mask))


@keras.saving.register_keras_serializable(package="cnnctl")
class BatchRecall(_Ratio):
    """Within each batch: how often an image's own sentence scores highest among the batch's sentences."""

    def update_state(self, y_true, scores, sample_weight=None):
        ops = keras.ops
        n = ops.shape(scores)[0]
        best = ops.cast(ops.argmax(scores, axis=1), "int32")
        self.hits.assign_add(ops.sum(ops.cast(ops.equal(best, ops.arange(n, dtype="int32")), "float32")))
        self.total.assign_add(ops.cast(n, "float32"))


@TASKS.register("align", about="image-sentence alignment: Karpathy's regions + BRNN, ranked (R@K, median rank)")
class AlignTask(CaptionTask):
    """Karpathy & Fei-Fei sec. 3.1: images and sentences scored in one space, evaluated by retrieval."""

    name = "align"
    progress_fields = (Field("loss", "loss"), Field("accuracy", "batch R@1"))
    monitor = "val_loss"
    modes: ClassVar[dict[str, str]] = {"loss": "min", "accuracy": "max"}

    def epoch_callbacks(self, run, data, cfg) -> list:
        return []                               # it ranks sentences; it writes none

    def after_training(self, run, model, data, log) -> dict[str, Any]:
        return {}                               # no captions, so no best.keras captions to score

    def prepare(self, run, data, cfg, log) -> None:
        if cfg.caption.train_encoder:
            raise CnnctlError("caption.train_encoder = true is for caption generators (show_and_tell, mrnn); "
                              "the alignment model trains over frozen region features",
                              hint="drop --set caption.train_encoder=true")
        super().prepare(run, data, cfg, log)

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        from cnnctl.models.captioning import alignment_ranking_loss

        model.compile(optimizer=optimizer, loss=alignment_ranking_loss, metrics=[BatchRecall()],
                      jit_compile=cfg.train.jit)

    def final_metrics(self, model, data) -> dict[str, Any]:
        """Every test image against the first sentence of every test image, both directions. A
        sentence identical to the true one (grid scenes repeat sentences) counts as correct."""
        from cnnctl.metrics.captions import recall_at, retrieval_ranks, same_rows

        test = data.test
        if test is None:
            return {}
        first = np.searchsorted(test.image, np.arange(test.images))          # each image's first pair
        scores = alignment_matrix(model, test.features, test.tokens[first])
        self.last_scores = scores
        n = len(scores)
        correct = same_rows(test.tokens[first])                              # symmetric (n, n)
        out = {"test_images": n, "test_distinct_sentences": len(np.unique(test.tokens[first], axis=0))}
        for direction, ranks in (("image_to_text", retrieval_ranks(scores, correct)),
                                 ("text_to_image", retrieval_ranks(scores.T, correct))):
            for key, v in recall_at(ranks).items():
                out[f"test_{direction}_{key}"] = v
        out.update(chance_recall(correct))
        return out

    def write_outputs(self, run, data) -> None:
        pass

    def summary_keys(self) -> tuple[str, ...]:
        return ("test_image_to_text_r@1", "test_image_to_text_r@5", "test_image_to_text_r@10",
                "test_image_to_text_median_rank", "test_text_to_image_r@1", "test_text_to_image_r@10",
                "chance_r@10", "val_loss")


def chance_recall(correct: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """R@k and median rank of a random ranking when query i has ``correct[i].sum()`` right items
    among n: P(rank <= k) = 1 - C(n - c, k) / C(n, k), the first right item's expected place."""
    n = correct.shape[1]
    c = correct.sum(axis=1).astype(np.float64)
    out = {}
    for k in ks:
        miss = np.ones_like(c)
        for j in range(k):                                   # C(n-c, k) / C(n, k) as a product
            miss *= np.clip((n - c - j) / (n - j), 0.0, 1.0)
        out[f"chance_r@{k}"] = float(np.mean(1 - miss))
    # the median over queries of each query's median first-hit rank: the smallest r with P(rank <= r) >= 1/2
    medians = []
    for ci in c:
        miss, r = 1.0, 0
        while miss > 0.5:
            miss *= (n - ci - r) / (n - r)
            r += 1
        medians.append(r)
    out["chance_median_rank"] = float(np.median(medians))
    return out


def alignment_matrix(model, features: np.ndarray, tokens: np.ndarray, chunk: int = 200) -> np.ndarray:
    """S (images, sentences) of a trained ``brnn_alignment`` model, computed in blocks."""
    regions = keras.Model(model.inputs, model.get_layer("region_embed").output)
    words = keras.Model(model.inputs, model.get_layer("word_embed_out").output)
    width = int((tokens != 0).sum(axis=1).max())
    tokens = tokens[:, :width]
    v = np.asarray(regions.predict([features, tokens], batch_size=256, verbose=0), np.float32)   # (n, R, h)
    s = np.asarray(words.predict([features, tokens], batch_size=256, verbose=0), np.float32)     # (n, T, h)
    real = (tokens > 2).astype(np.float32)                                                        # (n, T)
    out = np.zeros((len(v), len(s)), np.float32)
    for a in range(0, len(v), chunk):
        dots = np.einsum("kih,lth->klit", v[a:a + chunk], s)
        out[a:a + chunk] = (dots.max(axis=2) * real[None]).sum(axis=-1)
    return out

"""A trained captioner ready to describe image files: a run folder (or the bundled default captioner)
-> its encoder, language model and vocabulary -> captions with their log-probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

BUNDLED = Path(__file__).resolve().parent / "data" / "bundled" / "captioner"


class Captioner:
    """``Captioner(folder).caption(paths, beam=3)`` -> [{"image", "caption", "log_prob"}]."""

    def __init__(self, folder: str | Path | None = None, best: bool = True, log=lambda m: None,
                 decoder: bool = True):
        from cnnctl.data.text import Vocab
        from cnnctl.inference import load_keras_file
        from cnnctl.models.captioning import CaptionStepper, split_captioner
        from cnnctl.models.encoders import EncoderSpec
        from cnnctl.train.rundir import RunDir

        if folder is None and not (BUNDLED / "vocab.json").is_file():
            raise CnnctlError(f"this installation of cnnctl has lost its bundled default captioner ({BUNDLED})",
                              hint="reinstall cnnctl (pip install --force-reinstall cnnctl), or give a caption "
                                   "run: `cnnctl caption --model checkpoints/RUN IMAGE...`")
        folder = Path(folder) if folder is not None else BUNDLED
        run = RunDir.open(folder)
        for name in ("vocab.json", "caption.json"):
            if not run.file(name).is_file():
                raise CnnctlError(f"{folder} is not a caption run (no {name})",
                                  hint="give a run trained with task = \"caption\" (e.g. --recipe caption-scenes)")
        self.folder = folder
        self.vocab = Vocab.from_json(run.read_json("vocab.json"))
        self.settings = run.read_json("caption.json")
        which = "best" if best and run.file("best.keras").is_file() else "model"
        path = run.file(f"{which}.keras")
        if not path.is_file():
            raise CnnctlError(f"{path} does not exist", hint="the run has not finished an epoch yet")
        loaded = load_keras_file(path, hint="the file is damaged; use the run's other .keras file")
        trained_encoder, self.model = split_captioner(loaded)     # the encoder is in the file if it trained
        words = int(self.model.get_layer("word_embed").input_dim)
        if words != len(self.vocab):
            raise CnnctlError(f"{path} knows {words} words but vocab.json has {len(self.vocab)}",
                              hint="the run directory has been mixed with another run's files")
        self.stepper = CaptionStepper(self.model) if decoder else None   # decoder=False: the alignment model
        from cnnctl.tasks.caption_consensus import Consensus

        self.consensus = Consensus.load(folder)          # None: the run decodes by its beam alone
        self.spec = EncoderSpec.from_json(self.settings["encoder"])
        self.trained_encoder = trained_encoder is not None
        if trained_encoder is not None:
            self.encoder = trained_encoder
        else:           # in the precision the run computed its features in: the same features, bit for bit
            import keras

            before = keras.mixed_precision.global_policy().name
            keras.mixed_precision.set_global_policy(_feature_precision(folder))
            try:
                self.encoder = self.spec.build(log)
            finally:
                keras.mixed_precision.set_global_policy(before)

    def ensemble(self, others: list[Captioner]) -> Captioner:
        """Decode with this run and ``others`` as one model (``EnsembleStepper``: the mean of their
        next-word probabilities, Show and Tell sec. 4.3.1). This run's settings (beam, max_words, fluent
        rules) and encoder are used; every member must have the same vocabulary and frozen encoder."""
        from cnnctl.models.captioning import EnsembleStepper

        for other in others:
            problem = None
            if other.vocab.words != self.vocab.words:
                problem = "has another vocabulary than"
            elif other.spec.to_json() != self.spec.to_json():
                problem = "uses another encoder than"
            elif other.trained_encoder or self.trained_encoder:
                problem = "cannot share image features (its encoder was fine-tuned) with"
            elif other.consensus is not None or self.consensus is not None:
                problem = "chooses by consensus (caption.consensus), which cannot be ensembled with"
            if problem:
                raise CnnctlError(f"{other.folder} {problem} {self.folder}",
                                  hint="ensemble runs trained on the same captions (and caption.min_count) over "
                                       "the same frozen encoder")
        self.stepper = EnsembleStepper([self.stepper] + [o.stepper for o in others])
        return self

    def features(self, images) -> np.ndarray:
        """Encoder features of image files (paths) or of uint8 images in memory ``(n, h, w, c)``."""
        from cnnctl.models.encoders import encode

        feats, bad = encode(self.encoder, self.spec, images if isinstance(images, np.ndarray)
                            else [str(p) for p in images])
        if bad:
            raise CnnctlError(f"cannot read image {bad[0][0]}: {bad[0][1]}" +
                              (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                              hint="give JPEG, PNG, BMP, GIF, WebP or TIFF files")
        return feats

    def decode(self, features: np.ndarray, beam: int | None = None, max_words: int | None = None,
               length_norm: bool | None = None, consensus: bool = True) -> list[tuple[list[str], float]]:
        """[(words, log-probability)] of each image, decoded as the run decodes unless told otherwise
        (``consensus=False``: the beam's own best, even in a run that chooses by consensus)."""
        from cnnctl.tasks.caption import decode_best, fluent_rule

        beam = beam or self.beam
        max_words = max_words or int(self.settings.get("max_words", 20))
        norm = self.settings.get("length_norm", False) if length_norm is None else length_norm
        best = decode_best(self.stepper, features, beam, max_words, norm, bool(self.settings.get("allow_unk", False)),
                           self.consensus if consensus else None, self.vocab.decode,
                           fluent_rule(self.vocab, bool(self.settings.get("fluent", False))))
        return [(self.vocab.decode(ids), lp) for ids, lp in best]

    @property
    def beam(self) -> int:
        return int(self.settings.get("beam", 3))

    def caption(self, paths: list[str], beam: int | None = None, max_words: int | None = None,
                length_norm: bool | None = None) -> list[dict]:
        decoded = self.decode(self.features(paths), beam, max_words, length_norm)
        return [{"image": str(p), "caption": " ".join(words), "log_prob": lp}
                for p, (words, lp) in zip(paths, decoded)]


def _feature_precision(folder: Path) -> str:
    """The policy the run trained (and so computed its encoder features) in, from its config.toml."""
    import tomllib

    try:
        policy = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))["train"]["precision"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "float32"
    return policy if policy in ("float32", "mixed_bfloat16") else "float32"

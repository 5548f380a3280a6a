"""Caption scores against the reference implementations, beam search against brute force,
and the word-by-word decoder against the trained network it decodes."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from cnnctl.metrics.captions import cider_d, corpus_bleu, recall_at, retrieval_ranks

WORDS = ["a", "the", "dog", "cat", "on", "mat", "sits", "red", "blue", "left", "of", "above", "bag", "sneaker"]


def _corpus(seed, n=40):
    rng = random.Random(seed)
    hyps = [[rng.choice(WORDS) for _ in range(rng.randint(1, 9))] for _ in range(n)]
    refs = [[[rng.choice(WORDS) for _ in range(rng.randint(2, 9))] for _ in range(rng.randint(1, 5))]
            for _ in range(n)]
    for i in range(0, n, 4):                       # some hypotheses copy a reference: high n-gram overlap
        hyps[i] = list(refs[i][0])
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_and_cider_d_equal_the_coco_caption_evaluation(seed):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    hyps, refs = _corpus(seed)
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    theirs, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert corpus_bleu(hyps, refs) == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    ours, per_image = cider_d(hyps, refs)
    theirs, their_images = Cider().compute_score(gts, res)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert np.allclose(per_image, their_images, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_4_equals_sacrebleu_without_tokenisation_or_smoothing(seed):
    import sacrebleu

    hyps, refs = _corpus(seed)
    hyps = [h if len(h) >= 4 else h + ["a"] * (4 - len(h)) for h in hyps]
    k = max(len(r) for r in refs)                  # sacrebleu wants k reference streams: pad with None
    streams = [[" ".join(rs[j]) if j < len(rs) else None for rs in refs] for j in range(k)]
    theirs = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], streams, tokenize="none", smooth_method="none",
                                   force=True)
    assert corpus_bleu(hyps, refs)[3] * 100 == pytest.approx(theirs.score, rel=1e-9)


def test_bleu_is_one_for_exact_copies_and_punishes_short_hypotheses():
    refs = [[["a", "bag", "left", "of", "a", "sandal"]], [["a", "coat", "above", "a", "dress"]]]
    assert corpus_bleu([r[0] for r in refs], refs) == pytest.approx([1.0] * 4)
    short = corpus_bleu([["a", "bag", "left", "of"], ["a", "coat", "above"]], refs)
    assert short[0] == pytest.approx(np.exp(1 - 11 / 7))          # precision 1, brevity penalty exp(1 - r/c)


def test_retrieval_ranks_count_ties_against_the_true_item():
    scores = np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [0.0, 5.0, 4.0]])
    ranks = retrieval_ranks(scores, np.array([0, 1, 2]))
    assert ranks.tolist() == [1, 3, 2]
    assert recall_at(ranks, (1, 2)) == {"r@1": pytest.approx(1 / 3), "r@2": pytest.approx(2 / 3), "median_rank": 2.0}


def test_retrieval_counts_an_identical_sentence_as_correct_and_chance_matches_a_simulation():
    from cnnctl.metrics.captions import same_rows
    from cnnctl.tasks.caption import chance_recall

    tokens = np.array([[1, 4, 5, 2], [1, 4, 5, 2], [1, 6, 5, 2]])          # sentences 0 and 1 are the same
    correct = same_rows(tokens)
    assert correct.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    scores = np.array([[1.0, 3.0, 2.0],     # image 0: its twin's sentence first -> rank 1 (index truth: 3)
                       [2.0, 0.0, 2.0],     # image 1: twin ties with the wrong one -> rank 2
                       [5.0, 5.0, 4.0]])
    assert retrieval_ranks(scores, correct).tolist() == [1, 2, 3]
    assert retrieval_ranks(scores, np.arange(3)).tolist() == [3, 3, 3]
    # chance: random scores over 60 items in which each query has 1, 3 or 6 right answers
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(23), [1] * 12 + [3] * 6 + [6] * 5)                  # 60 items
    correct = ids[:, None] == ids[None, :]
    ranks = np.concatenate([retrieval_ranks(rng.random((60, 60)), correct) for _ in range(400)])
    simulated = recall_at(ranks)
    expected = chance_recall(correct)
    for k in (1, 5, 10):
        assert expected[f"chance_r@{k}"] == pytest.approx(simulated[f"r@{k}"], abs=0.01)
    assert chance_recall(np.eye(1000, dtype=bool))["chance_median_rank"] == 500


class MarkovStepper:
    """A fixed bigram language model with the decoder's interface (the thing under test is beam_search)."""

    num_states, bias_width = 1, 1

    def __init__(self, vocab=6, seed=0):
        rng = np.random.default_rng(seed)
        self.table = np.log(rng.dirichlet(np.full(vocab, 0.7), size=(2, vocab)))   # (image kind, previous word)
        self.table[:, :, 0] = -np.inf          # never <pad>
        self.table[:, :, 1] = -np.inf          # never <start>

    def start(self, features):
        kind = np.asarray(features)[:, 0, 0].astype(np.int64)
        return [kind.astype(np.float32)[:, None]], np.zeros((len(kind), 1), np.float32)

    def step(self, tokens, state, bias):
        kind = state[0][:, 0].astype(np.int64)
        return self.table[kind, np.asarray(tokens)], state, bias


def _brute_force_best(table, max_words, first_word=3, allowed=lambda words: True):
    """The most probable caption of at least one word among those ``allowed`` accepts."""
    best, best_seq = -np.inf, None
    vocab = table.shape[0]
    for n in range(1, max_words + 1):                      # at least one word
        for words in itertools.product(range(first_word, vocab), repeat=n):
            if not allowed(words):
                continue
            seq, prev, lp = [*words, 2], 1, 0.0
            for w in seq:
                lp, prev = lp + table[prev, w], w
            if lp > best:
                best, best_seq = lp, list(words)
    return best_seq, best


@pytest.mark.parametrize("seed,allow_unk", [(0, False), (1, False), (2, True), (3, True)])
def test_a_wide_beam_finds_the_most_probable_caption_and_greedy_is_never_better(seed, allow_unk):
    """<unk> (id 3) is a word only with allow_unk; without it the best caption avoids it."""
    from cnnctl.tasks.caption import beam_search

    stepper = MarkovStepper(vocab=7, seed=seed)
    stepper.table[:, :, 3] += 3.0                  # <unk> likely: banning it must change the answer
    stepper.table[:, 1, 2] += 4.0                  # an empty caption likely: it is never the answer
    features = np.array([[[0.0]], [[1.0]]], np.float32)
    max_words = 4
    first = 3 if allow_unk else 4
    wide = beam_search(stepper, features, beam=80, max_words=max_words, allow_unk=allow_unk)
    greedy = beam_search(stepper, features, beam=1, max_words=max_words, allow_unk=allow_unk)
    beam3 = beam_search(stepper, features, beam=3, max_words=max_words, allow_unk=allow_unk)
    for kind in (0, 1):
        seq, lp = _brute_force_best(stepper.table[kind], max_words, first)
        assert wide[kind][0] == seq and wide[kind][1] == pytest.approx(lp)
        assert (3 in seq) == allow_unk
        assert greedy[kind][1] <= beam3[kind][1] + 1e-12 <= lp + 1e-12
        # greedy follows the argmax chain
        prev, words = 1, []
        for _ in range(max_words + 1):
            allowed = (np.arange(7) >= first) | ((np.arange(7) == 2) & (len(words) > 0))
            row = np.where(allowed, stepper.table[kind, prev], -np.inf)
            prev = int(np.argmax(row if len(words) < max_words else np.where(np.arange(7) == 2, row, -np.inf)))
            if prev == 2:
                break
            words.append(prev)
        assert greedy[kind][0] == words


def _fluent(max_words, no_end_after):
    """caption.fluent's rules as a filter for ``_brute_force_best``."""
    return lambda words: (all(a != b for a, b in itertools.pairwise(words))
                          and (len(words) == max_words or words[-1] not in no_end_after))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fluent_decoding_finds_the_best_caption_that_neither_stutters_nor_stops_on_a_linking_word(seed):
    """caption.fluent: a wide beam finds the brute-force best caption under both rules (the end rule
    yields when max_words forces the end); the unruled best breaks them, so the rules change the answer."""
    from cnnctl.tasks.caption import beam_search

    stepper = MarkovStepper(vocab=7, seed=seed)
    for w in range(4, 7):
        stepper.table[:, w, w] += 3.0              # stuttering likely
    stepper.table[:, 4, 2] += 4.0                  # stopping right after word 4 likely
    features = np.array([[[0.0]], [[1.0]]], np.float32)
    max_words = 4
    free = beam_search(stepper, features, beam=80, max_words=max_words)
    wide = beam_search(stepper, features, beam=80, max_words=max_words, fluent=[4])
    greedy = beam_search(stepper, features, beam=1, max_words=max_words, fluent=[4])
    broken = 0
    for kind in (0, 1):
        seq, lp = _brute_force_best(stepper.table[kind], max_words, 4, _fluent(max_words, {4}))
        assert wide[kind][0] == seq and wide[kind][1] == pytest.approx(lp)
        for words, _ in (wide[kind], greedy[kind]):
            assert all(a != b for a, b in itertools.pairwise(words))
            assert len(words) == max_words or words[-1] != 4
        words = free[kind][0]
        broken += any(a == b for a, b in itertools.pairwise(words)) or words[-1] == 4
    assert broken >= 1


@pytest.mark.parametrize(("name", "options"), [("show_and_tell", {}), ("mrnn", {}),
                                             ("show_and_tell", {"image_every_step": True})])
def test_the_word_by_word_decoder_computes_what_the_network_computes(name, options):
    """Teacher-forced logits of the whole network == the stepper's log-probabilities, step by step, with
    the bias threaded as beam search threads it (the mRNN's at the first step, ``image_every_step``'s at
    every step: a bias dropped after the first step, or kept, would break one of them)."""
    import keras

    from cnnctl import models
    from cnnctl.models.captioning import CaptionStepper

    keras.utils.set_random_seed(0)
    model = models.build(name, num_classes=11, input_shape=(4, 6), embed_dim=8, units=12, dropout=0.5, **options)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 4, 6)).astype(np.float32)
    tokens = np.concatenate([np.ones((3, 1), np.int32), rng.integers(3, 11, (3, 5)).astype(np.int32)], axis=1)
    logits = np.asarray(model([feats, tokens], training=False))                  # (3, 6, 11)
    want = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    stepper = CaptionStepper(model)
    state, bias = stepper.start(feats)
    assert np.asarray(bias).shape == (3, stepper.bias_width) == (3, 8 if name == "show_and_tell" else 12)
    for t in range(tokens.shape[1]):
        logp, state, bias = stepper.step(tokens[:, t], state, bias)
        np.testing.assert_allclose(np.asarray(logp), want[:, t], atol=2e-5)


def test_an_ensemble_steps_as_the_mean_of_its_members_probabilities():
    """Three different networks over one vocabulary (Show and Tell, Show and Tell with the image at every
    step, the mRNN), stepped together: each step's log-probabilities are the log of the mean of the
    three networks' teacher-forced softmax -- so every member's state and bias went back to that member
    (swapping two members' states, or dropping a member's bias after the first step, breaks it)."""
    import keras

    from cnnctl import models
    from cnnctl.models.captioning import CaptionStepper, EnsembleStepper

    keras.utils.set_random_seed(3)
    nets = [models.build(name, num_classes=11, input_shape=(4, 6), embed_dim=8, units=units, dropout=0.5, **options)
            for name, units, options in (("show_and_tell", 12, {}), ("show_and_tell", 10, {"image_every_step": True}),
                                         ("mrnn", 12, {}))]
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(3, 4, 6)).astype(np.float32)
    tokens = np.concatenate([np.ones((3, 1), np.int32), rng.integers(3, 11, (3, 5)).astype(np.int32)], axis=1)
    probs = [keras.ops.convert_to_numpy(keras.ops.softmax(net([feats, tokens], training=False))) for net in nets]
    want = np.log(np.mean(probs, axis=0))                                        # (3, 6, 11)
    ensemble = EnsembleStepper([CaptionStepper(net) for net in nets])
    assert ensemble.num_states == 2 + 2 + 1 and ensemble.bias_width == 8 + 8 + 12
    state, bias = ensemble.start(feats)
    for t in range(tokens.shape[1]):
        logp, state, bias = ensemble.step(tokens[:, t], state, bias)
        np.testing.assert_allclose(logp, want[:, t], atol=2e-5)


def test_a_wide_beam_over_an_ensemble_finds_the_caption_most_probable_under_the_mean():
    """Two bigram models that disagree: the ensemble's best caption is the brute-force best under the
    log of their mean bigram probabilities, which for some image is neither member's own best."""
    from cnnctl.models.captioning import EnsembleStepper
    from cnnctl.tasks.caption import beam_search

    members = [MarkovStepper(vocab=6, seed=s) for s in (2, 4)]
    features = np.array([[[0.0]], [[1.0]]], np.float32)
    found = beam_search(EnsembleStepper(members), features, beam=60, max_words=3)
    mean = np.logaddexp(*[m.table for m in members]) - np.log(2)
    differs = False
    for kind in (0, 1):
        seq, lp = _brute_force_best(mean[kind], 3, first_word=4)
        assert found[kind][0] == seq and found[kind][1] == pytest.approx(lp)
        differs |= all(_brute_force_best(m.table[kind], 3, first_word=4)[0] != seq for m in members)
    assert differs


def test_image_every_step_feeds_the_image_beside_every_word():
    """With ``image_every_step`` a later word's prediction depends on the image through the word's input
    as well as through the state; the paper's model sees it at t = -1 only."""
    import keras

    from cnnctl import models

    keras.utils.set_random_seed(2)
    tokens = np.array([[1, 4, 5, 6]], np.int32)
    feats = np.random.default_rng(2).normal(size=(1, 1, 5)).astype(np.float32)
    for every in (False, True):
        model = models.build("show_and_tell", num_classes=9, input_shape=(1, 5), embed_dim=4, units=6,
                             dropout=0.0, image_every_step=every)
        has_layer = any(layer.name == "image_every_step" for layer in model.layers)
        assert has_layer == every
        # no recurrence, no memory (recurrent kernel 0, forget gate shut: Keras orders the gates i, f, c, o),
        # so the state carries nothing from one step to the next and only an image fed beside the word
        # can still move the last step's prediction
        lstm = model.get_layer("lstm").cell
        lstm.recurrent_kernel.assign(np.zeros(lstm.recurrent_kernel.shape, np.float32))
        kernel, bias = lstm.kernel.numpy(), lstm.bias.numpy()
        kernel[:, 6:12], bias[6:12] = 0.0, -100.0
        lstm.kernel.assign(kernel)
        lstm.bias.assign(bias)
        a = np.asarray(model([feats, tokens]))
        b = np.asarray(model([-feats, tokens]))
        moved = not np.allclose(a[:, -1], b[:, -1], atol=1e-6)
        assert moved == every


def test_the_mrnn_sees_the_image_at_the_first_step_only():
    import keras

    from cnnctl import models

    keras.utils.set_random_seed(1)
    model = models.build("mrnn", num_classes=9, input_shape=(1, 5), embed_dim=4, units=6, dropout=0.0)
    tokens = np.array([[1, 4, 5, 6]], np.int32)
    a = np.asarray(model([np.zeros((1, 1, 5), np.float32), tokens]))
    b = np.asarray(model([np.ones((1, 1, 5), np.float32), tokens]))
    assert not np.allclose(a[:, 0], b[:, 0])          # the image changes the first step
    bias = model.get_layer("image_bias")
    x = keras.ops.convert_to_numpy(bias(np.ones((1, 5), np.float32)))
    assert x.shape == (1, 6)                          # b_v lives in the hidden space (W_hi CNN(I))


def test_cell_regions_are_the_network_on_each_centre_cropped_cell():
    """caption.regions = "cells": each 32x32 cell of a 64x64 scene, centre-cropped to 28x28, through the
    whole network up to its classifier's input -- the same numbers as cropping by hand."""
    import keras

    from cnnctl.data.captions import grid_scenes
    from cnnctl.models.encoders import EncoderSpec, encode
    from cnnctl.weights import load_pretrained

    images = grid_scenes((3, 0, 0), 0).splits["train"].images                  # (3, 64, 64, 1)
    spec = EncoderSpec("fashion_cnn:fashion_mnist", 64, 2, "cells")
    features, bad = encode(spec.build(), spec, images)
    net = load_pretrained("fashion_cnn", "fashion_mnist")
    penultimate = keras.Model(net.inputs[0], net.get_layer("logits").input)
    for img, got in zip(images, features):
        crops = [img[r * 32 + 2:r * 32 + 30, c * 32 + 2:c * 32 + 30] for r in (0, 1) for c in (0, 1)]
        want = np.asarray(penultimate(np.stack(crops).astype("float32")))
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert bad == [] and features.shape == (3, 4, 256)

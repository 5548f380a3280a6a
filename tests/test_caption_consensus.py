"""Consensus re-ranking of the beam (caption.consensus): which training images vote, how their captions
vote, how the log-probability weighs in, and the run files that carry the chooser to `cnnctl caption`."""

import numpy as np
import pytest

from cnnctl.errors import CnnctlError
from cnnctl.metrics.captions import CiderD, cider_d
from cnnctl.tasks.caption_consensus import Consensus

WORDS = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "hat", "b", "and", "w", "blue", "shoe", "green", "bag"]


def split(sentence):
    return sentence.split()


def ids(sentence):
    return [WORDS.index(w) for w in sentence.split()]


def decode(word_ids):
    return [WORDS[i] for i in word_ids]


def _chooser(k, weight=0.0):
    # four training images along four axes; image 1 is image 0's black-and-white twin
    features = np.eye(4, 8, dtype=np.float32)[:, None, :]              # (n, cells, dim)
    features[1, 0, 0] = 0.9
    captions = [[split("a red hat")], [split("a red hat b and w")], [split("blue shoe")],
                [split("green bag")]]
    return Consensus(features, captions, k, weight)


def test_the_candidate_the_nearest_images_captions_agree_with_wins_over_the_beams_order():
    query = np.eye(1, 8, dtype=np.float32) + 0.05                        # nearest: image 0, then its twin
    candidates = [[(ids("blue shoe"), -1.0), (ids("a red hat"), -3.0), (ids("green bag"), -4.0)]]
    assert decode(_chooser(k=2).choose(query, candidates, decode)[0][0]) == split("a red hat")
    assert _chooser(k=2).choose(query, candidates, decode)[0][1] == -3.0      # its own log-probability kept
    # a heavy weight on the log-probability per token gives the beam's own order back
    assert decode(_chooser(k=2, weight=100.0).choose(query, candidates, decode)[0][0]) == split("blue shoe")
    # a query by image 2 votes for its caption
    query2 = np.eye(1, 8, k=2, dtype=np.float32)
    assert decode(_chooser(k=1).choose(query2, candidates, decode)[0][0]) == split("blue shoe")
    # nothing agrees with a candidate no neighbour shares a word with: ties keep the beam's order
    lone = [[(ids("green bag"), -2.0), (ids("b and w"), -2.5)]]
    assert decode(_chooser(k=1).choose(query2, lone, decode)[0][0]) == split("green bag")


def test_the_neighbours_are_the_k_highest_cosines_nearest_first():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 2, 16)).astype(np.float32)
    query = rng.normal(size=(70, 2, 16)).astype(np.float32)
    chooser = Consensus(train, [[["x"]]] * 300, k=7)

    def unit(x):
        x = x.reshape(len(x), -1).astype(np.float16).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = np.argsort(-(unit(query) @ unit(train).T), axis=1, kind="stable")[:, :7]
    got = chooser.neighbours(query, batch=32)                             # batches of 32: a split across batches
    assert got.shape == (70, 7)
    assert np.mean(got == brute) > 0.99           # float16 features: a rare near-tie may swap places


def test_the_agreement_is_cider_d_against_the_training_captions_document_frequencies():
    captions = [[split("a red hat")], [split("a red hat b and w")], [split("blue shoe")]]
    scorer = CiderD(captions)
    # one reference per image: the corpus score of one image is the pair score under those frequencies
    hyp, ref = split("a red hat"), split("a red hat b and w")
    assert CiderD([[ref]]).score(hyp, ref) == pytest.approx(cider_d([hyp], [[ref]])[0], abs=1e-12)
    chooser = Consensus(np.eye(3, 4, dtype=np.float32), captions, k=2)
    assert chooser.agreement(hyp, np.array([0, 1])) == pytest.approx(
        (scorer.score(hyp, captions[0][0]) + scorer.score(hyp, captions[1][0])) / 2, abs=1e-12)
    assert scorer.score(ref, ref) == pytest.approx(10.0)       # a sentence of 4+ words against itself: the maximum


def test_the_run_files_give_the_same_chooser_and_damaged_ones_a_message(tmp_path):
    chooser = _chooser(k=2, weight=0.5)
    chooser.save(tmp_path)
    again = Consensus.load(tmp_path)
    assert (again.k, again.weight, again.captions) == (2, 0.5, chooser.captions)
    query = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    candidates = [[(ids("blue shoe"), -1.0), (ids("a red hat"), -1.5), (ids("green bag"), -1.2)]] * 5
    assert again.choose(query, candidates, decode) == chooser.choose(query, candidates, decode)
    assert Consensus.load(tmp_path / "elsewhere") is None                 # a run without: the beam alone
    (tmp_path / "consensus.npz").write_bytes(b"not an npz file")
    with pytest.raises(CnnctlError, match="consensus files"):
        Consensus.load(tmp_path)

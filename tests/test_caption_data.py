"""Caption data: the four file formats users have, bad lines reported with file and line, the text rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnctl.data.captions import load_captions
from cnnctl.data.text import Vocab, token_rows, tokenize
from cnnctl.errors import CnnctlError

CAPTIONS = {  # image -> its captions, split
    "a.jpg": (["A brown hen.", "A hen on grass"], "train"),
    "b.jpg": (["A bunch of grapes!"], "train"),
    "c.jpg": (["Two red apples"], "val"),
    "d.jpg": (["A blue car", "A small car."], "test"),
}


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CAPTIONS):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / name)


def _as_dict(data):
    """{split: {file name: captions}} for comparing formats."""
    out = {}
    for split, sp in data.splits.items():
        if sp is not None:
            out[split] = {str(p).rsplit("/", 1)[-1]: caps for p, caps in zip(sp.images, sp.captions)}
    return out


EXPECTED = {s: {n: [c.strip() for c in caps] for n, (caps, sp) in CAPTIONS.items() if sp == s}
            for s in ("train", "val", "test")}


def write_flickr8k(root):
    _images(root / "Flicker8k_Dataset")
    text = root / "Flickr8k_text"
    text.mkdir()
    lines = [f"{n}#{i}\t{c}" for n, (caps, _) in CAPTIONS.items() for i, c in enumerate(caps)]
    (text / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split, word in (("train", "train"), ("val", "dev"), ("test", "test")):
        (text / f"Flickr_8k.{word}Images.txt").write_text(
            "".join(f"{n}\n" for n, (_, s) in CAPTIONS.items() if s == split))
    return root


def write_coco(root):
    for split in ("train", "val"):
        names = [n for n, (_, s) in CAPTIONS.items() if (s == "test") == (split == "val")]
        folder = root / f"{split}2014"
        _images(folder)
        for extra in set(CAPTIONS) - set(names):
            (folder / extra).unlink()
        images = [{"id": 100 + i, "file_name": n} for i, n in enumerate(names)]
        anns = [{"id": k, "image_id": 100 + i, "caption": c}
                for i, n in enumerate(names) for k, c in enumerate(CAPTIONS[n][0])]
        (root / f"captions_{split}2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root / "captions_train2014.json"


def write_karpathy(root):
    _images(root / "images")
    images = [{"filepath": "", "filename": n, "split": s,
               "sentences": [{"raw": c, "tokens": tokenize(c)} for c in caps]} for n, (caps, s) in CAPTIONS.items()]
    path = root / "dataset_flickr8k.json"
    path.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    return path


def write_csv(root):
    _images(root / "img")
    rows = ["image,caption,split"] + [f'img/{n},"{c}",{s}' for n, (caps, s) in CAPTIONS.items() for c in caps]
    path = root / "captions.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("writer", [write_flickr8k, write_coco, write_karpathy, write_csv])
def test_every_format_reads_the_same_captions_and_splits(writer, tmp_path):
    path = writer(tmp_path)
    data = load_captions(str(path))
    assert data.problems == []
    got = _as_dict(data)
    if writer is write_coco:  # COCO has train and val files only: val2014 is our test split
        assert got == {"train": {**EXPECTED["train"], **EXPECTED["val"]}, "test": EXPECTED["test"]}
    else:
        assert got == EXPECTED
    for sp in data.splits.values():
        for p in ([] if sp is None else sp.images):
            assert Image.open(p).size == (8, 8)   # the paths point at the real files


def test_bad_caption_lines_are_reported_with_file_and_line(tmp_path):
    root = write_flickr8k(tmp_path)
    token = root / "Flickr8k_text" / "Flickr8k.token.txt"
    lines = token.read_bytes().splitlines()
    lines[1] = b"a.jpg#1\t"                              # line 2: empty caption
    lines[2] = "b.jpg#0\tgrapes \u00e9".encode("latin-1")  # line 3: not UTF-8
    lines.append(b"zz.jpg#0\ta missing image")           # line 7: its image is missing
    token.write_bytes(b"\n".join(lines) + b"\n")
    (root / "Flickr8k_text" / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\nzz.jpg\nnone.jpg\n")
    data = load_captions(str(root))
    problems = {where: why for where, why in data.problems}
    assert "empty caption" in problems[f"{token}:2"]
    assert "not UTF-8" in problems[f"{token}:3"]
    train_list = root / "Flickr8k_text" / "Flickr_8k.trainImages.txt"
    assert "b.jpg has no caption" in problems[f"{train_list}:2"]    # its only caption line was not UTF-8
    assert "none.jpg has no caption" in problems[f"{train_list}:4"]
    assert "zz.jpg does not exist" in problems[f"{token}:7"]
    assert len(data.problems) == 5
    assert data.splits["train"].captions == [["A brown hen."]]     # what is left is still read


def test_csv_and_coco_problems_name_their_row_or_entry(tmp_path):
    path = write_csv(tmp_path)
    with open(path, "a") as f:
        f.write("img/missing.jpg,a caption,train\nimg/a.jpg,,train\nimg/a.jpg,a caption,holdout\n")
    data = load_captions(str(path))
    problems = dict(data.problems)
    assert "does not exist" in problems[f"{path}:8"]
    assert "empty caption" in problems[f"{path}:9"]
    assert "unknown split 'holdout'" in problems[f"{path}:10"]

    coco = write_coco(tmp_path / "coco")
    obj = json.loads(coco.read_text())
    obj["images"].append({"id": 7, "file_name": "a.jpg"})       # an image with no caption
    obj["annotations"].append({"id": 99, "image_id": 12345, "caption": "orphan"})
    coco.write_text(json.dumps(obj))
    problems = dict(load_captions(str(coco)).problems)
    assert "has no caption" in problems[f"{coco}: images[{len(obj['images']) - 1}]"]
    assert "12345" in problems[f"{coco}: annotations[{len(obj['annotations']) - 1}]"]


def test_a_broken_json_file_is_one_message_with_its_line(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text('{"images": [\n{"filename": "a.jpg",\n')
    with pytest.raises(CnnctlError, match=r"dataset_coco.json:\d+ is not valid JSON"):
        load_captions(str(path))


def test_tokens_vocabulary_and_rows():
    assert tokenize("A T-shirt, left of a BAG.") == ["a", "tshirt", "left", "of", "a", "bag"]
    caps = [["a", "hen"]] * 5 + [["a", "cat"]] * 4 + [["the", "dog"]] * 5
    vocab = Vocab.build(caps, min_count=5)
    # specials first, then by falling count, ties alphabetical; "cat" (4 < 5) is <unk>
    assert vocab.words == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "hen", "the"]
    assert vocab.encode(["a", "cat"]) == [4, 3]
    rows, cut = token_rows(vocab, [["a", "hen"], ["the", "dog", "a", "hen"]], max_words=3)
    assert rows.tolist() == [[1, 4, 6, 2, 0], [1, 7, 5, 4, 2]] and cut == 1
    assert vocab.decode([4, 6, 2, 7]) == ["a", "hen"]                 # stops at <end>
    assert Vocab.from_json(json.loads(json.dumps(vocab.to_json()))).words == vocab.words


def test_the_vocabulary_keeps_the_words_that_almost_never_end_a_caption():
    """rarely_last: seen >= 20 times in training captions and ending < 1% of them. "in" (40 times, never
    last) is one; "dog" (40 times, last in 30) is not; "of" (never last, but only 19 times) is too rare
    to judge; "tree" (100 times, last once: exactly 1%) is not."""
    caps = ([["a", "dog", "in", "a", "box"]] * 10 + [["the", "dog"]] * 30 + [["one", "of", "us"]] * 19
            + [["tree", "in", "a", "pot"]] * 30 + [["tree", "house"]] * 69 + [["tree"]])
    vocab = Vocab.build(caps, min_count=1)
    assert vocab.rarely_last == ["a", "in", "the"]       # "a" (70 times) and "the" (30), never last, too
    again = Vocab.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again.rarely_last == vocab.rarely_last
    assert Vocab.from_json({"words": vocab.words}).rarely_last == []            # a vocab.json from before
    assert Vocab.build(caps, min_count=50).rarely_last == ["a"]          # "in" (40), "the" (30) became <unk>


def test_openclipart_titles_and_the_caption_disjoint_split(tmp_path):
    from cnnctl.data.clipart import split_of, title_of

    def svg(name, title, creator="Jane Doe"):
        path = tmp_path / name
        path.write_text(f'<svg><metadata><rdf:RDF><cc:Work rdf:about=""><dc:format>image/svg+xml</dc:format>'
                        f'<dc:title>{title}</dc:title><dc:creator><cc:Agent><dc:title>{creator}</dc:title>'
                        f'</cc:Agent></dc:creator></cc:Work></rdf:RDF></metadata></svg>')
        return path

    assert title_of(svg("a.svg", "  Chocolate Soft Serve\n Ice Cream Cone ")) == "Chocolate Soft Serve Ice Cream Cone"
    assert title_of(svg("b.svg", "image01.svg")) is None and title_of(svg("c.svg", "untitled")) is None
    assert title_of(svg("d.svg", "")) is None           # never the creator's name instead
    # the same words (any case / punctuation) always land in the same split; all three splits occur
    assert split_of("A red apple.") == split_of("a red apple")
    splits = [split_of(f"drawing of thing {i}") for i in range(400)]
    assert {"train", "val", "test"} == set(splits) and 0.7 < splits.count("train") / 400 < 0.9


def test_the_bundled_fashion_cnn_weights_score_what_their_notice_says():
    import keras

    from cnnctl.data.sources import fashion_mnist
    from cnnctl.weights import load_pretrained

    model = load_pretrained("fashion_cnn", "fashion_mnist")
    test = fashion_mnist("")["test"]
    logits = model.predict(test.images.astype("float32"), batch_size=1000, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, 1) == test.labels))
    assert accuracy == pytest.approx(0.9138, abs=5e-5)                     # NOTICE: 91.38%
    assert isinstance(model, keras.Model)


def test_openclipart_titles_are_cleaned_of_what_is_not_a_description():
    from cnnctl.data.clipart import clean_title

    assert clean_title("Clipart by Nicu Buculei - jigsaw_red_10") == "jigsaw red"
    assert clean_title("BlueMan#306") == "Blue Man"
    assert clean_title("Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)") is None
    assert clean_title("Lemon SVG theme") is None and clean_title("image01.svg") is None
    assert clean_title("Chocolate Soft Serve Ice Cream Cone") == "Chocolate Soft Serve Ice Cream Cone"
    assert clean_title("arrow-right-yellow") == "arrow right yellow"
    assert clean_title("Baden-W&amp;uuml;rttemberg") == "Baden Württemberg"            # HTML entities, twice


def test_only_titles_whose_every_word_is_english_are_kept(tmp_path):
    from cnnctl.data.clipart import english_words, is_english

    (tmp_path / "words").write_text("bird\nWhite\nblack\nand\nDog's\n")
    words = english_words(tmp_path / "words")
    assert words == {"bird", "white", "black", "and", "dog"}
    assert is_english("Black and white bird", words) and is_english("Dog 2", words)
    assert not is_english("Uccello bianco e nero", words) and not is_english("black bird ralfarkinberlinde", words)
    from cnnctl.errors import CnnctlError

    with pytest.raises(CnnctlError, match="wamerican"):
        english_words(tmp_path / "missing")


def _tux_stamps(root):
    """A small Tux Paint stamp tree: a photo cut-out, a flat drawing, a picture with no sentence."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "animals").mkdir(parents=True)
    photo = np.zeros((60, 80, 4), np.uint8)
    photo[10:50, 10:70, :3] = rng.integers(0, 256, (40, 60, 3))           # thousands of colours
    photo[10:50, 10:70, 3] = 255                                            # transparent border
    Image.fromarray(photo, "RGBA").save(root / "animals" / "hen.png")
    (root / "animals" / "hen.txt").write_text("A brown hen.\nfr.utf8=Une poule brune.\n", encoding="utf-8")
    flat = np.zeros((40, 40, 4), np.uint8)
    flat[5:35, 5:35] = (200, 30, 30, 255)
    Image.fromarray(flat, "RGBA").save(root / "animals" / "ball.png")
    (root / "animals" / "ball.txt").write_text("\nes.utf8=Una pelota.\nA red ball.\n", encoding="utf-8")
    Image.fromarray(flat, "RGBA").save(root / "animals" / "nosentence.png")
    backgrounds = []
    for i in range(2):
        backgrounds.append(root / f"bg{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(backgrounds[-1])
    return backgrounds


def test_tuxpaint_stamps_become_plain_and_photo_captioned_images(tmp_path):
    from PIL import Image

    from cnnctl.data.captions import load_captions
    from cnnctl.data.clipart import split_of
    from cnnctl.data.tuxpaint import build_tuxpaint

    src = tmp_path / "stamps"
    backgrounds = _tux_stamps(src)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "openclipart.csv").write_text("image,caption,split\nimages/x.png,A kite,train\n")
    csv_path = build_tuxpaint(tmp_path / "out", size=64, composites=3, seed=0, source=src,
                              backgrounds=backgrounds, log=lambda m: None)
    rows = (tmp_path / "out" / "tuxpaint.csv").read_text().splitlines()[1:]
    # the hen is a photo cut-out: plain + 3 photos; the ball is a drawing: plain only
    assert sorted(r.split(",")[1] for r in rows) == ["A brown hen."] * 4 + ["A red ball."]
    assert {r.split(",")[2] for r in rows if "hen" in r} == {split_of("A brown hen.")}
    union = csv_path.read_text().splitlines()
    assert union[1] == "images/x.png,A kite,train" and len(union) == 1 + 1 + 5
    composite = tmp_path / "out" / "tuxpaint" / "photo" / "animals__hen-0.png"
    first = composite.read_bytes()
    img = np.asarray(Image.open(composite))
    assert img.shape == (64, 64, 3) and len(np.unique(img.reshape(-1, 3), axis=0)) > 500   # photo behind
    plain = np.asarray(Image.open(tmp_path / "out" / "tuxpaint" / "plain" / "animals__ball.png"))
    assert (plain[0, 0] == 255).all() and tuple(plain[32, 32]) == (200, 30, 30)           # on white, centred
    # each composite is a function of (seed, stamp): rebuilt -> same bytes, another seed -> other image
    build_tuxpaint(tmp_path / "again", size=64, composites=3, seed=0, source=src, backgrounds=backgrounds,
                   log=lambda m: None)
    assert (tmp_path / "again" / "tuxpaint" / "photo" / "animals__hen-0.png").read_bytes() == first
    build_tuxpaint(tmp_path / "other", size=64, composites=3, seed=1, source=src, backgrounds=backgrounds,
                   log=lambda m: None)
    assert (tmp_path / "other" / "tuxpaint" / "photo" / "animals__hen-0.png").read_bytes() != first
    (tmp_path / "out" / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "out" / "images" / "x.png")
    data = load_captions(str(csv_path))
    assert not data.problems
    assert sum(len(s.images) for s in data.splits.values() if s is not None) == 6


def test_tuxpaint_composites_carry_exact_masks_for_segmentation(tmp_path):
    from PIL import Image

    from cnnctl.data.clipart import split_of
    from cnnctl.data.tuxpaint import build_tuxpaint

    src = tmp_path / "stamps"
    backgrounds = _tux_stamps(src)
    build_tuxpaint(tmp_path / "out", size=64, composites=3, seed=0, source=src, backgrounds=backgrounds,
                   log=lambda m: None, segmentation=True, detection=True)
    root = tmp_path / "out" / "tuxpaint-segment"
    from cnnctl.data.detection import load_detection

    boxes = load_detection(str(tmp_path / "out" / "tuxpaint-detect.csv"))
    assert boxes.class_names == ["animals"]
    assert (root / "classes.txt").read_text().split("\n")[:2] == ["background", "animals"]
    split = "test" if split_of("A brown hen.") == "test" else "train"
    for k in range(3):
        image = (root / split / "images" / f"animals__hen-{k}.png").read_bytes()
        # the segmentation image is the caption composite itself
        assert image == (tmp_path / "out" / "tuxpaint" / "photo" / f"animals__hen-{k}.png").read_bytes()
        mask = np.asarray(Image.open(root / split / "masks" / f"animals__hen-{k}.png"))
        assert set(np.unique(mask)) == {0, 1}                     # background and the stamp's folder
        # the hen's opaque part is a 60x40 rectangle: the mask is that rectangle, scaled, and nothing else
        ys, xs = np.nonzero(mask)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all() and mask.sum() == h * w
        assert abs(w / h - 1.5) < 0.15
        # the detection box of the same composite is the mask's tight box, in the caption split
        det = boxes.splits["test" if split == "test" else "train"]
        at = det.names.index(f"animals__hen-{k}")
        np.testing.assert_array_equal(det.boxes[at], [[ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]])
        assert det.classes[at].tolist() == [1]
    assert not (root / split / "images" / "animals__ball-0.png").exists()     # drawings make no composites


def test_family_split_keeps_sibling_titles_and_their_chains_in_one_split():
    from cnnctl.data.caption_families import families, family_split, split_of_family

    captions = ["International maritime signal flag golf", "international maritime signal flag tango",
                "A blue eye.", "a brown eye", "A brown hat", "hotel icon in room hair dryer",
                "hotel icon in room coffee and tea", "A red kite"]
    family = families(captions)
    # linked at Jaccard >= 0.5 of the content words: {international maritime signal flag} shared, 4 of 6
    assert family[captions[0]] == family[captions[1]] == "international maritime signal flag golf"
    # not linked: {hotel icon room} is 3 of 7 words; {blue eye} / {brown eye} / {brown hat}, 1 of 3
    assert family[captions[5]] != family[captions[6]]
    assert len({family[c] for c in captions[2:5]}) == 3
    assert family[captions[7]] == "a red kite"
    # a chain: a-b and b-c linked (2 of 3 words), a-c not (1 of 4), all three in one family
    chain = ["red wool coat", "red wool hat", "blue wool hat"]
    assert len(set(families(chain).values())) == 1
    splits = family_split(captions + chain)
    assert splits[0] == splits[1] == split_of_family(family[captions[0]])
    assert splits[-3] == splits[-2] == splits[-1]
    # the split is a function of the captions alone, and spreads families 80 / 10 / 10
    spread = [split_of_family(f"family {i}") for i in range(1000)]
    assert 0.07 < spread.count("test") / 1000 < 0.13 and 0.07 < spread.count("val") / 1000 < 0.13

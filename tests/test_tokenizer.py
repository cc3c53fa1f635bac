"""Our CLIP BPE tokenizer against ids computed by open_clip and transformers (fixture JSON)."""
import json
import os

import numpy as np
import pytest

from ldm.errors import UserError
from ldm.models.tokenizer import CLIPTokenizer

EOT = 49407


@pytest.fixture(scope="module")
def reference():
    path = os.path.join(os.path.dirname(__file__), "fixtures", "text", "tokenizer_ids.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["rows"]


@pytest.fixture(scope="module")
def sd1():
    return CLIPTokenizer(pad_token="eot")


@pytest.fixture(scope="module")
def sd2():
    return CLIPTokenizer(pad_token=0)


def _until_eot(ids):
    ids = list(ids)
    return ids[: ids.index(EOT) + 1]


def test_enough_tricky_prompts(reference):
    assert len(reference) >= 30


def _plain(reference):
    """open_clip 3.x renamed its special tokens, so a literal "<|endoftext|>" in a prompt is plain
    text there, while the original CLIP tokenizer and transformers (and we) read it as EOT."""
    return [r for r in reference if "<|" not in r["text"]]


def test_sd2_ids_equal_open_clip(reference, sd2):
    rows = _plain(reference)
    assert len(rows) >= 30
    ours = sd2([r["text"] for r in rows])
    for row, got in zip(rows, ours):
        assert got.tolist() == row["open_clip"], row["text"]


def test_sd1_ids_equal_open_clip_padded_with_eot(reference, sd1):
    rows = _plain(reference)
    ours = sd1([r["text"] for r in rows])
    for row, got in zip(rows, ours):
        want = _until_eot(row["open_clip"])
        assert got.tolist() == want + [EOT] * (77 - len(want)), row["text"]


def test_sd1_ids_equal_transformers_where_cleaning_agrees(reference, sd1):
    """transformers' fast CLIPTokenizer skips ftfy and HTML unescaping (open_clip and the original
    CLIP do both); on every prompt without mojibake/entities the ids must be identical."""
    same = [r for r in reference if _until_eot(r["open_clip"]) == _until_eot(r["transformers"])]
    assert len(same) >= 30
    ours = sd1([r["text"] for r in same])
    for row, got in zip(same, ours):
        assert got.tolist() == row["transformers"], row["text"]


def test_literal_special_token_is_eot_as_in_transformers(reference, sd1):
    row = next(r for r in reference if "<|endoftext|>" in r["text"])
    assert sd1([row["text"]])[0].tolist() == row["transformers"]


def test_truncation_keeps_eot_last(sd1, sd2):
    long = "word " * 200
    for tok in (sd1, sd2):
        ids = tok([long])[0]
        assert ids.shape == (77,) and ids.dtype == np.int32
        assert ids[0] == 49406 and ids[-1] == EOT and EOT not in ids[1:-1]


def test_empty_prompt_and_padding(sd1, sd2):
    assert sd1([""])[0].tolist() == [49406] + [EOT] * 76
    assert sd2([""])[0].tolist() == [49406, EOT] + [0] * 75


def test_decode_round_trip(sd1):
    text = "a photo of an astronaut riding a horse, 4k"
    assert sd1.decode(sd1.encode(text)) == "a photo of an astronaut riding a horse , 4 k"


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!", 0, "eot"])
def test_pad_token_spellings(pad):
    tok = CLIPTokenizer(pad_token=pad)
    assert tok.pad_id == (EOT if pad in ("eot", "<|endoftext|>") else 0)


def test_bad_pad_token():
    with pytest.raises(UserError):
        CLIPTokenizer(pad_token="zero")

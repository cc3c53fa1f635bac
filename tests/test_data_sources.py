"""Data-folder readers (MindONE CSV, HF metadata.jsonl, kohya captions and repeat folders) and kohya
caption processing. Pure Python: no image is decoded, no MindSpore call is made."""
import json
import logging
import os

import numpy as np
import pytest

from ldm.data.captions import CaptionOptions, process_caption
from ldm.data.sources import SourceOptions, read_source, read_sources, read_text_file
from ldm.errors import UserError


def _tree(root, files):
    """Create ``{relative path: text or bytes}`` under ``root`` (images are placeholder bytes: only
    names matter to the readers)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return str(root)


def _rel(listing, root):
    return [(os.path.relpath(r.path, root), r.text) for r in listing.records]


def _jsonl(*objs):
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n"


IMG = b"not decoded here"


# ---------------------------------------------------------------- reader choice

CHOICE_CASES = {
    "csv": ({"img_txt.csv": "dir,text\na.png,\"x, y\"\nmissing.png,z\n", "a.png": IMG, "a.txt": "ignored"},
            "csv", [("a.png", "x, y"), ("missing.png", "z")]),
    "csv beats jsonl": ({"img_txt.csv": "dir,text\na.png,csv\n", "metadata.jsonl": _jsonl(
        {"file_name": "a.png", "text": "jsonl"}), "a.png": IMG}, "csv", [("a.png", "csv")]),
    "jsonl beats captions and repeats": ({"metadata.jsonl": _jsonl({"file_name": "sub/b.png", "text": "j"}),
                                          "a.png": IMG, "a.txt": "cap", "3_x/c.png": IMG},
                                         "jsonl", [("sub/b.png", "j")]),
    "captions": ({"b.png": IMG, "b.txt": "\n  first line  \nsecond\n", "a.jpg": IMG, "a.txt": "alpha"},
                 "captions", [("a.jpg", "alpha"), ("b.png", "first line")]),
    "repeats": ({"2_dog/a.png": IMG, "2_dog/a.txt": "a dog", "1_cat/b.png": IMG},
                "repeats", [("1_cat/b.png", "cat"), ("2_dog/a.png", "a dog"), ("2_dog/a.png", "a dog")]),
    "repeat folders next to images are captions": (  # ... and their names are no default caption
        {"top.png": IMG, "2_dog/a.png": IMG, "2_dog/a.txt": "a dog", "2_dog/b.png": IMG},
        "captions", [("2_dog/a.png", "a dog"), ("2_dog/b.png", ""), ("top.png", "")]),
    "recursive, case-insensitive, hidden skipped, sorted": (
        {"z/deep/q.PNG": IMG, "z/deep/q.txt": "q", "b.JpG": IMG, "a.tiff": IMG, ".hidden/h.png": IMG,
         ".h.png": IMG, "z/.git/x.png": IMG, "notes.md": "no", "orphan.txt": "no image"},
        "captions", [("a.tiff", ""), ("b.JpG", ""), ("z/deep/q.PNG", "q")]),
}


@pytest.mark.parametrize("name", CHOICE_CASES)
def test_reader_choice_and_records(tmp_path, name):
    files, kind, expected = CHOICE_CASES[name]
    root = _tree(tmp_path, files)
    listing = read_source(root)
    assert listing.kind == kind
    assert _rel(listing, root) == expected


def test_captions_counts_and_caption_extension(tmp_path):
    root = _tree(tmp_path, {"a.png": IMG, "a.caption": "cap a", "a.txt": "txt a", "b.png": IMG,
                            "c.webp": IMG, "c.caption": "cap c"})
    listing = read_source(root)
    assert _rel(listing, root) == [("a.png", "txt a"), ("b.png", ""), ("c.webp", "")]
    assert (listing.missing_captions, listing.scanned) == (2, 3)
    for ext in (".caption", "caption"):
        listing = read_source(root, SourceOptions(caption_extension=ext))
        assert _rel(listing, root) == [("a.png", "cap a"), ("b.png", ""), ("c.webp", "cap c")]
        assert listing.missing_captions == 1


def test_require_captions_names_the_image_and_the_caption_file(tmp_path):
    root = _tree(tmp_path, {"a.png": IMG, "a.txt": "x", "b.png": IMG})
    with pytest.raises(UserError, match=r"b\.png has no caption file \(expected .*b\.txt\)"):
        read_source(root, SourceOptions(require_captions=True))


def test_caption_file_not_utf8_names_line_and_byte(tmp_path):
    root = _tree(tmp_path, {"a.png": IMG, "a.txt": b"line one\nline two\nbad \xff here\n"})
    with pytest.raises(UserError, match=r"a\.txt line 3 is not UTF-8 text \(byte 0xff\): save it as UTF-8"):
        read_source(root)


def test_bom_is_fine_and_missing_file_is_one_error(tmp_path):
    root = _tree(tmp_path, {"a.png": IMG, "a.txt": "caf\u00e9".encode("utf-8-sig")})
    assert read_source(root).records[0].text == "caf\u00e9"
    assert read_text_file(str(tmp_path / "a.txt")) == "caf\u00e9"
    with pytest.raises(UserError, match="cannot read caption file .*nope.txt") as info:
        read_text_file(str(tmp_path / "nope.txt"))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- metadata.jsonl

def test_jsonl_columns(tmp_path):
    lines = _jsonl({"file_name": "a.png", "text": "t", "caption": "c"}, "",
                   {"file_name": "d/b.png", "text": None, "caption": "only caption", "tags": "x"})
    root = _tree(tmp_path, {"metadata.jsonl": lines})
    assert _rel(read_source(root), root) == [("a.png", "t"), ("d/b.png", "only caption")]
    assert _rel(read_source(root, SourceOptions(caption_column="caption")), root) == [
        ("a.png", "c"), ("d/b.png", "only caption")]


JSONL_ERRORS = {
    "bad json": ('{"file_name": "a.png", "text": }', "line 2: not valid JSON"),
    "not an object": ('["a.png", "x"]', "line 2: a JSON list, expected an object"),
    "no file_name": ({"name": "a.png", "text": "x"}, 'line 2: no "file_name" key \\(it has: name, text\\)'),
    "file_name not a string": ({"file_name": 3, "text": "x"}, 'line 2: "file_name" must be a non-empty string'),
    "absolute": ({"file_name": "/etc/a.png", "text": "x"}, "line 2: \"file_name\" '/etc/a.png' is absolute"),
    "escapes": ({"file_name": "a/../../b.png", "text": "x"}, 'line 2: .* leads out of .* with ".."'),
    "no caption": ({"file_name": "a.png", "tags": "x"},
                   'line 2: no caption under "text" or "caption" \\(it has: file_name, tags\\)'),
    "null caption": ({"file_name": "a.png", "text": None}, 'line 2: no caption under "text" or "caption"'),
    "caption not a string": ({"file_name": "a.png", "text": ["x"]}, 'line 2: caption "text" is a JSON list'),
}


@pytest.mark.parametrize("name", JSONL_ERRORS)
def test_jsonl_errors_name_the_line(tmp_path, name):
    bad, pattern = JSONL_ERRORS[name]
    root = _tree(tmp_path, {"metadata.jsonl": _jsonl({"file_name": "ok.png", "text": "ok"}, bad)})
    with pytest.raises(UserError, match="metadata.jsonl " + pattern) as info:
        read_source(root)
    assert "\n" not in str(info.value)


def test_jsonl_custom_column_missing_and_empty_file(tmp_path):
    root = _tree(tmp_path / "a", {"metadata.jsonl": _jsonl({"file_name": "a.png", "text": "x"})})
    with pytest.raises(UserError, match='line 1: no caption under "prompt" .*set caption_column'):
        read_source(root, SourceOptions(caption_column="prompt"))
    root = _tree(tmp_path / "b", {"metadata.jsonl": "\n  \n", "a.png": IMG})
    with pytest.raises(UserError, match="metadata.jsonl holds no records"):
        read_source(root)


# ---------------------------------------------------------------- repeat folders

def test_repeats_expand_and_detail(tmp_path, caplog):
    root = _tree(tmp_path, {"3_dog/a.png": IMG, "3_dog/b.png": IMG, "3_dog/a.txt": "a dog",
                            "1_csv/img_txt.csv": "dir,text\nc.png,from csv\n",
                            "2_nested/5_inner/d.png": IMG, "extra/e.png": IMG, "misc/f.png": IMG})
    with caplog.at_level(logging.WARNING, logger="ldm.data"):
        listing = read_source(root)
    assert listing.kind == "repeats"
    # uncaptioned images take their repeat folder's name; a nested N_name folder is a plain sub-folder
    expected = ([("1_csv/c.png", "from csv")] + [("2_nested/5_inner/d.png", "nested")] * 2
                + [("3_dog/a.png", "a dog"), ("3_dog/b.png", "dog")] * 3)
    assert _rel(listing, root) == expected
    assert [(os.path.basename(s), n, k) for s, n, k in listing.details] == [
        ("1_csv", 1, 1), ("2_nested", 2, 1), ("3_dog", 3, 2)]
    assert listing.missing_captions == 0 and listing.scanned == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignored 2 sub-folder(s)" in warnings[0] and "extra, misc" in warnings[0]


@pytest.mark.parametrize("bad", ["0_dog", "-1_dog"])
def test_repeat_count_below_one_is_an_error(tmp_path, bad):
    root = _tree(tmp_path, {"2_ok/a.png": IMG, f"{bad}/b.png": IMG})
    with pytest.raises(UserError, match=f"repeat folder .*{bad}: the count before '_' must be a whole "
                                        f"number >= 1"):
        read_source(root)


def test_several_data_paths_mix_in_order_with_one_warning(tmp_path, caplog):
    a = _tree(tmp_path / "a", {"2_x/o.png": IMG, "2_x/p.png": IMG, "2_x/p.txt": "p"})
    b = _tree(tmp_path / "b", {"q.png": IMG, "q.txt": "q", "r.png": IMG, "sub/t.png": IMG})
    c = _tree(tmp_path / "c", {"img_txt.csv": "dir,text\ns.png,s\n"})
    with caplog.at_level(logging.WARNING, logger="ldm.data"):
        listing = read_sources([a, b, c])
    assert listing.kind == "mixed"
    assert [(os.path.relpath(r.path, tmp_path), r.text) for r in listing.records] == [
        ("a/2_x/o.png", "x"), ("a/2_x/p.png", "p")] * 2 + [
        ("b/q.png", "q"), ("b/r.png", ""), ("b/sub/t.png", ""), ("c/s.png", "s")]
    # counted over distinct scanned images (repeats not expanded); folder-name captions are not missing
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["2 of 5 images have no .txt caption file: trained with an empty caption "
                        "(set require_captions to refuse)"]
    assert read_sources([b, b]).kind == "captions"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ldm.data"):
        read_sources(a)
    assert not caplog.records


def test_empty_folder_and_not_a_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "a.txt").write_text("caption without image")
    with pytest.raises(UserError, match=r"no images in .*empty \(looked for .jpg, .*\.tiff, img_txt.csv, "
                                        r"metadata.jsonl, N_name repeat folders\)"):
        read_source(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="is not a folder"):
        read_source(str(tmp_path / "empty" / "a.txt"))
    with pytest.raises(UserError, match="does not exist"):
        read_source(str(tmp_path / "nowhere"))


def test_symlinked_folders_are_not_followed(tmp_path):
    root = _tree(tmp_path / "d", {"a.png": IMG, "a.txt": "a"})
    _tree(tmp_path / "elsewhere", {"b.png": IMG, "b.txt": "b"})
    os.symlink(tmp_path / "elsewhere", tmp_path / "d" / "link")
    assert _rel(read_source(root), root) == [("a.png", "a")]


# ---------------------------------------------------------------- images without a caption file

_NO_CAPTIONS = (r"no captions in .*{folder}: {n} image\(s\) but no img_txt\.csv, metadata\.jsonl or "
                r"<name>\{ext} caption files \(write captions, set caption_extension, or name the folder "
                r"N_caption as a kohya repeat folder\)$")

MISSING_CAPTION_CASES = {
    # name: (files, SourceOptions kwargs, records | UserError pattern, missing_captions)
    "repeat folder name is the caption": (
        {"3_sks dog/a.png": IMG, "3_sks dog/b.jpg": IMG}, {},
        [("3_sks dog/a.png", "sks dog"), ("3_sks dog/b.jpg", "sks dog")] * 3, 0),
    "underscores after the count stay in the name": (
        {"1_my_style/a.png": IMG}, {}, [("1_my_style/a.png", "my_style")], 0),
    "caption file wins over the folder name": (
        {"2_sks dog/a.png": IMG, "2_sks dog/a.txt": "a photo of sks dog on grass", "2_sks dog/b.png": IMG}, {},
        [("2_sks dog/a.png", "a photo of sks dog on grass"), ("2_sks dog/b.png", "sks dog")] * 2, 0),
    "caption_extension applies in repeat folders": (
        {"1_dog/a.png": IMG, "1_dog/a.txt": "txt", "1_dog/a.caption": "cap", "1_dog/b.png": IMG,
         "1_dog/b.txt": "txt only"}, {"caption_extension": "caption"},
        [("1_dog/a.png", "cap"), ("1_dog/b.png", "dog")], 0),
    "require_captions accepts the folder name": (
        {"2_sks dog/a.png": IMG, "1_cat/b.png": IMG, "1_cat/b.txt": "a cat"}, {"require_captions": True},
        [("1_cat/b.png", "a cat")] + [("2_sks dog/a.png", "sks dog")] * 2, 0),
    "no caption file at all is refused": (
        {"b.png": IMG, "a.png": IMG, "sub/c.webp": IMG, "notes.txt": "no image"}, {},
        _NO_CAPTIONS.format(folder=r"[/\\]data", n=3, ext=".txt"), None),
    "wrong caption_extension finds none": (
        {"a.png": IMG, "a.txt": "x"}, {"caption_extension": ".caption"},
        _NO_CAPTIONS.format(folder=r"[/\\]data", n=1, ext=".caption"), None),
    "no caption file and require_captions names the first image": (
        {"b.png": IMG, "a.png": IMG, "c.png": IMG}, {"require_captions": True},
        r"[/\\]a\.png has no caption file \(expected .*[/\\]a\.txt\): write one, or unset require_captions", None),
    "nested folders, only some captioned, is a warning": (
        {"x/a.png": IMG, "x/a.txt": "a", "y/b.png": IMG, "y/z/c.png": IMG}, {},
        [("x/a.png", "a"), ("y/b.png", ""), ("y/z/c.png", "")], 2),
    "repeat-named folder in the caption layout gives no caption": (
        {"top.png": IMG, "top.txt": "t", "2_dog/a.png": IMG}, {},
        [("2_dog/a.png", ""), ("top.png", "t")], 1),
}


@pytest.mark.parametrize("name", MISSING_CAPTION_CASES)
def test_missing_caption_rules(tmp_path, caplog, name):
    files, kwargs, expected, missing = MISSING_CAPTION_CASES[name]
    root = _tree(tmp_path / "data", files)
    options = SourceOptions(**kwargs)
    with caplog.at_level(logging.WARNING, logger="ldm.data"):
        if isinstance(expected, str):
            with pytest.raises(UserError, match=expected) as info:
                read_sources([root], options)
            assert "\n" not in str(info.value)
            assert not caplog.records
            return
        listing = read_sources([root], options)
    assert _rel(listing, root) == expected
    scanned = len({path for path, _ in expected})
    assert (listing.missing_captions, listing.scanned) == (missing, scanned)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    ext = "." + kwargs.get("caption_extension", "txt").lstrip(".")
    assert warnings == ([f"{missing} of {scanned} images have no {ext} caption file: trained with an empty "
                         f"caption (set require_captions to refuse)"] if missing else [])


def test_uncaptioned_folder_among_several_is_refused_by_name(tmp_path):
    good = _tree(tmp_path / "good", {"a.png": IMG, "a.txt": "a"})
    bad = _tree(tmp_path / "bad", {"b.png": IMG, "c.png": IMG})
    with pytest.raises(UserError, match=_NO_CAPTIONS.format(folder="[/\\\\]bad", n=2, ext=".txt")):
        read_sources([good, bad])


# ---------------------------------------------------------------- caption processing

def _reference(text, opts, epoch, drop_draw, seed):
    """The kohya rule restated step by step with its own generator of the same seed."""
    if opts.caption_prefix:
        text = f"{opts.caption_prefix} {text}"
    if opts.caption_suffix:
        text = f"{text} {opts.caption_suffix}"
    n = opts.caption_dropout_every_n_epochs
    if drop_draw < opts.drop_text_prob or (n and (epoch + 1) % n == 0):
        return "", True
    text = text.splitlines()[0] if text else text
    if not (opts.shuffle_caption or opts.caption_tag_dropout_rate > 0):
        return text, False
    rng = np.random.default_rng(seed)
    parts = [p.strip() for p in text.strip().split(opts.caption_separator)]
    head, tail = parts[:opts.keep_tokens], parts[opts.keep_tokens:]
    if opts.shuffle_caption:
        tail = list(np.array(tail, dtype=object)[rng.permutation(len(tail))])
    if opts.caption_tag_dropout_rate > 0:
        draws = [rng.random() for _ in tail]
        tail = [t for t, d in zip(tail, draws) if d >= opts.caption_tag_dropout_rate]
    return ", ".join(head + tail), False


TAGS = "1girl, solo,red hair , blue eyes, smile, outdoors, sky, tree, hat, dress"


def test_process_caption_matches_the_reference_for_many_seeds():
    options = [CaptionOptions(shuffle_caption=True, keep_tokens=k, caption_tag_dropout_rate=r)
               for k in (0, 1, 3) for r in (0.0, 0.3)] + [CaptionOptions(caption_tag_dropout_rate=0.5)]
    words = [t.strip() for t in TAGS.split(",")]
    for opts in options:
        for seed in range(40):
            got, dropped = process_caption(TAGS, opts, 0, 0.5, np.random.default_rng(seed))
            assert (got, dropped) == _reference(TAGS, opts, 0, 0.5, seed)
            tags = got.split(", ")
            assert tags[:opts.keep_tokens] == words[:opts.keep_tokens]
            rest = tags[opts.keep_tokens:]
            assert len(set(rest)) == len(rest) and set(rest) <= set(words[opts.keep_tokens:])
            if opts.caption_tag_dropout_rate == 0:
                assert sorted(tags) == sorted(words)


def test_process_caption_is_deterministic_per_seed():
    opts = CaptionOptions(shuffle_caption=True, keep_tokens=1)
    runs = {seed: process_caption(TAGS, opts, 0, 0.9, np.random.default_rng(seed))[0] for seed in range(20)}
    assert all(process_caption(TAGS, opts, 0, 0.9, np.random.default_rng(s))[0] == t for s, t in runs.items())
    assert len(set(runs.values())) > 15


CAPTION_CASES = [
    # (text, options, epoch, drop_draw, expected)
    ("a, b", CaptionOptions(shuffle_caption=True, keep_tokens=5), 0, 0.5, ("a, b", False)),
    ("a;b ; c", CaptionOptions(caption_separator=";", caption_tag_dropout_rate=1e-9), 0, 0.5, ("a, b, c", False)),
    ("a, b, c, d", CaptionOptions(keep_tokens=2, caption_tag_dropout_rate=1.0), 0, 0.5, ("a, b", False)),
    ("a, b, c, d", CaptionOptions(caption_tag_dropout_rate=1.0), 0, 0.5, ("", False)),
    ("cat", CaptionOptions(caption_prefix="photo of", caption_suffix="best"), 0, 0.5, ("photo of cat best", False)),
    ("first\nsecond", CaptionOptions(caption_prefix="p"), 0, 0.5, ("p first", False)),
    ("first\nsecond", CaptionOptions(), 0, 0.5, ("first", False)),
    ("cat", CaptionOptions(drop_text_prob=0.3), 0, 0.29, ("", True)),
    ("cat", CaptionOptions(drop_text_prob=0.3), 0, 0.3, ("cat", False)),
    ("cat", CaptionOptions(), 0, 0.0, ("cat", False)),
]


@pytest.mark.parametrize("case", range(len(CAPTION_CASES)))
def test_process_caption_cases(case):
    text, opts, epoch, draw, expected = CAPTION_CASES[case]
    assert process_caption(text, opts, epoch, draw, np.random.default_rng(0)) == expected


def test_every_n_epochs_counts_epochs_from_zero():
    opts = CaptionOptions(caption_dropout_every_n_epochs=2)
    dropped = [e for e in range(6) if process_caption("cat", opts, e, 0.9, np.random.default_rng(0))[1]]
    assert dropped == [1, 3, 5]


def test_rng_only_used_by_shuffle_and_tag_dropout():
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    process_caption("a, b, c", CaptionOptions(caption_prefix="x", caption_dropout_every_n_epochs=3,
                                              drop_text_prob=0.5), 0, 0.1, rng)
    process_caption("a, b, c", CaptionOptions(caption_suffix="x"), 0, 0.9, rng)
    assert rng.bit_generator.state == state


def test_active():
    assert not CaptionOptions().active()
    assert not CaptionOptions(drop_text_prob=0.5, keep_tokens=2, caption_separator=";").active()
    for kw in (dict(shuffle_caption=True), dict(caption_tag_dropout_rate=0.1), dict(caption_prefix="p"),
               dict(caption_suffix="s"), dict(caption_dropout_every_n_epochs=2)):
        assert CaptionOptions(**kw).active()


def test_modules_do_not_import_mindspore():
    import subprocess
    import sys
    code = ("import sys; import ldm.data.sources, ldm.data.captions; "
            "sys.exit('mindspore' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0

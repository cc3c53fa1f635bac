"""Image-caption folders: CSV checks, skipped images, transforms, per-sample randomness, rank shards."""
import io
import logging

import numpy as np
import pytest
from PIL import Image

from ldm.data.dataset import (ImageCaptionDataset, load_image, make_batch, shard_indices,
                              steps_per_epoch)
from ldm.errors import UserError


def _folder(root, name, n, size=(40, 48), extra_rows=()):
    folder = root / name
    folder.mkdir()
    rows = ["dir,text"]
    rng = np.random.default_rng(len(name))
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
        rows.append(f'{i}.png,"caption {name} {i}, with a comma"')
    rows += list(extra_rows)
    (folder / "img_txt.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_csv_without_columns_is_an_error_naming_them(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "img_txt.csv").write_text("dir,caption\na.png,x\n")
    with pytest.raises(UserError, match="lacks column\\(s\\) text"):
        ImageCaptionDataset([str(folder)], 32)
    with pytest.raises(UserError, match="no images in .*img_txt.csv, metadata.jsonl"):
        ImageCaptionDataset([str(tmp_path)], 32)      # no CSV and nothing else to read either


def _truncated_jpeg(path):
    """A JPEG cut in half: PIL's verify() accepts it, only decoding fails."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    with Image.open(path) as img:
        img.verify()                    # the old check passed it


def test_bad_images_are_skipped_and_counted_in_one_warning(tmp_path, caplog):
    folder = _folder(tmp_path, "a", 3, extra_rows=["missing.png,gone", "bad.png,broken", "small.png,tiny",
                                                   "cut.jpg,truncated"])
    (folder / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "small.png")
    _truncated_jpeg(folder / "cut.jpg")
    with caplog.at_level(logging.WARNING):
        ds = ImageCaptionDataset([str(folder)], 32)
    assert len(ds) == 3
    assert ds.skipped == {"missing": 1, "corrupt or truncated": 2, "too small": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 4 of 7" in warnings[0].getMessage()
    for i in range(len(ds)):            # every kept record decodes (no crash at the first batch)
        assert ds.sample(i, 0, 1000, (4, 4, 4))["image"].shape == (3, 32, 32)


def test_no_usable_image_is_one_error_without_a_warning(tmp_path, caplog):
    folder = _folder(tmp_path, "a", 0, extra_rows=["cut.jpg,truncated"])
    _truncated_jpeg(folder / "cut.jpg")
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match="1 corrupt or truncated"):
        ImageCaptionDataset([str(folder)], 32)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_non_rgb_modes_are_converted_and_alpha_goes_on_white(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    rgba = np.dstack([red, np.zeros((32, 32), np.uint8)])
    rgba[:16, :, 3] = 255                        # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((32, 32), 100, np.uint8), "L").save(folder / "l.png")
    Image.fromarray(red).convert("P").save(folder / "p.png")
    Image.fromarray(red).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 100, np.uint8), "L").save(folder / "l.jpg")
    names = ["rgba.png", "l.png", "p.png", "cmyk.jpg", "l.jpg"]
    (folder / "img_txt.csv").write_text("dir,text\n" + "".join(f"{n},{n}\n" for n in names))
    ds = ImageCaptionDataset([str(folder)], 32)
    assert len(ds) == 5 and ds.skipped == {}
    images = {n: (load_image(str(folder / n), 32) + 1) * 127.5 for n in names}
    np.testing.assert_allclose(images["rgba.png"][:, 2:14, 4:28].mean(axis=(1, 2)), [255, 0, 0], atol=1)
    np.testing.assert_allclose(images["rgba.png"][:, 18:30, 4:28].mean(axis=(1, 2)), [255, 255, 255], atol=1)
    np.testing.assert_allclose(images["l.png"], 100, atol=1)
    np.testing.assert_allclose(images["p.png"].mean(axis=(1, 2)), [255, 0, 0], atol=2)
    assert images["cmyk.jpg"][0].mean() > 200 and images["cmyk.jpg"][1:].mean() < 40


@pytest.mark.parametrize("payload, expect", [
    (b"dir,text\n0.png,caf\xe9\n", "line 2 is not UTF-8"),
    (b"dir,text\n0.png,a\n0.png,red, circle\n", "line 3: 3 field(s), the header has 2"),
    (b"dir,text\n0.png\n", "line 2: 1 field(s), the header has 2"),
])
def test_csv_encoding_and_ragged_rows_are_one_error_naming_the_line(tmp_path, payload, expect):
    folder = _folder(tmp_path, "a", 1)
    (folder / "img_txt.csv").write_bytes(payload)
    with pytest.raises(UserError, match=expect.replace("(", "\\(").replace(")", "\\)")) as info:
        ImageCaptionDataset([str(folder)], 32)
    assert "img_txt.csv" in str(info.value) and "\n" not in str(info.value)


def test_csv_with_a_utf8_bom_reads(tmp_path):
    folder = _folder(tmp_path, "a", 2)
    (folder / "img_txt.csv").write_bytes(b"\xef\xbb\xbfdir,text\n0.png,caf\xc3\xa9\n1.png,b\n")
    assert [r.text for r in ImageCaptionDataset([str(folder)], 32).records] == ["caf\u00e9", "b"]


def test_several_folders_transforms_and_deterministic_draws(tmp_path):
    a, b = _folder(tmp_path, "a", 3), _folder(tmp_path, "b", 2, size=(64, 32))
    ds = ImageCaptionDataset([str(a), str(b)], 32, random_crop=True, random_flip=True, drop_text_prob=0.5)
    assert len(ds) == 5 and ds.records[4].text == "caption b 1, with a comma"
    s1 = ds.sample(4, epoch=3, num_timesteps=1000, latent_shape=(4, 4, 4))
    s2 = ds.sample(4, epoch=3, num_timesteps=1000, latent_shape=(4, 4, 4))
    assert s1["image"].shape == (3, 32, 32) and s1["image"].min() >= -1 and s1["image"].max() <= 1
    for key in ("image", "noise", "vae_noise", "t"):
        np.testing.assert_array_equal(s1[key], s2[key])
    other = ds.sample(4, epoch=4, num_timesteps=1000, latent_shape=(4, 4, 4))
    assert not np.array_equal(other["noise"], s1["noise"])
    centre = load_image(ds.records[4].path, 32)
    with Image.open(ds.records[4].path) as img:
        ref = np.asarray(img.resize((64, 32), Image.BICUBIC).crop((16, 0, 48, 32)), np.float32)
    np.testing.assert_allclose(centre, ref.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
    dropped = [ds.sample(i % 5, e, 1000, (4, 4, 4))["text"] == "" for i in range(5) for e in range(8)]
    assert 0 < sum(dropped) < len(dropped)
    batch = make_batch(ds, [0, 3], 0, 1000, (4, 4, 4))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["noise"].shape == (2, 4, 4, 4) and len(batch["text"]) == 2


def test_rank_shards_are_disjoint_and_make_up_the_global_batch():
    n, batch, world, seed = 23, 2, 3, 5
    steps = steps_per_epoch(n, batch, world)
    assert steps == 3
    for epoch in range(2):
        seen = []
        for step in range(steps):
            shards = [shard_indices(n, epoch, seed, batch, step, r, world) for r in range(world)]
            glob = shard_indices(n, epoch, seed, batch * world, step, 0, 1)
            np.testing.assert_array_equal(np.concatenate(shards), glob)
            seen += list(glob)
        assert len(set(seen)) == len(seen) == steps * batch * world
    e0 = shard_indices(n, 0, seed, batch * world, 0)
    e1 = shard_indices(n, 1, seed, batch * world, 0)
    assert not np.array_equal(e0, e1)

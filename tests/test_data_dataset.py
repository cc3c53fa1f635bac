"""Image-caption folders: CSV checks, skipped images, transforms, per-sample randomness, rank shards."""
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
    with pytest.raises(UserError, match="img_txt.csv not found"):
        ImageCaptionDataset([str(tmp_path)], 32)


def test_bad_images_are_skipped_and_counted_in_one_warning(tmp_path, caplog):
    folder = _folder(tmp_path, "a", 3, extra_rows=["missing.png,gone", "bad.png,broken", "small.png,tiny",
                                                   "gray.png,grey"])
    (folder / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "small.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "gray.png")
    with caplog.at_level(logging.WARNING):
        ds = ImageCaptionDataset([str(folder)], 32)
    assert len(ds) == 3
    assert ds.skipped == {"missing": 1, "corrupt": 1, "too small": 1, "not RGB": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 4 of 7" in warnings[0].getMessage()


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

"""Aspect-ratio buckets: the table and the choice against kohya's rules restated here, no-upscale sizes,
the per-epoch batches (one bucket each, every image every epoch, ranks disjoint, deterministic), the
bucketed dataset on real photographs (scikit-image's bundled samples) and the start-up refusals."""
import importlib.util
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ldm.data.buckets import (BucketBatches, BucketSettings, assign_buckets, bucket_resolutions, check_settings,
                              no_upscale_bucket, select_bucket)
from ldm.data.dataset import ImageCaptionDataset, load_image
from ldm.errors import UserError

SKIMAGE_DATA = os.path.join(list(importlib.util.find_spec("skimage").submodule_search_locations)[0], "data")
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "astronaut.png")


def kohya_table(base, lo, hi, step):
    """The bucket table written out from kohya's description, independently of ldm.data.buckets."""
    cells = (base // step) * (base // step)
    table = [(int(math.sqrt(cells)) * step,) * 2]
    w = lo
    while w <= hi:
        h = min(hi, cells // (w // step) * step)
        table += [(w, h), (h, w)]
        w += step
    return sorted(set(table))


@pytest.mark.parametrize("base, lo, hi, step", [(512, 256, 1024, 64), (768, 256, 1024, 64), (768, 320, 1536, 64),
                                                (64, 32, 128, 8), (256, 128, 512, 32)])
def test_table_is_kohyas(base, lo, hi, step):
    table = bucket_resolutions(BucketSettings(base, lo, hi, step))
    assert table == kohya_table(base, lo, hi, step)
    for w, h in table:
        assert w % step == 0 and h % step == 0 and w * h <= base * base and max(w, h) <= hi


def test_sd_512_table_holds_the_familiar_buckets():
    table = bucket_resolutions(BucketSettings(512, 256, 1024, 64))
    for reso in [(512, 512), (576, 448), (448, 576), (640, 384), (768, 320), (1024, 256), (256, 1024)]:
        assert reso in table


def test_each_image_takes_the_bucket_of_closest_aspect():
    s = BucketSettings(512, 256, 1024, 64)
    table = bucket_resolutions(s)
    rng = np.random.default_rng(0)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(50, 3000, 2))
        bucket = select_bucket(w, h, table, s)
        best = min(abs(bw / bh - w / h) for bw, bh in table)
        assert abs(bucket[0] / bucket[1] - w / h) == pytest.approx(best)
    assert select_bucket(576, 448, table, s) == (576, 448)          # its own size when that is a bucket
    assert select_bucket(3000, 4000, table, s) == (448, 576)        # a portrait stays a portrait


@pytest.mark.parametrize("w, h", [(4000, 3000), (3000, 4000), (1920, 1080), (700, 300), (640, 427), (300, 200)])
def test_no_upscale_never_enlarges_and_keeps_the_area(w, h):
    s = BucketSettings(512, 64, 4096, 64, no_upscale=True)
    bucket, resized = no_upscale_bucket(w, h, s)
    assert bucket[0] <= resized[0] <= max(w, bucket[0]) and bucket[1] <= resized[1]
    assert bucket[0] % 64 == 0 and bucket[1] % 64 == 0
    assert resized[0] <= w and resized[1] <= h                      # only downscaled
    if w * h > 512 * 512:
        assert bucket[0] * bucket[1] <= 512 * 512
        assert abs(resized[0] / resized[1] - w / h) < 0.02
    else:
        assert resized == (w, h)


def test_no_upscale_refuses_an_image_too_small_for_every_bucket():
    s = BucketSettings(512, 256, 1024, 64, no_upscale=True)
    with pytest.raises(UserError, match="small.png \\(300x200\\) is too small for every bucket"):
        assign_buckets([(900, 700), (300, 200)], ["big.png", "small.png"], s)


@pytest.mark.parametrize("settings, multiple, message", [
    (BucketSettings(512, 1024, 256, 64), 64, "leave no bucket: min_bucket_reso 1024 > max_bucket_reso 256"),
    (BucketSettings(512, 256, 1024, 32), 64, "bucket_reso_steps 32 must be a multiple of the model's size multiple 64"),
    (BucketSettings(512, 256, 1024, 96), 64, "bucket_reso_steps 96 must be a multiple"),
    (BucketSettings(512, 200, 1024, 64), 64, "min_bucket_reso 200 must be a positive multiple"),
    (BucketSettings(512, 256, 1000, 64), 64, "max_bucket_reso 1000 must be a positive multiple"),
    (BucketSettings(1280, 256, 1024, 64), 64, "image_size 1280 must lie within"),
])
def test_settings_that_leave_no_bucket_are_one_line(settings, multiple, message):
    with pytest.raises(UserError, match=message.replace("(", "\\(").replace(")", "\\)")):
        check_settings(settings, multiple)


def test_batches_one_bucket_each_every_image_each_epoch_ranks_disjoint():
    rng = np.random.default_rng(3)
    resos = [(64, 64), (80, 48), (48, 80), (96, 40)]
    buckets = [resos[k] for k in rng.choice(4, 37, p=[0.5, 0.3, 0.15, 0.05])]
    plan = BucketBatches(buckets, global_batch=4, seed=7)
    counts = {r: buckets.count(r) for r in set(buckets)}
    assert plan.batches_per_epoch == sum(math.ceil(n / 4) for n in counts.values())
    for epoch in range(3):
        batches = plan.epoch(epoch)
        assert len(batches) == plan.batches_per_epoch
        seen = set()
        for reso, idx, copies in batches:
            assert len(idx) == 4 and all(buckets[i] == reso for i in idx)
            assert len({(int(i), int(c)) for i, c in zip(idx, copies)}) == 4     # repeats draw anew
            seen.update(int(i) for i in idx)
        assert seen == set(range(len(buckets)))
        for step in range(plan.batches_per_epoch):                 # two ranks of batch 2 = one of 4
            r0 = plan.micro_batch(epoch, step, 2, rank=0)
            r1 = plan.micro_batch(epoch, step, 2, rank=1)
            assert r0[0] == r1[0] == batches[step][0]
            np.testing.assert_array_equal(np.concatenate([r0[1], r1[1]]), batches[step][1])
    again = BucketBatches(buckets, 4, 7)
    assert [(b, i.tolist()) for b, i, _ in again.epoch(1)] == [(b, i.tolist()) for b, i, _ in plan.epoch(1)]
    assert [i.tolist() for _, i, _ in plan.epoch(1)] != [i.tolist() for _, i, _ in plan.epoch(2)]


def photo_folder(root, names=PHOTOS, extra_portrait=True):
    """``root``/photos: scikit-image's sample photographs ``names`` with kohya .txt captions (tag lists)."""
    folder = root / "photos"
    folder.mkdir()
    for name in names:
        stem = os.path.splitext(name)[0]
        shutil.copy(os.path.join(SKIMAGE_DATA, name), folder / name)
        (folder / f"{stem}.txt").write_text(f"a photo of {stem}, real, sample\n")
    if extra_portrait:   # a portrait of the same photo (rotated), to fill a tall bucket
        with Image.open(os.path.join(SKIMAGE_DATA, "coffee.png")) as img:
            img.transpose(Image.Transpose.ROTATE_90).save(folder / "coffee_tall.png")
        (folder / "coffee_tall.txt").write_text("a tall photo of coffee\n")
    return folder


def test_real_photographs_train_at_their_own_aspect(tmp_path):
    folder = photo_folder(tmp_path)
    s = BucketSettings(64, 32, 128, 16)
    ds = ImageCaptionDataset([str(folder)], 64, source_options=None, buckets=s)
    sizes = {os.path.basename(r.path): ds.size_of(i) for i, r in enumerate(ds.records)}
    assert sizes["chelsea.png"][0] > sizes["chelsea.png"][1]          # 451 x 300: landscape bucket
    assert sizes["coffee_tall.png"][0] < sizes["coffee_tall.png"][1]  # 400 x 600: portrait bucket
    assert sizes["astronaut.png"] == (64, 64)
    for i, rec in enumerate(ds.records):
        with Image.open(rec.path) as img:
            w, h = img.size
        bw, bh = ds.size_of(i)
        assert abs(bw / bh - w / h) <= min(abs(a / b - w / h) for a, b in bucket_resolutions(s)) + 1e-9
        sample = ds.sample(i, 0, 1000, (4, bh // 8, bw // 8))
        assert sample["image"].shape == (3, bh, bw) and np.isfinite(sample["image"]).all()
        assert sample["noise"].shape == (4, bh // 8, bw // 8)


def test_cover_resize_keeps_the_whole_short_side(tmp_path):
    """A 2:1 image into a 2:1 bucket is resized, not cropped: the picture equals a plain resize."""
    arr = np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = load_image(str(tmp_path / "wide.png"), (64, 32))
    ref = np.asarray(Image.fromarray(arr).resize((64, 32), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    """A landscape sensor image with EXIF orientation 6 (rotate 90) is a portrait: bucket and pixels."""
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = 255                                      # left half white as stored
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (tmp_path / "rotated.txt").write_text("rotated")
    ds = ImageCaptionDataset([str(tmp_path)], 64, min_size=8, buckets=BucketSettings(64, 32, 128, 16))
    w, h = ds.size_of(0)
    assert h > w
    pixels = load_image(str(tmp_path / "rotated.jpg"), (w, h))
    top, bottom = pixels[:, : h // 4].mean(), pixels[:, -h // 4:].mean()
    assert top > 0.5 and bottom < -0.5                     # rotated 90 clockwise: white half on top


def test_shuffled_captions_are_the_same_on_a_rerun_and_leave_the_other_draws_alone(tmp_path):
    from ldm.data.captions import CaptionOptions
    from ldm.data.dataset import make_batch
    folder = photo_folder(tmp_path, extra_portrait=False)
    opts = CaptionOptions(shuffle_caption=True, keep_tokens=1, caption_tag_dropout_rate=0.3)
    make = lambda o: ImageCaptionDataset([str(folder)], 32, caption_options=o, seed=4)   # noqa: E731
    shuffled, plain = make(opts), make(None)
    idx = np.arange(len(shuffled))
    a = make_batch(shuffled, idx, 1, 1000, (4, 4, 4))
    b = make_batch(make(opts), idx, 1, 1000, (4, 4, 4))
    c = make_batch(plain, idx, 1, 1000, (4, 4, 4))
    assert a["text"] == b["text"]                                   # a rerun sees the same captions
    for key in ("t", "noise", "image"):                             # shuffling draws from its own stream
        np.testing.assert_array_equal(a[key], c[key])
    for text, rec in zip(a["text"], shuffled.records):
        assert text.split(", ")[0] == rec.text.split(", ")[0]       # keep_tokens 1: the first tag stays
    other = [make_batch(shuffled, idx, e, 1000, (4, 4, 4))["text"] for e in range(2, 6)]
    assert any(t != a["text"] for t in other)                       # other epochs shuffle differently


def test_dreambooth_class_partners_take_their_instance_bucket(tmp_path):
    from ldm.data.dreambooth_dataset import DreamBoothDataset, paired_batch
    inst, cls = tmp_path / "inst", tmp_path / "cls"
    inst.mkdir()
    cls.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(96, 48), (48, 96), (64, 64)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(inst / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cls / f"{i}.png")
    ds = DreamBoothDataset(str(inst), "sks dog", 32, repeats=2, buckets=BucketSettings(32, 16, 64, 8))
    ds.attach_class_images(str(cls), "a dog")
    assert len(set(ds.bucket_of)) == 3 and len(ds) == 6
    for i in range(len(ds)):
        w, h = ds.size_of(i)
        batch = paired_batch(ds, np.array([i]), 0, 1000, (4, h // 8, w // 8), 1.0)
        assert batch["image"].shape == (2, 3, h, w) and batch["noise"].shape == (2, 4, h // 8, w // 8)

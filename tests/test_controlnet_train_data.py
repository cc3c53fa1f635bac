"""ControlNet training data and recipes (ldm.data.controlnet_dataset, ldm.train.controlnet): every data layout reads
the same triples, image and control image share one crop and flip, canny made on the fly, a control image of the
same aspect ratio is resized; MindONE's two recipes parse unchanged; every flag is documented."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from ldm.data.controlnet_dataset import ControlNetDataset, ControlOptions, load_pair
from ldm.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")


def _image(path, size, seed, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _layouts(root):
    """The same three (image, control, caption) triples in the four layouts; returns {layout: folder}."""
    sizes = [(48, 32), (32, 32), (32, 40)]
    triples = [(f"{i:02d}", sizes[i], f"caption {i}") for i in range(3)]
    out = {}
    mindone = os.path.join(root, "mindone")
    lines = []
    for stem, size, text in triples:
        _image(os.path.join(mindone, "target", stem + ".png"), size, int(stem))
        _image(os.path.join(mindone, "source", stem + ".png"), size, 100 + int(stem))
        lines.append(json.dumps({"source": f"source/{stem}.png", "target": f"target/{stem}.png", "prompt": text}))
    with open(os.path.join(mindone, "prompt.json"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    out["prompt.json"] = mindone
    pose = os.path.join(root, "openpose")
    for stem, size, _ in triples:
        _image(os.path.join(pose, "target", f"{int(stem)}.png"), size, int(stem))
        _image(os.path.join(pose, "source", f"{int(stem)}.png"), size, 100 + int(stem))
    with open(os.path.join(pose, "prompt.json"), "w", encoding="utf-8") as f:
        json.dump([{"image_id": int(stem), "caption": text} for stem, _, text in triples], f)
    out["openpose"] = pose
    hf = os.path.join(root, "hf")
    lines = []
    for stem, size, text in triples:
        _image(os.path.join(hf, "img", stem + ".png"), size, int(stem))
        _image(os.path.join(hf, "cond", stem + ".png"), size, 100 + int(stem))
        lines.append(json.dumps({"file_name": f"img/{stem}.png", "conditioning_image": f"cond/{stem}.png",
                                 "text": text}))
    with open(os.path.join(hf, "metadata.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    out["metadata.jsonl"] = hf
    plain = os.path.join(root, "plain")
    for stem, size, text in triples:
        _image(os.path.join(plain, "images", stem + ".png"), size, int(stem))
        _image(os.path.join(plain, "controls", stem + ".png"), size, 100 + int(stem))
        with open(os.path.join(plain, stem + ".txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    out["images/ + controls/"] = plain
    return out


def _arrays(dataset):
    samples = [dataset.sample(i, 0, 1000, (4, 8, 8)) for i in range(len(dataset))]
    return sorted((s["text"], s["image"].tobytes(), s["hint"].tobytes()) for s in samples)


def test_every_layout_gives_the_same_samples(tmp_path):
    """The same files in MindONE's prompt.json (canny and openpose), diffusers' metadata.jsonl and images/ + controls/
    layouts: the same records in the same order, so the same samples (keyed by seed, epoch, index)."""
    folders = _layouts(str(tmp_path))
    datasets = {name: ControlNetDataset(folder, 32, random_crop=True, random_flip=True, seed=3)
                for name, folder in folders.items()}
    assert [ds.layouts[0] for ds in datasets.values()] == ["prompt.json", "prompt.json", "metadata.jsonl",
                                                          "images/ + controls/"]
    reference = None
    for name, ds in datasets.items():
        assert [r.text for r in ds.records] == ["caption 0", "caption 1", "caption 2"], name
        samples = [ds.sample(i, epoch, 1000, (4, 8, 8)) for epoch in range(2) for i in range(len(ds))]
        assert all(s["image"].shape == (3, 32, 32) and s["hint"].shape == (3, 32, 32) for s in samples)
        assert all(0 <= s["hint"].min() and s["hint"].max() <= 1 for s in samples)
        if reference is None:
            reference = samples
        for s, r in zip(samples, reference):
            np.testing.assert_array_equal(s["image"], r["image"])
            np.testing.assert_array_equal(s["hint"], r["hint"])
            assert s["text"] == r["text"] and s["t"] == r["t"]


def test_control_follows_the_crop_and_flip(tmp_path):
    """A control image equal to its image gives hint = (image + 1) / 2 after any random crop and flip."""
    for k in range(4):
        path = _image(str(tmp_path / "images" / f"{k}.png"), (48, 32), k)
        os.makedirs(tmp_path / "controls", exist_ok=True)
        Image.open(path).save(tmp_path / "controls" / f"{k}.png")
    ds = ControlNetDataset(str(tmp_path), 32, random_crop=True, random_flip=True, seed=0)
    flips = 0
    for epoch in range(3):
        for i in range(len(ds)):
            s = ds.sample(i, epoch, 1000, (4, 8, 8))
            np.testing.assert_allclose(s["hint"] * 2 - 1, s["image"], atol=1e-6)
            original = np.asarray(Image.open(ds.records[i].path), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
            flips += not any(np.array_equal(s["image"], original[:, :, x:x + 32]) for x in range(17))
    assert 0 < flips < 12                                  # random flips happened, not always


def test_canny_detector_and_resized_controls(tmp_path, caplog):
    from ldm.data.canny import canny
    # a text-to-image folder (img_txt.csv) with --detector canny: the hint is the canny map of the cropped image
    folder = tmp_path / "t2i"
    folder.mkdir()
    img = Image.new("RGB", (40, 32), (240, 240, 240))
    img.paste((200, 20, 20), (8, 6, 24, 22))
    img.save(folder / "a.png")
    (folder / "img_txt.csv").write_text("dir,text\na.png,a red square\n", encoding="utf-8")
    ds = ControlNetDataset(str(folder), 32, ControlOptions("canny"), random_crop=False, seed=0)
    hint = ds.sample(0, 0, 1000, (4, 8, 8))["hint"]
    crop = np.asarray(img, dtype=np.uint8)[:, 4:36]
    expected = canny(crop, 100, 200) / 255.0
    for c in range(3):
        np.testing.assert_array_equal(hint[c], expected)
    assert hint.max() == 1.0
    # a control image of twice the size (same aspect ratio) is resized to its image, with one notice
    (tmp_path / "big" / "images").mkdir(parents=True)
    (tmp_path / "big" / "controls").mkdir()
    img.save(tmp_path / "big" / "images" / "a.png")
    img.resize((80, 64), Image.NEAREST).save(tmp_path / "big" / "controls" / "a.png")
    with caplog.at_level("INFO", logger="ldm.data"):
        big = ControlNetDataset(str(tmp_path / "big"), 32, seed=0)
    assert "1 control image(s) of another size than their image" in caplog.text
    image, hint = load_pair(big.records[0], (32, 32), big.control_options)
    error = np.abs(hint * 2 - 1 - image)
    assert error.mean() < 0.02 and error.max() < 0.5          # the Lanczos round trip of a sharp square


@pytest.mark.parametrize("setup,expect", [
    ("missing", "has no control image"),
    ("aspect", "another aspect ratio"),
    ("corrupt", "corrupt or truncated"),
    ("no_controls", "no control images"),
])
def test_bad_data_is_one_error(tmp_path, setup, expect):
    root = tmp_path / "d"
    _image(str(root / "images" / "a.png"), (32, 32), 0)
    if setup == "aspect":
        _image(str(root / "controls" / "a.png"), (48, 32), 1)
    elif setup == "corrupt":
        (root / "controls").mkdir()
        (root / "controls" / "a.png").write_bytes(b"not a png")
    elif setup == "missing":
        (root / "controls").mkdir()
    else:
        os.rename(root / "images" / "a.png", root / "a.png")
        (root / "images").rmdir()
        (root / "a.txt").write_text("a caption", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(expect)):
        ControlNetDataset(str(root), 32)


def _recipe_cfg(tmp_path, name):
    from ldm.train.controlnet import parse_config
    (tmp_path / "data").mkdir(exist_ok=True)
    return parse_config(["-c", os.path.join(REPO, "configs", "train", name), "--data_path", str(tmp_path / "data"),
                         "--pretrained_model_path", BASE, "--output_path", str(tmp_path / "out")])


def test_mindone_recipes_parse_unchanged(tmp_path):
    from ldm.train.controlnet import read_recipe
    for name, mode, filt, clip in (("sd15_controlnet_canny.yaml", "canny", 200, False),
                                   ("sd15_controlnet_openpose.yaml", "openpose", 100, True)):
        raw = read_recipe(os.path.join(REPO, "configs", "train", name))      # every key known
        assert raw["model_config"] == "configs/v1-train-cldm.yaml" and raw["use_recompute"] is False
        cfg = _recipe_cfg(tmp_path, name)
        assert cfg.model_config.endswith(os.path.join("configs", "v1-controlnet-inference.yaml"))
        assert (cfg.controlnet_mode, cfg.image_filter_size, cfg.clip_grad) == (mode, filt, clip)
        assert cfg.recompute is False and cfg.use_ema and cfg.betas == [0.9, 0.98]
        assert cfg.start_learning_rate == 5e-4 and cfg.scheduler == "constant" and cfg.train_batch_size == 2
        assert cfg.drop_text_prob == 0.5 and cfg.seed == 3407 and cfg.detector == "none"


def test_flags_are_documented():
    from ldm.train.controlnet import CN_OPTIONS, build_parser
    text = build_parser().format_help()
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_]*)", text)) - {"--help"}
    docs = ""
    for page in ("controlnet.md", "training.md", "data.md"):
        with open(os.path.join(REPO, "docs", page), encoding="utf-8") as f:
            docs += f.read()
    missing = sorted(f for f in flags if f"`{f}" not in docs)
    assert not missing, f"flags missing from the docs: {missing}"
    with open(os.path.join(REPO, "docs", "controlnet.md"), encoding="utf-8") as f:
        page = f.read()
    assert all(f"`--{name}`" in page for name in CN_OPTIONS)


# every flag of MindONE's train_cldm.py (read at mindspore-lab/mindone 00985c17, examples/stable_diffusion_v2)
MINDONE_FLAGS = ("train_config", "mode", "use_parallel", "use_recompute", "replace_small_images", "enable_modelarts",
                 "num_workers", "json_data_path", "data_path", "output_path", "resume", "profile", "model_config",
                 "custom_text_encoder", "pretrained_model_path", "use_lora", "lora_ft_unet", "lora_ft_text_encoder",
                 "lora_rank", "lora_fp16", "optim", "betas", "weight_decay", "seed", "warmup_steps",
                 "train_batch_size", "callback_size", "start_learning_rate", "end_learning_rate", "decay_steps",
                 "scheduler", "epochs", "init_loss_scale", "loss_scale_factor", "scale_window",
                 "gradient_accumulation_steps", "use_ema", "drop_overflow_update", "clip_grad", "max_grad_norm",
                 "ckpt_save_interval", "step_mode", "random_crop", "filter_small_size", "image_size",
                 "image_filter_size", "log_level", "controlnet_mode")


def test_every_mindone_flag_is_accepted():
    from ldm.train.controlnet import build_parser
    text = build_parser().format_help()
    missing = [f for f in MINDONE_FLAGS if f"--{f} " not in text and f"--{f}\n" not in text and f"--{f}," not in text]
    assert not missing, missing

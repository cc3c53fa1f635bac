"""DreamBooth (train_dreambooth.py): MindONE's three recipes, unchanged, train the tiny shapes model
(only paths, the model config and sizes overridden on the command line); missing class images are
generated once and reused; the loss is MindONE's instance + prior_loss_weight * class loss; checkpoints
carry the run's spec and load in text_to_image.py; resume continues; LoRA writes only LoRA weights; bad
input is one line. Each recipe run compiles a train step (~40 s on a loaded 2-core machine): slow."""
import logging
import os
import shutil

import numpy as np
import pytest

from ldm.data.class_images import fill_class_images, missing_class_images
from ldm.data.dataset import make_batch, shard_indices
from ldm.data.dreambooth_dataset import DreamBoothDataset, list_images, paired_batch
from ldm.train import dreambooth
from tests.train_standin import make_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "configs", "train")
TINY = os.path.join(REPO, "configs", "tiny-shapes-v2.yaml")
BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")
DB_RECIPES = ("train_config_dreambooth_v2.yaml", "train_config_dreambooth_lora_v2.yaml",
              "train_config_dreambooth_vanilla_v2.yaml")
# every flag of MindONE's examples/stable_diffusion_v2/train_dreambooth.py (read 2026-12-01)
MINDONE_FLAGS = """mode use_parallel use_lora lora_ft_unet lora_ft_text_encoder lora_fp16 lora_rank model_config
pretrained_model_path output_path instance_data_dir class_data_dir instance_prompt class_prompt scale
with_prior_preservation prior_loss_weight num_class_images train_data_repeats sampling_steps random_crop image_size
train_text_encoder train_batch_size callback_size sample_batch_size ckpt_save_interval gradient_accumulation_steps
warmup_steps start_learning_rate end_learning_rate decay_steps init_loss_scale loss_scale_factor scale_window use_ema
clip_grad max_grad_norm optim betas weight_decay log_level seed epochs""".split()


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("db-shapes"), num_train=4, size=32)


@pytest.fixture(autouse=True)
def _restore_ldm_log_level():
    yield
    logging.getLogger("ldm").setLevel(logging.NOTSET)  # TrainRun applies log_level to the "ldm" logger


def argv(recipe, instances, out, *extra, class_dir=None):
    args = ["-c", os.path.join(RECIPES, recipe), "--model_config", TINY, "--pretrained_model_path", BASE,
            "--instance_data_dir", instances, "--output_path", str(out), "--image_size", "32",
            "--max_steps", "2", "--show_progress", "False"]
    if class_dir is not None:
        args += ["--class_data_dir", str(class_dir), "--num_class_images", "3", "--sampling_steps", "2",
                 "--sample_batch_size", "2"]
    return args + [str(e) for e in extra]


def copy_images(src, dst, n):
    os.makedirs(dst, exist_ok=True)
    for name in list_images(src)[:n]:
        shutil.copy(os.path.join(src, name), os.path.join(dst, f"user_{name}"))
    return str(dst)


# ------------------------------------------------------------------ options and recipes (no training)
def test_recipes_parse_with_mindones_values(instances, tmp_path):
    table = dreambooth.options()
    assert not [f for f in MINDONE_FLAGS if f not in table]
    assert not {"data_path", "cache_latents", "drop_text_prob"} & set(table)
    for name in DB_RECIPES:
        keys = dreambooth.read_recipe(os.path.join(RECIPES, name))
        assert keys["instance_prompt"] == "a photo of sks dog" and keys["model_config"] == \
            "configs/train_dreambooth_sd_v2.yaml"
        assert keys["with_prior_preservation"] == ("vanilla" not in name)
    cfg = dreambooth.parse_config(["-c", os.path.join(RECIPES, DB_RECIPES[1]), "--instance_data_dir", instances,
                                   "--class_data_dir", str(tmp_path / "cls"), "--output_path", str(tmp_path / "o"),
                                   "--pretrained_model_path", ""])
    assert os.path.abspath(cfg.model_config) == os.path.join(REPO, "configs", "v2-train.yaml")   # MindONE YAML -> ours
    assert (cfg.use_lora, cfg.lora_rank, cfg.lora_ft_unet, cfg.lora_ft_text_encoder) == (True, 64, True, True)
    assert (cfg.start_learning_rate, cfg.weight_decay, cfg.betas, cfg.epochs) == (5e-5, 1e-4, [0.9, 0.98], 4)
    assert (cfg.num_class_images, cfg.scale, cfg.class_prompt, cfg.image_size) == (200, 9.0, "a photo of a dog", 512)
    assert (cfg.seed, cfg.train_data_repeats, cfg.prior_loss_weight, cfg.jit) == (3407, 40, 1.0, True)
    assert cfg.data_path == [instances] and cfg.drop_text_prob == 0.0 and cfg.cache_latents is False


# ------------------------------------------------------------------ data and class images (numpy only)
def test_pairs_are_keyed_by_sample_and_weights_give_mindones_sum(instances, tmp_path):
    ds = DreamBoothDataset(instances, "a sks", 32, repeats=3, random_crop=True, random_flip=True, seed=7)
    assert len(ds) == 12 and [r.text for r in ds.records] == ["a sks"] * 12
    assert [r.path for r in ds.records[:4]] == [r.path for r in ds.records[4:8]]      # a, b, c, d, a, ...
    ds.attach_class_images(copy_images(instances, tmp_path / "cls", 3), "a shape")
    shape = (4, 8, 8)
    batch = paired_batch(ds, [5, 2], 1, 1000, shape, prior_loss_weight=0.5)
    plain = make_batch(ds, [5, 2], 1, 1000, shape)
    assert batch["text"] == ["a sks", "a sks", "a shape", "a shape"]
    np.testing.assert_array_equal(batch["loss_weight"], [2.0, 2.0, 1.0, 1.0])
    for key in ("image", "t", "noise", "vae_noise"):
        np.testing.assert_array_equal(batch[key][:2], plain[key])       # instance rows as in a plain batch
    single = paired_batch(ds, [2], 1, 1000, shape)                      # sample 2's partner alone
    for key in ("image", "t", "noise"):
        np.testing.assert_array_equal(single[key][1], batch[key][3])
    assert not np.array_equal(batch["noise"][2], batch["noise"][0])     # class draws are their own
    other_epoch = paired_batch(ds, [2], 2, 1000, shape)
    assert not np.array_equal(other_epoch["noise"][1], single["noise"][1])
    assert "loss_weight" not in paired_batch(ds, [5, 2], 1, 1000, shape, prior_loss_weight=0.0)
    # two ranks of batch 1 see exactly the pairs one process of batch 2 sees
    whole = paired_batch(ds, shard_indices(len(ds), 0, 7, 2, 3), 0, 1000, shape)
    for rank in (0, 1):
        part = paired_batch(ds, shard_indices(len(ds), 0, 7, 1, 3, rank, 2), 0, 1000, shape)
        np.testing.assert_array_equal(part["image"], whole["image"][[rank, 2 + rank]])


def test_class_images_fill_only_what_is_missing(tmp_path):
    calls = []

    def fake(prompts, width, height, steps, sampler, scale, seeds, negative_prompt):
        calls.append(list(seeds))
        return np.stack([np.full((height, width, 3), s % 251, np.uint8) for s in seeds])

    folder = tmp_path / "cls"
    (folder).mkdir()
    (folder / "00001.png").write_bytes(b"")          # a user's file under one of our names is kept
    (folder / "notes.txt").write_text("not an image")
    opts = dict(image_size=8, steps=2, sampler="dpm_solver", scale=9.0, seed=100, batch_size=2,
                show_progress=False)
    written = fill_class_images(str(folder), "a dog", 4, fake, **opts)
    assert [os.path.basename(p) for p in written] == ["00000.png", "00002.png", "00003.png"]
    assert calls == [[100, 102], [103, 103]]          # seed + k; the short last batch padded
    assert sorted(os.listdir(folder)) == ["00000.png", "00001.png", "00002.png", "00003.png", "notes.txt"]
    assert (folder / "00001.png").read_bytes() == b""
    from PIL import Image
    assert np.asarray(Image.open(folder / "00003.png"))[0, 0, 0] == 103
    stamps = {n: os.stat(folder / n).st_mtime_ns for n in os.listdir(folder)}
    assert fill_class_images(str(folder), "a dog", 4, fake, **opts) == [] and len(calls) == 2
    assert {n: os.stat(folder / n).st_mtime_ns for n in os.listdir(folder)} == stamps
    os.remove(folder / "00002.png")                   # an interrupted run: the gap is refilled identically
    assert missing_class_images(str(folder), 4) == [(2, str(folder / "00002.png"))]
    fill_class_images(str(folder), "a dog", 4, fake, **opts)
    assert calls[-1] == [102] and np.asarray(Image.open(folder / "00002.png"))[0, 0, 0] == 102


# ------------------------------------------------------------------ the loss and the base spec (one model, eager)
@pytest.mark.slow
def test_loss_is_instance_plus_weighted_class_and_class_images_use_the_base_spec(instances, tmp_path):
    seen = []

    def make_class_sampler(model, config):
        seen.append(model.prediction_type)

        def sample(prompts, width, height, seeds, **_):
            return np.stack([np.random.default_rng(s).integers(0, 255, (height, width, 3), dtype=np.uint8)
                             for s in seeds])
        return sample

    cls = tmp_path / "cls"
    cfg = dreambooth.parse_config(argv(DB_RECIPES[0], instances, tmp_path / "out", "--mode", "1",
                                       "--prediction_type", "v", "--class_prompt", "a shape", class_dir=cls))
    run = dreambooth.DreamBoothRun(cfg, make_class_sampler=make_class_sampler)
    assert seen == ["eps"] and run.prediction_type == "v"         # drawn as the base model predicts
    assert len(list_images(str(cls))) == 3 and len(run.dataset.prior) == 3

    from mindspore import Tensor

    def host(weight):
        run.cfg.prior_loss_weight = weight
        return run.host_batch(0, 0)
    plain, paired, heavier = host(0.0), host(1.0), host(2.5)
    n = cfg.train_batch_size
    assert len(plain[0]["text"]) == n and len(paired[0]["text"]) == 2 * n
    for key in ("image", "t", "noise"):                            # weight 0: the instance half alone
        np.testing.assert_array_equal(plain[0][key], paired[0][key][:n])
    np.testing.assert_array_equal(heavier[0]["image"], paired[0]["image"])   # only the weights differ
    inputs = run.device_inputs(*paired)
    ones = Tensor(np.ones(n, np.float32))
    instance = float(run.objective(*[x[:n] for x in inputs[:-1]], ones)[0].asnumpy())
    klass = float(run.objective(*[x[n:] for x in inputs[:-1]], ones)[0].asnumpy())
    assert abs(klass) > 1e-4                                       # the class term is there
    l1 = float(run.objective(*inputs)[0].asnumpy())
    l25 = float(run.objective(*inputs[:-1], Tensor(heavier[2][1]))[0].asnumpy())
    np.testing.assert_allclose([l1, l25], [instance + klass, instance + 2.5 * klass], rtol=1e-5)


# ------------------------------------------------------------------ MindONE's recipes, end to end
@pytest.fixture(scope="module")
def full_run(instances, tmp_path_factory):
    """train_config_dreambooth_v2.yaml (full fine-tune, text encoder, prior preservation) through the
    CLI's entry point; the class images are generated by the base model."""
    import train_dreambooth
    root = tmp_path_factory.mktemp("db-full")
    assert train_dreambooth.main(argv(DB_RECIPES[0], instances, root / "out", class_dir=root / "cls")) == 0
    return root


@pytest.mark.slow
def test_full_recipe_generates_class_images_and_writes_a_spec_checkpoint(full_run):
    from ldm.diffusion.spec import recorded_spec
    from ldm.io.ms_checkpoint import read_checkpoint
    names = list_images(str(full_run / "cls"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    ckpt = full_run / "out" / "ckpt" / "sd-step2.ckpt"
    state = read_checkpoint(str(ckpt))
    from ldm.convert.readers import read_weight_file
    spec = recorded_spec(read_weight_file(str(ckpt)))
    assert spec is not None and spec.prediction_type == "eps"
    assert any(k.startswith("cond_stage_model.") for k in state)          # the trained text encoder is saved
    assert (full_run / "out" / "ckpt" / "model_config.yaml").is_file()
    base = read_checkpoint(BASE)
    moved = [k for k in state if k.startswith("cond_stage_model.") and k in base
             and not np.array_equal(state[k].astype(np.float32), base[k].astype(np.float32))]
    assert moved                                                          # train_text_encoder: True
    import text_to_image
    out = full_run / "t2i"
    assert text_to_image.main(["--ckpt_path", str(ckpt), "--prompt", "a photo of sks dog", "--W", "32", "--H", "32",
                               "--sampling_steps", "2", "--n_iter", "1", "--n_samples", "1", "--skip_grid",
                               "--output_path", str(out)]) == 0            # no --config: the saved one
    assert sorted(os.listdir(out / "samples")) == ["00000.png"]


@pytest.mark.slow
def test_rerun_reuses_class_images_and_resume_continues(full_run, instances):
    folder = full_run / "cls"
    stamps = {n: (os.stat(folder / n).st_mtime_ns, (folder / n).read_bytes()) for n in os.listdir(folder)}
    cfg = dreambooth.parse_config(argv(DB_RECIPES[0], instances, full_run / "out", "--resume", "True",
                                       "--max_steps", "3", "--mode", "1", class_dir=folder))
    run = dreambooth.DreamBoothRun(cfg)      # no sampler: nothing may need generating
    assert run.global_step == 2
    summary = run.run()
    assert summary["global_step"] == 3
    assert {n: (os.stat(folder / n).st_mtime_ns, (folder / n).read_bytes()) for n in os.listdir(folder)} == stamps
    assert (full_run / "out" / "ckpt" / "sd-step3.ckpt").is_file()
    rows = (full_run / "out" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]


@pytest.mark.slow
def test_lora_recipe_writes_only_lora_weights(full_run, instances, tmp_path):
    import train_dreambooth
    from ldm.io.ms_checkpoint import read_checkpoint
    out = tmp_path / "lora"
    classes = copy_images(str(full_run / "cls"), tmp_path / "cls", 3)
    before = sorted(os.listdir(classes))
    assert train_dreambooth.main(argv(DB_RECIPES[1], instances, out, class_dir=classes)) == 0
    files = sorted(os.listdir(out / "ckpt"))
    assert files == ["model_config.yaml", "sd-step2_lora.ckpt", "train_resume.ckpt"]
    state = read_checkpoint(str(out / "ckpt" / "sd-step2_lora.ckpt"))
    lora = [k for k in state if "lora" in k]
    assert lora and len(lora) == len(state)
    assert any(k.startswith("cond_stage_model.") for k in lora) and any(k.startswith("model.diffusion_model.")
                                                                       for k in lora)
    assert sorted(os.listdir(classes)) == before                          # enough there: nothing generated
    import text_to_image
    t2i = tmp_path / "t2i"
    assert text_to_image.main(["--config", TINY, "--ckpt_path", BASE, "--lora_ckpt_path",
                               str(out / "ckpt" / "sd-step2_lora.ckpt"), "--lora_ft_text_encoder", "True",
                               "--prompt", "a sks", "--W", "32", "--H", "32", "--sampling_steps", "2", "--n_iter", "1",
                               "--n_samples", "1", "--skip_grid", "--output_path", str(t2i)]) == 0
    assert len(os.listdir(t2i / "samples")) == 1


@pytest.mark.slow
def test_vanilla_recipe_trains_without_class_images(instances, tmp_path):
    """Also the v objective (through the spec) and EMA on the shared loop: PyNative, to skip a compile."""
    import train_dreambooth
    from ldm.convert.readers import read_weight_file
    from ldm.diffusion.spec import recorded_spec
    from ldm.util import load_config, model_section
    out = tmp_path / "vanilla"
    assert train_dreambooth.main(argv(DB_RECIPES[2], instances, out, "--mode", "1", "--prediction_type", "v",
                                      "--use_ema", "True")) == 0
    state = read_weight_file(str(out / "ckpt" / "sd-step2.ckpt"))
    assert recorded_spec(state).prediction_type == "v"
    assert model_section(load_config(str(out / "ckpt" / "model_config.yaml")))["prediction_type"] == "v"
    resume = read_weight_file(str(out / "ckpt" / "train_resume.ckpt"))
    shadowed = [k for k in state if f"ema.{k}" in resume]
    assert shadowed and all(np.array_equal(state[k], resume[f"ema.{k}"]) for k in shadowed)   # EMA saved
    assert any(not np.array_equal(resume[k], resume[f"ema.{k}"]) for k in shadowed)         # raw moved on
    assert not any(k.startswith("lora") or ".lora_" in k for k in state)


# ------------------------------------------------------------------ bad input: one line, exit 2
def test_bad_inputs_are_one_line(instances):
    from tests.cli_table import failures, run_table
    recipe = ["-c", os.path.join(RECIPES, DB_RECIPES[0]), "--model_config", TINY, "--output_path", "{tmp}/out",
              "--image_size", "32", "--max_steps", "1", "--show_progress", "False", "--pretrained_model_path", ""]
    good = recipe + ["--instance_data_dir", instances, "--class_data_dir", "{tmp}/cls"]
    cases = [
        dict(argv=recipe + ["--class_data_dir", "{tmp}/cls"],
             expect="instance_data_dir /path/to/data is MindONE's placeholder: set --instance_data_dir to your folder",
             absent=["/path", "{tmp}/out"]),
        # the recipe's class_data_dir (with_prior_preservation True there): refused before it is created
        dict(argv=recipe + ["--instance_data_dir", instances],
             expect="class_data_dir /path/to/class_image is MindONE's placeholder: set --class_data_dir to your "
                    "folder", absent=["/path", "{tmp}/out"]),
        dict(argv=good + ["--output_path", "/path/to/save/output_data"],
             expect="output_path /path/to/save/output_data is MindONE's placeholder", absent=["/path"]),
        dict(argv=good + ["--pretrained_model_path", "/path/to/pretrained_model"],
             expect="pretrained_model_path /path/to/pretrained_model is MindONE's placeholder: set "
                    "--pretrained_model_path to your file", absent=["/path", "{tmp}/out"]),
        # without prior preservation class_data_dir is not used: its placeholder is not refused
        dict(argv=recipe + ["--with_prior_preservation", "False", "--instance_data_dir", "{tmp}/nothing"],
             expect="instance_data_dir not found", absent=["/path"]),
        dict(argv=good + ["--instance_data_dir", ""], expect="instance_data_dir is required"),
        dict(argv=good + ["--instance_data_dir", "{tmp}/nothing"], expect="instance_data_dir not found"),
        dict(argv=good + ["--instance_data_dir", "{tmp}/empty"], setup="empty_folder",
             expect="no usable images in instance_data_dir", absent=["{tmp}/out"]),
        dict(argv=good + ["--instance_data_dir", "{tmp}/bad"], setup="corrupt_images",
             expect="no usable images in instance_data_dir", absent=["{tmp}/out"]),
        dict(argv=good + ["--instance_prompt", " "], expect="instance_prompt is required"),
        dict(argv=good + ["--class_prompt", ""], expect="with_prior_preservation needs class_prompt"),
        dict(argv=good + ["--class_data_dir", ""], expect="with_prior_preservation needs class_data_dir"),
        dict(argv=good + ["--class_data_dir", "{tmp}/out"], setup="file_named_out",
             expect="class_data_dir is not a folder"),
        dict(argv=good + ["--class_data_dir", "{tmp}/out/cls"], setup="file_named_out",
             expect="/out/cls is below a file"),
        dict(argv=good + ["--class_data_dir", "{tmp}/bad", "--num_class_images", "2"], setup="corrupt_images",
             expect="no usable images in class_data_dir", absent=["{tmp}/out"]),
        dict(argv=good + ["--num_class_images", "0"], expect="num_class_images must be >= 1"),
        dict(argv=good + ["--num_class_images", "1000000000000"], expect="num_class_images 1000000000000: at most",
             absent=["{tmp}/out", "{tmp}/cls"]),
        dict(argv=good + ["--prior_loss_weight", "-1"], expect="prior_loss_weight must be >= 0"),
        dict(argv=good + ["--prior_loss_weight", "nan"], expect="prior_loss_weight must be a finite number"),
        dict(argv=good + ["--train_data_repeats", "0"], expect="train_data_repeats must be >= 1"),
        dict(argv=good + ["--class_sampler", "fast"], expect="class_sampler 'fast' is not a sampler"),
        dict(argv=good + ["--sampling_steps", "5000"], expect="steps must be in [1, 1000]"),
        dict(argv=good + ["--use_lora", "True", "--lora_ft_text_encoder", "True", "--train_text_encoder", "False"],
             expect="lora_ft_text_encoder True needs train_text_encoder True"),
        dict(argv=good + ["--lora_ft_unet", "True"], expect="need use_lora True"),
        dict(argv=good + ["--data_path", instances], expect="unrecognized arguments: --data_path"),
        dict(argv=good + ["--with_prior", "True"], expect="unrecognized arguments: --with_prior"),
    ]
    for case in cases:
        case["script"] = "train_dreambooth.py"
    assert failures(cases, run_table(cases)) == []

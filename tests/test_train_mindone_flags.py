"""MindONE's train_text_to_image.py as a drop-in: its recipes train unchanged (only paths, the model
config and sizes overridden), and each of its flags does here what it does there.

Runs are in-process (one interpreter) and PyNative where the flag under test is not the mode: a graph
compile of the tiny UNet's train step costs ~40 s on two loaded cores, and graph mode is covered by
one recipe run here and by test_train_run / test_lora."""
import logging
import os

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from ldm.errors import UserError
from ldm.train.config import OPTIONS, parse_config, read_recipe
from ldm.train.loop import TrainRun, training_model_config
from tests.train_standin import make_shapes, write_standin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "configs", "train")
TINY = {"v1": os.path.join(REPO, "configs", "tiny-v1.yaml"), "v2": os.path.join(REPO, "configs", "tiny-v2.yaml"),
        "v2-vpred": os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")}
# MindONE's recipe -> our tiny model of the same family (what replaces its full-size model_config)
MINDONE_RECIPES = {"train_config_vanilla_v2_vpred.yaml": "v2-vpred", "train_config_lora_v2_vpred.yaml": "v2-vpred",
                   "train_config_vanilla_v1.yaml": "v1", "train_config_lora_v2.yaml": "v2"}
# every flag of MindONE's examples/stable_diffusion_v2/train_text_to_image.py (read 2026-12-01)
MINDONE_FLAGS = """train_config mode use_parallel replace_small_images enable_modelarts num_workers json_data_path
data_path output_path resume profile model_config custom_text_encoder pretrained_model_path use_lora lora_ft_unet
lora_ft_text_encoder lora_rank lora_fp16 lora_scale unet_initialize_random dataset_sink_mode optim betas weight_decay
seed warmup_steps train_batch_size callback_size start_learning_rate end_learning_rate decay_steps scheduler epochs
init_loss_scale loss_scale_factor scale_window gradient_accumulation_steps use_ema clip_grad enable_flash_attention
drop_overflow_update loss_scaler_type max_grad_norm ckpt_save_interval step_mode random_crop filter_small_size
image_size image_filter_size log_level""".split()
OLDER_FLAGS = ["version", "pretrained_model_file"]   # an older revision of the same script


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("mindone")
    return dict(root=root, data=make_shapes(root / "shapes", num_train=4, size=32),
                standin=write_standin_config(root))


@pytest.fixture(autouse=True)
def _restore_ldm_log_level():
    yield
    logging.getLogger("ldm").setLevel(logging.NOTSET)  # TrainRun applies log_level to the "ldm" logger


def _standin(ws, out, *extra):
    return ["--model_config", ws["standin"], "--data_path", ws["data"], "--output_path", str(out),
            "--image_size", "32", "--train_batch_size", "2", "--show_progress", "False", "--mode", "1",
            "--seed", "5"] + [str(e) for e in extra]


def _records(caplog, text, level=logging.INFO):
    return [r.getMessage() for r in caplog.records if r.levelno >= level and text in r.getMessage()]


@pytest.mark.slow
def test_mindone_recipes_train_unchanged(ws, tmp_path, caplog):
    """Each shipped MindONE recipe, byte for byte, trains one step of the tiny model of its family."""
    assert set(MINDONE_RECIPES) <= set(os.listdir(RECIPES))
    for name, family in MINDONE_RECIPES.items():
        recipe = os.path.join(RECIPES, name)
        keys = read_recipe(recipe)
        assert keys["mode"] == 0 and keys["num_workers"] == 1 and "image_filter_size" in keys
        out = tmp_path / name[:-5]
        sizes = ["--image_size", "32", "--image_filter_size", "16", "--train_batch_size", "1", "--max_steps", "1"]
        if keys.get("use_lora"):
            sizes += ["--lora_rank", "4"]        # 128 in the recipe, above the tiny model's widths
        if name != "train_config_vanilla_v2_vpred.yaml":
            sizes += ["--mode", "1"]             # only the headline recipe pays for a graph compile
        cfg = parse_config(["--train_config", recipe, "--model_config", TINY[family], "--data_path", ws["data"],
                            "--output_path", str(out), "--pretrained_model_path", ""] + sizes)
        assert cfg.betas == [0.9, 0.98] and cfg.weight_decay == 0.01 and cfg.scheduler == "cosine_decay"
        assert cfg.jit == (name == "train_config_vanilla_v2_vpred.yaml")
        with caplog.at_level(logging.INFO):
            run = TrainRun(cfg)
            summary = run.run()
        assert summary["global_step"] == 1 and np.isfinite(summary["last_loss"]), name
        ckpts = os.listdir(out / "ckpt")
        assert ("sd-step1_lora.ckpt" if cfg.use_lora else "sd-step1.ckpt") in ckpts, (name, ckpts)
        assert (run.ema is not None) == keys["use_ema"] and run.prediction_type == ("v" if "vpred" in name else "eps")
        assert (run.step_fn.step == run.step_fn._step) == (not cfg.jit)   # mode 1: the plain (PyNative) step
    assert len(_records(caplog, "enable_flash_attention: there is no flash-attention kernel on CPU",
                        logging.WARNING)) == 1  # train_config_lora_v2_vpred.yaml sets it


def test_every_mindone_flag_is_accepted_and_mode_0_is_mode(ws, tmp_path):
    assert not [f for f in MINDONE_FLAGS + OLDER_FLAGS if f != "train_config" and f not in OPTIONS]
    base = ["--model_config", TINY["v2"], "--data_path", ws["data"], "--output_path", str(tmp_path)]
    cfg = parse_config(["--mode", "0"] + base)
    assert (cfg.mode, cfg.jit, cfg.model_config) == (0, True, TINY["v2"])
    assert parse_config(base + ["--mode", "1"]).jit is False
    assert parse_config(base + ["--mode", "1", "--jit", "True"]).jit is False   # either asks for PyNative
    assert parse_config(base + ["--mode", "0", "--jit", "False"]).jit is False
    with pytest.raises(UserError, match="mode must be one of 0 | 1"):
        parse_config(base + ["--mode", "2"])
    with pytest.raises(UserError, match="unrecognized arguments: --mod"):   # no abbreviations of --mode
        parse_config(base + ["--mod", "0"])
    cfg = parse_config(base + ["--log_level", "logging.DEBUG", "--callback_size", "3", "--num_workers", "8"])
    assert (cfg.log_level, cfg.callback_size, cfg.num_workers) == ("DEBUG", 3, 8)
    with pytest.raises(UserError, match="log_level"):
        parse_config(base + ["--log_level", "logging.LOUD"])
    assert parse_config(base + ["--scheduler", "multi_step_decay"]).scheduler == "constant"   # no milestones
    ckpt = tmp_path / "sd.ckpt"
    ckpt.write_bytes(b"")
    cfg = parse_config(base + ["--pretrained_model_path", str(tmp_path), "--pretrained_model_file", "sd.ckpt"])
    assert cfg.pretrained_model_path == str(ckpt)


def test_unknown_key_is_an_error_naming_it_and_recipe_paths_resolve_from_the_repo(ws, tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: 0\nimage_filter_sizes: 256\nnum_workers: 1\n")
    with pytest.raises(UserError, match="unknown key\\(s\\) image_filter_sizes"):
        parse_config(["--train_config", str(bad)])
    monkeypatch.chdir(tmp_path)    # MindONE resolves configs/... from its script folder, not the cwd
    cfg = parse_config(["--train_config", "configs/train/train_config_vanilla_v2_vpred.yaml",
                        "--data_path", ws["data"], "--pretrained_model_path", "",
                        "--output_path", str(tmp_path / "out")])
    assert cfg.model_config == os.path.join(REPO, "configs", "v2-vpred-train.yaml")


def _small_image_folder(root):
    folder = root / "mixed"
    folder.mkdir()
    rows = ["dir,text"]
    for i, side in enumerate([40, 20, 40, 20, 40]):
        Image.fromarray(np.full((side, side, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,image {i}")
    (folder / "img_txt.csv").write_text("\n".join(rows) + "\n")
    return str(folder)


def test_filter_small_size_drops_or_replaces_small_images_and_random_crop_flips(ws, tmp_path, caplog):
    data = _small_image_folder(tmp_path)
    args = ["--data_path", data, "--image_filter_size", "32"]
    with caplog.at_level(logging.INFO):
        replaced = TrainRun(parse_config(_standin(ws, tmp_path / "a", *args))).dataset
    # 2 of 5 are below 32 px; MindONE tops up with kept records n..1 = kept[2], kept[1]
    assert [os.path.basename(r.path) for r in replaced.records] == ["0.png", "2.png", "4.png", "4.png", "2.png"]
    assert replaced.skipped == {"too small": 2} and replaced.replaced == 2
    assert _records(caplog, "skipped 2 of 5 images (2 too small; too small = shorter side < 32 px)", logging.WARNING)
    assert _records(caplog, "replaced 2 skipped image(s) with copies of kept ones: 5 samples per epoch")
    dropped = TrainRun(parse_config(_standin(ws, tmp_path / "b", *args, "--replace_small_images", "False"))).dataset
    assert [os.path.basename(r.path) for r in dropped.records] == ["0.png", "2.png", "4.png"]
    kept = TrainRun(parse_config(_standin(ws, tmp_path / "c", *args, "--filter_small_size", "False"))).dataset
    assert len(kept) == 5 and kept.skipped == {} and kept.sample(1, 0, 1000, (4, 4, 4))["image"].shape == (3, 32, 32)
    flips = [TrainRun(parse_config(_standin(ws, tmp_path / "e", "--random_crop", crop, *flip))).dataset.random_flip
             for crop, flip in (("True", ()), ("False", ()), ("True", ("--random_flip", "False")))]
    assert flips == [True, False, False]         # MindONE's random_crop also flips; random_flip overrides
    with pytest.raises(UserError, match="lower image_filter_size or set filter_small_size False"):
        TrainRun(parse_config(_standin(ws, tmp_path / "d", "--data_path", data, "--image_filter_size", "64")))


def test_callback_size_sets_the_loss_line_interval_and_log_level_filters(ws, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        TrainRun(parse_config(_standin(ws, tmp_path / "a", "--max_steps", "4", "--callback_size", "2",
                                       "--log_level", "logging.DEBUG"))).run()
    lines = _records(caplog, "loss is")
    assert [ln.split(",")[0] for ln in lines] == ["epoch: 1 step: 2", "epoch: 2 step: 2"]  # 2 steps per epoch
    assert "(step 4/4, lr" in lines[1]
    assert len(open(tmp_path / "a" / "metrics.csv").read().split()) == 5     # log_interval still 1
    import yaml
    args = yaml.safe_load(open(tmp_path / "a" / "args.yaml"))                # MindONE's args.yaml
    assert (args["callback_size"], args["max_steps"], args["log_level"]) == (2, 4, "DEBUG")
    assert _records(caplog, "settings: ", logging.DEBUG)                      # DEBUG shows the settings line
    log_text = open(tmp_path / "a" / "log_0.txt").read()                     # MindONE's log_{rank}.txt
    assert "epoch: 2 step: 2, loss is" in log_text and "settings: " in log_text
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        TrainRun(parse_config(_standin(ws, tmp_path / "b", "--max_steps", "2", "--log_level", "logging.WARNING"))).run()
    assert not [r for r in caplog.records if r.name.startswith("ldm") and r.levelno < logging.WARNING]
    assert "loss is" not in open(tmp_path / "b" / "log_0.txt").read()


def test_args_yaml_is_written_atomically(tmp_path, monkeypatch):
    import types
    import yaml
    from ldm.train import mindone_flags
    cfg = types.SimpleNamespace(output_path=str(tmp_path), max_steps=4, log_level="INFO")
    path = mindone_flags.write_args_yaml(cfg)
    assert yaml.safe_load(open(path)) == vars(cfg)
    before = open(path).read()

    def dump_half_then_fail(data, stream, **kwargs):
        stream.write("max_steps: ")
        raise RuntimeError("killed while writing")
    monkeypatch.setattr(yaml, "safe_dump", dump_half_then_fail)
    cfg.max_steps = 8
    with pytest.raises(RuntimeError, match="killed while writing"):
        mindone_flags.write_args_yaml(cfg)
    assert open(path).read() == before                                       # the previous args.yaml, whole
    assert sorted(os.listdir(tmp_path)) == ["args.yaml"]                     # no temporary file left


def test_profile_writes_profiler_output_and_cuts_to_3_epochs(ws, tmp_path):
    cfg = parse_config(_standin(ws, tmp_path, "--profile", "True", "--epochs", "50"))
    summary = TrainRun(cfg).run()
    assert cfg.epochs == 3 and summary["global_step"] == 6      # 4 images, batch 2: 2 steps an epoch
    files = [f for _, _, names in os.walk(tmp_path / "profiler") for f in names]
    assert any(f.endswith(".json") for f in files) and any(f.startswith("cpu_op") for f in files), files


def test_modelarts_and_flash_attention_give_one_notice_line_each(ws, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        TrainRun(parse_config(_standin(ws, tmp_path / "a", "--enable_modelarts", "True", "--num_workers", "4",
                                       "--json_data_path", "parts.json", "--enable_flash_attention", "True")))
    assert len(_records(caplog, "ModelArts is not supported", logging.WARNING)) == 1
    assert len(_records(caplog, "enable_flash_attention: there is no flash-attention kernel on CPU",
                        logging.WARNING)) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO):
        TrainRun(parse_config(_standin(ws, tmp_path / "b")))
    assert not _records(caplog, "ModelArts") and not _records(caplog, "flash")
    cfg = parse_config(["--model_config", TINY["v2"], "--data_path", ws["data"], "--enable_flash_attention", "True"])
    assert training_model_config(cfg)["model"]["params"]["unet_config"]["params"]["enable_flash_attention"] is True


def test_lora_fp16_and_lora_scale(ws, tmp_path):
    """lora_fp16: LoRA layers compute in fp16 from fp32 weights (fp16 rounding, fp32 result); lora_scale
    multiplies the LoRA path."""
    from ldm.models.lora import lora_layers
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((1, 3, 16)).astype(np.float32))
    up = rng.standard_normal((16, 2)).astype(np.float32)     # to_q of the stand-in: 16 wide, rank 2
    outputs = {}
    for fp16 in ("True", "False"):
        run = TrainRun(parse_config(_standin(ws, tmp_path / fp16, "--use_lora", "True", "--lora_rank", "2",
                                             "--lora_fp16", fp16, "--lora_scale", "0.5")))
        layers = lora_layers(run.model.diffusion_model)
        assert layers and all(cell.lora_scale == 0.5 for cell in layers)
        assert all(p.dtype == ms.float32 for p in run.trainable)            # weights stay fp32
        assert all(cell.lora_dtype == (ms.float16 if fp16 == "True" else None) for cell in layers)
        layers[0].lora_up.set_data(ms.Tensor(up))      # base weights and lora_down: same seed in both runs
        outputs[fp16] = layers[0](x)
        assert outputs[fp16].dtype == ms.float32
    diff = np.abs(outputs["True"].asnumpy() - outputs["False"].asnumpy()).max()
    assert 0 < diff < 1e-2, diff                                              # fp16 rounding, nothing more


def _tiny_checkpoint(path, seed):
    from ldm.models.latent_diffusion import build_model
    from ldm.util import load_config
    ms.set_seed(seed)
    model = build_model(load_config(TINY["v2"]))
    ms.save_checkpoint(model, str(path))
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def test_custom_text_encoder_and_unet_initialize_random(ws, tmp_path):
    a = _tiny_checkpoint(tmp_path / "a.ckpt", seed=11)
    base = ["--model_config", TINY["v2"], "--data_path", ws["data"], "--output_path", str(tmp_path / "out"),
            "--image_size", "32", "--mode", "1", "--show_progress", "False"]

    def weights(*extra):
        run = TrainRun(parse_config(base + list(extra)))
        return {p.name: p.asnumpy() for p in run.model.get_parameters()}

    def same(w, prefix):
        names = [k for k in a if k.startswith(prefix)]
        return names and all(np.array_equal(w[k], a[k]) for k in names)

    custom = weights("--custom_text_encoder", str(tmp_path / "a.ckpt"))
    assert same(custom, "cond_stage_model.") and not same(custom, "model.diffusion_model.")
    fresh = weights("--pretrained_model_path", str(tmp_path / "a.ckpt"), "--unet_initialize_random", "True")
    assert same(fresh, "first_stage_model.") and same(fresh, "cond_stage_model.")
    assert not any(np.array_equal(fresh[k], a[k]) for k in a if k.startswith("model.diffusion_model.")
                   and k.endswith("weight") and np.abs(a[k]).max() > 0)
    with pytest.raises(UserError, match="custom_text_encoder not found"):
        parse_config(base + ["--custom_text_encoder", str(tmp_path / "nope.ckpt")])


def test_loss_scaler_type_static_keeps_the_scale(ws, tmp_path):
    run = TrainRun(parse_config(_standin(ws, tmp_path, "--amp_level", "O2", "--loss_scaler_type", "static",
                                         "--init_loss_scale", "1024", "--max_steps", "2")))
    assert isinstance(run.scaler, ms.amp.StaticLossScaler)
    run.run()
    assert float(run.scaler.scale_value.asnumpy()) == 1024.0
    assert os.path.isfile(tmp_path / "ckpt" / "train_resume.ckpt")

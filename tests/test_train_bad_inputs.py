"""Bad inputs to train_text_to_image.py: each is exit 2 and one stderr line naming the problem, no
traceback, and no output that looks like a result (no checkpoint, no empty output folder). All cases run
in one child interpreter (tests/cli_table.py); the setups live in tests/cli_setups.py (train_*)."""
import pytest

from tests.cli_table import failures, run_table

SCRIPT = "train_text_to_image.py"
BASE = ["--model_config", "{tmp}/standin.yaml", "--data_path", "{tmp}/data", "--output_path", "{tmp}/out",
        "--image_size", "32", "--train_batch_size", "2", "--max_steps", "1", "--jit", "False",
        "--show_progress", "False"]
RECIPE = ["-c", "configs/train/train_config_tiny_vpred.yaml", "--max_steps", "1", "--train_batch_size", "2",
          "--output_path", "{tmp}/out", "--data_path", "{tmp}/data", "--jit", "False", "--show_progress", "False"]
NO_OUTPUT = ["{tmp}/out"]
QUIET = ["--log_level", "logging.ERROR"]


def case(name, extra, expect, setup="train_ok", base=BASE, absent=NO_OUTPUT):
    return dict(name=name, script=SCRIPT, argv=list(base) + list(extra), expect=expect, setup=setup,
                absent=list(absent))


# (flag, bad value, expected text): numeric domains, checked before anything is built
FLAG_CASES = [
    ("start_learning_rate", "nan", "start_learning_rate must be a finite number"),
    ("start_learning_rate", "inf", "start_learning_rate must be a finite number"),
    ("start_learning_rate", "0", "start_learning_rate must be > 0"),
    ("start_learning_rate", "-1e-4", "start_learning_rate must be > 0"),
    ("end_learning_rate", "-1", "end_learning_rate must be >= 0"),
    ("end_learning_rate", "nan", "end_learning_rate must be a finite number"),
    ("train_batch_size", "0", "train_batch_size must be >= 1"),
    ("train_batch_size", "2.5", "bad value for train_batch_size"),
    ("max_steps", "-3", "max_steps must be >= 1"),
    ("epochs", "-1", "epochs must be >= 1"),
    ("image_size", "0", "image_size must be >= 1"),
    ("image_size", "abc", "bad value for image_size"),
    ("ema_decay", "1", "ema_decay must be in [0, 1)"),
    ("ema_decay", "-0.1", "ema_decay must be in [0, 1)"),
    ("attention", "nonsense", "attention must be one of auto | standard | chunked | flash"),
    ("attention_chunk", "0", "bad value for attention_chunk"),
    ("attention_chunk", "-3", "bad value for attention_chunk"),
    ("attention_chunk", "nan", "bad value for attention_chunk"),
    ("snr_gamma", "-5", "snr_gamma must be > 0"),
    ("snr_gamma", "inf", "snr_gamma must be a finite number"),
    ("noise_offset", "nan", "noise_offset must be a finite number"),
    # kohya's objective options (ldm.train.objective_options)
    ("loss_type", "l3", "loss_type must be one of l2 | l1 | huber | smooth_l1"),
    ("huber_schedule", "linear", "huber_schedule must be one of constant | exponential | snr"),
    ("huber_c", "0", "huber_c must be > 0"),
    ("huber_c", "-0.1", "huber_c must be > 0"),
    ("huber_c", "nan", "huber_c must be a finite number"),
    ("huber_scale", "0", "huber_scale must be > 0"),
    ("min_timestep", "-1", "min_timestep must be >= 0"),
    ("max_timestep", "0", "max_timestep must be >= 1"),
    ("max_timestep", "2.5", "bad value for max_timestep"),
    ("ip_noise_gamma", "-0.1", "ip_noise_gamma must be >= 0"),
    ("ip_noise_gamma", "inf", "ip_noise_gamma must be a finite number"),
    ("multires_noise_iterations", "-1", "multires_noise_iterations must be in [0, 16]"),
    ("multires_noise_iterations", "17", "multires_noise_iterations must be in [0, 16]"),
    ("multires_noise_discount", "0", "multires_noise_discount must be in (0, 1]"),
    ("multires_noise_discount", "1.5", "multires_noise_discount must be in (0, 1]"),
    ("adaptive_noise_scale", "nan", "adaptive_noise_scale must be a finite number"),
    ("v_pred_like_loss", "-1", "v_pred_like_loss must be >= 0"),
    ("scale_v_pred_loss_like_noise_pred", "maybe", "bad value for scale_v_pred_loss_like_noise_pred"),
    ("drop_text_prob", "1.5", "drop_text_prob must be in [0, 1]"),
    ("drop_text_prob", "nan", "drop_text_prob must be a finite number"),
    ("init_loss_scale", "0", "init_loss_scale must be > 0"),
    ("loss_scale_factor", "-2", "loss_scale_factor must be >= 1"),
    ("scale_window", "0", "scale_window must be >= 1"),
    ("gradient_accumulation_steps", "0", "gradient_accumulation_steps must be >= 1"),
    ("adam_eps", "0", "adam_eps must be > 0"),
    ("weight_decay", "-0.01", "weight_decay must be >= 0"),
    ("max_grad_norm", "0", "max_grad_norm must be > 0"),
    ("betas", "0.9,1.5", "betas must be two numbers in [0, 1)"),
    ("betas", "0.9", "betas needs two values"),
    ("warmup_steps", "-1", "warmup_steps must be >= 0"),
    ("lora_rank", "0", "lora_rank must be >= 1"),
    ("lora_alpha", "-1", "lora_alpha must be >= 0"),
    ("conv_dim", "-1", "conv_dim must be >= 0"),
    ("conv_alpha", "-1", "conv_alpha must be >= 0"),
    ("conv_alpha", "nan", "conv_alpha must be a finite number"),
    ("lora_scale", "nan", "lora_scale must be a finite number"),
    ("ckpt_save_interval", "0", "ckpt_save_interval must be >= 1"),
    ("ckpt_max_keep", "-1", "ckpt_max_keep must be >= 0"),
    ("log_interval", "0", "log_interval must be >= 1"),
    ("seed", "-1", "seed must be in [0, 2**63)"),
    ("validation_sampling_steps", "0", "validation_sampling_steps must be >= 1"),
    ("validation_guidance_scale", "nan", "validation_guidance_scale must be a finite number"),
    ("min_image_size", "-1", "min_image_size must be >= 0"),
    ("scheduler", "linear", "scheduler must be one of constant | cosine_decay | polynomial_decay | "
                            "cosine_with_restarts, got 'linear'"),
    ("optim", "adamw8bit", "optim must be one of adamw | adam | momentum | sgd | lion | lamb | adafactor | prodigy"),
    ("optimizer_type", "AdamW8bit", "bad value for optimizer_type: 'AdamW8bit' (not supported here; choose one of "
                                    "AdamW, AdaFactor, Lion, Prodigy"),
    ("optimizer_args", "lr", "bad value for optimizer_args"),
    ("unet_lr", "-1", "unet_lr must be >= 0"),
    ("text_encoder_lr", "nan", "text_encoder_lr must be a finite number"),
    ("lr_scheduler_num_cycles", "0", "lr_scheduler_num_cycles must be >= 1"),
]
# kohya-ss's optimizer_args, checked against the chosen optimiser's keys and domains
OPTIMIZER_ARGS_CASES = [
    (["--optim", "prodigy", "--optimizer_args", "d_coeff=2", "safeguard_warmup=True"],
     "optimizer_args: d_coeff not accepted by prodigy; its keys: betas, beta3, eps, weight_decay, decouple, "
     "use_bias_correction, safeguard_warmup, d0, d_coef, growth_rate, slice_p"),
    (["--optimizer_type", "Prodigy", "--optimizer_args", "d_coef=0"], "d_coef of prodigy must be > 0, got 0.0"),
    (["--optim", "lion", "--optimizer_args", "betas=0.9,1.2"], "betas of lion must be two numbers in [0, 1)"),
    (["--optim", "adafactor", "--optimizer_args", "warmup_init=True relative_step=False"],
     "warmup_init=True needs relative_step=True"),
    (["--optim", "adamw", "--optimizer_args", "d_coef=2"], "d_coef not accepted by adamw; its keys: betas, eps, "
                                                          "weight_decay"),
]

CASES = [case(f"--{flag} {value}", [f"--{flag}={value}"], expect) for flag, value, expect in FLAG_CASES] + [
    case(" ".join(extra), extra, expect) for extra, expect in OPTIMIZER_ARGS_CASES] + [
    dict(name="textual inversion: no unet_lr (only the new embeddings train)", script="train_textual_inversion.py",
         argv=["--unet_lr", "1e-4"], expect="unrecognized arguments: --unet_lr", absent=[]),
    case("epochs 0 without max_steps", ["--epochs", "0", "--max_steps", "0"], "set epochs >= 1 or max_steps >= 1"),
    case("validation sampler bogus (validation off)", ["--validation_sampler", "bogus"],
         "validation_sampler 'bogus' is not a sampler"),
    case("recipe: validation sampler bogus", ["--validation_sampler", "bogus", "--validation_steps", "1"],
         "validation_sampler 'bogus'", base=RECIPE),
    case("validation_steps without prompts", ["--validation_steps", "1"], "there is nothing to validate"),
    case("recipe: image_size 30", ["--image_size", "30"], "must be a multiple of 4", base=RECIPE),
    case("tiny-v2: image_size 34", ["--model_config", "configs/tiny-v2.yaml", "--image_size", "34"],
         "must be a multiple of 4"),
    case("LoRA without targets", ["--use_lora", "True", "--lora_ft_unet", "False"], "use_lora needs"),
    case("DoRA without LoRA", ["--use_dora", "True"], "use_dora needs use_lora True"),
    case("conv_alpha without conv_dim", ["--use_lora", "True", "--conv_alpha", "1"], "conv_alpha needs conv_dim"),
    case("rank pattern file missing", ["--use_lora", "True", "--lora_rank_pattern", "{tmp}/nope.yaml"],
         "lora_rank_pattern not found"),
    case("rank pattern: rank 0", ["--use_lora", "True", "--lora_rank_pattern", "{tmp}/pattern.yaml"],
         "rank must be an integer >= 1", setup="train_rank_pattern_rank_zero"),
    case("rank pattern: key matches no layer", ["--use_lora", "True", "--lora_rank_pattern", "{tmp}/pattern.yaml"],
         "1 key(s) match no LoRA layer: 'to_qq'", setup="train_rank_pattern_typo"),
    case("model config missing", ["--model_config", "{tmp}/nope.yaml"], "model_config not found"),
    case("data path missing", ["--data_path", "{tmp}/nodata"], "data_path not found"),
    case("pretrained weights missing", ["--pretrained_model_path", "{tmp}/w.ckpt"], "pretrained_model_path not found"),
    case("resume file missing", ["--resume", "{tmp}/r.ckpt"], "resume checkpoint not found"),
    case("data path is a file", ["--data_path", "{tmp}/data/img_txt.csv"], "data_path is not a folder"),
    # MindONE's recipes ship /path/to/... placeholders: refused by name before anything is created
    case("data path left at MindONE's placeholder", ["--data_path", "{tmp}/data,/path/to/data"],
         "data_path /path/to/data is MindONE's placeholder: set --data_path to your folder",
         absent=NO_OUTPUT + ["/path"]),
    case("output path left at MindONE's placeholder", ["--output_path", "/path/to/save/output_data"],
         "output_path /path/to/save/output_data is MindONE's placeholder: set --output_path to your folder",
         absent=["/path"]),
    case("MindONE recipe as shipped: every placeholder named",
         ["-c", "configs/train/train_config_vanilla_v2_vpred.yaml", "--model_config", "{tmp}/standin.yaml"],
         "pretrained_model_path /path/to/pretrained_model, data_path /path/to/data, output_path "
         "/path/to/save/output_data are MindONE's placeholders: set --pretrained_model_path, --data_path, "
         "--output_path to your own paths", base=[], absent=["/path"]),
    case("recipe: validation steps beyond the schedule", ["--validation_steps", "1", "--validation_sampling_steps",
                                                          "2000"], "at most 1000 steps", base=RECIPE),
    case("validation size the pipeline refuses", ["--validation_steps", "1", "--validation_prompts", "a"],
         "validation images at image_size 32"),
    case("device not in this build", ["--device_target", "GPU"], "device_target GPU is not available"),
    case("pretrained weights not a checkpoint", ["--pretrained_model_path", "{tmp}/data/0.png"],
         "unknown checkpoint format", base=RECIPE),
    case("resume file not a checkpoint", ["--resume", "{tmp}/data/0.png"], "corrupt MindSpore checkpoint"),
    case("batch larger than the data", ["--train_batch_size", "100"], "fewer than one optimiser step needs"),
    case("unknown flag", ["--learning_rate", "1"], "unrecognized arguments"),
    case("non-UTF-8 img_txt.csv", [], "img_txt.csv line 2 is not UTF-8", setup="train_csv_not_utf8"),
    case("ragged CSV row: too many fields", [], "img_txt.csv line 3: 3 field(s)", setup="train_csv_too_many_fields"),
    case("ragged CSV row: too few fields", [], "img_txt.csv line 3: 1 field(s)", setup="train_csv_too_few_fields"),
    case("CSV without text column", [], "lacks column(s) text", setup="train_csv_no_text_column"),
    case("CSV header only", [], "no usable images", setup="train_csv_header_only"),
    case("CSV names missing images", [], "2 missing", setup="train_csv_missing_images"),
    case("no img_txt.csv (images without any caption)", [], "no captions in", setup="train_no_csv"),
    case("only a truncated JPEG", [], "1 corrupt or truncated", setup="train_only_truncated_jpeg"),
    case("only too small images", [], "too small", setup="train_only_small_images"),
    case("recipe with a duplicate key", ["-c", "{tmp}/recipe.yaml"], "duplicate key 'epochs'",
         setup="train_recipe_duplicate_key"),
    case("recipe not UTF-8", ["-c", "{tmp}/recipe.yaml"], "is not UTF-8", setup="train_recipe_not_utf8"),
    case("recipe unknown key", ["-c", "{tmp}/recipe.yaml"], "unknown key(s) learning_rate",
         setup="train_recipe_unknown_key"),
    case("recipe not a mapping", ["-c", "{tmp}/recipe.yaml"], "does not hold a mapping",
         setup="train_recipe_not_mapping"),
    case("output path is a file", [], "is a file", setup="train_output_is_file", absent=["{tmp}/out/ckpt"]),
    case("output path below a file", ["--output_path", "{tmp}/out/run1"], "is below a file",
         setup="train_output_is_file", absent=["{tmp}/out/run1"]),
    case("read-only file system", QUIET, "Read-only file system", setup="train_read_only"),
    # these fail after training started: INFO lines are off so the error is the only stderr line
    case("disk full at the first checkpoint", QUIET, "No space left on device", setup="train_disk_full"),
    case("learning rate inf in float32", ["--start_learning_rate", "1e39"], "start_learning_rate must be a finite"),
    case("huge learning rate: step 2 loss overflows", QUIET + ["--start_learning_rate", "1e38", "--max_steps", "2"],
         "training diverged at step 2 (loss"),
    case("huge noise offset: loss overflows", QUIET + ["--noise_offset", "1e38"],
         "training diverged at step 1 (loss"),
    case("recipe: NaN learning rate", ["--start_learning_rate", "nan"], "start_learning_rate must be a finite",
         base=RECIPE),
]

# kohya's objective options: combinations that are undefined for the run's model (the stand-in is a v model;
# --prediction_type eps makes it an eps one), each one line naming both settings
EPS = ["--prediction_type", "eps"]
CASES += [
    case("eps model with zero terminal SNR", EPS + ["--rescale_zero_snr", "True"],
         "prediction_type eps (--prediction_type) with rescale_zero_snr True"),
    case("min_timestep = max_timestep", ["--min_timestep", "500", "--max_timestep", "500"],
         "min_timestep 500 must be below max_timestep 500"),
    case("min_timestep at the model's T", ["--min_timestep", "1000"], "min_timestep 1000 must be below max_timestep 1000"),
    case("max_timestep beyond the model's T", ["--max_timestep", "1001"],
         "max_timestep 1001 is beyond the model's 1000 training timesteps"),
    case("scale_v_pred_loss_like_noise_pred on an eps model", EPS + ["--scale_v_pred_loss_like_noise_pred", "True"],
         "scale_v_pred_loss_like_noise_pred needs prediction_type v, got eps"),
    case("v_pred_like_loss on a v model", ["--v_pred_like_loss", "0.1"],
         "v_pred_like_loss needs prediction_type eps, got v (the model config's prediction_type)"),
    case("adaptive_noise_scale without noise_offset", ["--adaptive_noise_scale", "0.1"],
         "adaptive_noise_scale needs noise_offset"),
    case("noise_offset_random_strength without noise_offset", ["--noise_offset_random_strength", "True"],
         "noise_offset_random_strength needs noise_offset"),
    case("ip_noise_gamma_random_strength without ip_noise_gamma", ["--ip_noise_gamma_random_strength", "True"],
         "ip_noise_gamma_random_strength needs ip_noise_gamma"),
    case("Huber threshold whose square overflows float32", ["--loss_type", "huber", "--huber_schedule", "constant",
                                                            "--huber_c", "1e20"], "not a usable float32"),
    case("v_pred_like_loss weight overflows float32", EPS + ["--v_pred_like_loss", "1e38"],
         "v_pred_like_loss 1e+38: the loss weight at t=488 is not finite in float32"),
]
KOHYA_DB = ["-c", "configs/train/train_config_dreambooth_v2.yaml", "--model_config", "configs/tiny-v2-vpred.yaml",
            "--instance_data_dir", "{tmp}/inst", "--with_prior_preservation", "False", "--output_path", "{tmp}/out",
            "--image_size", "32", "--max_steps", "1", "--show_progress", "False", "--pretrained_model_path", ""]
KOHYA_TI = ["-c", "configs/train/train_config_textual_inversion_v2.yaml", "--model_config", "configs/tiny-v2.yaml",
            "--train_data_dir", "{tmp}/inst", "--output_path", "{tmp}/out", "--image_size", "32",
            "--image_filter_size", "16", "--max_steps", "4", "--show_progress", "False"]
CASES += [dict(case(name, extra, expect, setup="data_instances", base=base), script=script) for name, script, base,
          extra, expect in [
              ("dreambooth: v_pred_like_loss on its v model", "train_dreambooth.py", KOHYA_DB,
               ["--v_pred_like_loss", "0.5"], "v_pred_like_loss needs prediction_type eps, got v"),
              ("dreambooth: huber_c 0", "train_dreambooth.py", KOHYA_DB, ["--huber_c", "0"], "huber_c must be > 0"),
              ("textual inversion: its eps model with zero terminal SNR", "train_textual_inversion.py", KOHYA_TI,
               ["--rescale_zero_snr", "True"], "prediction_type eps (the model config's prediction_type) with "
                                               "rescale_zero_snr True"),
              ("textual inversion: loss_type l3", "train_textual_inversion.py", KOHYA_TI, ["--loss_type", "l3"],
               "loss_type must be one of"),
              ("textual inversion: max_timestep 2000", "train_textual_inversion.py", KOHYA_TI,
               ["--max_timestep", "2000"], "max_timestep 2000 is beyond"),
          ]]


@pytest.fixture(scope="module")
def results():
    return run_table(CASES)


def test_every_bad_input_is_one_line_and_exit_2(results):
    assert len(CASES) >= 40
    assert failures(CASES, results) == []


"""train_controlnet.py: every bad input is one stderr line with exit 2 and leaves no output folder (a table run in
one child interpreter, tests/cli_table.py; the setups are tests/cli_setups.py's cn_train_*)."""
from cli_table import failures, run_table

SCRIPT = "train_controlnet.py"
BASE = ["--model_config", "{repo}/configs/tiny-shapes-controlnet.yaml", "--pretrained_model_path",
        "{repo}/models/tiny_shapes_base.ckpt", "--image_size", "32", "--train_batch_size", "1", "--max_steps", "1",
        "--output_path", "{tmp}/out", "--show_progress", "False"]
DATA = ["--data_path", "{tmp}/data"]


def case(name, extra, expect, setup="cn_train_ok", data=DATA, base=BASE):
    return dict(name=name, script=SCRIPT, argv=base + data + extra, expect=expect, absent=["{tmp}/out"], setup=setup)


CASES = [
    # ---- data
    case("control image missing", [], "has no control image: ", setup="cn_train_control_missing"),
    case("control image of another aspect ratio", [], "another aspect ratio", setup="cn_train_control_aspect"),
    case("control image not an image", [], "corrupt or truncated", setup="cn_train_control_corrupt"),
    case("image not an image", [], "data/target/00001.png: corrupt or truncated",
         setup="cn_train_image_corrupt"),
    case("no control images", [], "no control images (looked for prompt.json", setup="cn_train_no_controls"),
    case("metadata.jsonl without a control column", [], "no control image (looked for",
         setup="cn_train_jsonl_no_control"),
    case("prompt.json not JSON", [], "not valid JSON", setup="cn_train_prompt_bad_json"),
    case("prompt.json without source", [], "no 'source' key", setup="cn_train_prompt_no_source"),
    case("openpose ids match no image", [], "no caption's image_id names an image", setup="cn_train_openpose_no_match"),
    case("data_path missing", [], "data_path not found", data=["--data_path", "{tmp}/nowhere"]),
    # ---- options
    case("use_lora", ["--use_lora", "True"], "use_lora: ControlNet training trains the whole ControlNet"),
    case("prediction_type of another objective", ["--prediction_type", "v"],
         "the base UNet is frozen and predicts eps"),
    case("rescale_zero_snr", ["--rescale_zero_snr", "True"], "the frozen base model's schedule"),
    case("controlnet_path missing", ["--controlnet_path", "{tmp}/nowhere.ckpt"], "controlnet_path not found"),
    case("canny thresholds", ["--detector", "canny", "--canny_low", "300"], "canny_low 300 is above canny_high 200"),
    case("unknown detector", ["--detector", "hed"], "detector must be one of none | canny"),
    case("unknown controlnet_mode", ["--controlnet_mode", "depth"], "controlnet_mode must be one of"),
    case("recompute flags disagree", ["--use_recompute", "True", "--recompute", "False"], "disagree"),
    case("validation without control images", ["--validation_steps", "1", "--validation_prompts", "a red circle"],
         "validation_prompts need validation_control_images"),
    case("validation control image missing", ["--validation_steps", "1", "--validation_prompts", "a red circle",
                                              "--validation_control_images", "{tmp}/nowhere.png"], "nowhere.png"),
    case("hint encoder of another factor", ["--model_config", "{repo}/configs/tiny-shapes-v2.yaml"],
         "hint encoder downsamples by 8"),
    case("MindONE recipe placeholders", ["-c", "{repo}/configs/train/sd15_controlnet_canny.yaml"],
         "MindONE's placeholder", data=[], base=[]),
    case("ControlNet for another base", ["--controlnet_path", "{tmp}/other_base.ckpt"], "was made for",
         setup="cn_train_other_base"),
]


def test_bad_inputs_are_one_line_exit_2():
    results = run_table(CASES, timeout=600)
    assert not failures(CASES, results), "\n".join(failures(CASES, results))

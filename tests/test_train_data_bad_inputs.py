"""Bad data layouts and data options of the three training CLIs: each is exit 2 and one stderr line
naming the problem, before a model is built, with no output folder left. All cases run in one child
interpreter (tests/cli_table.py); the setups are tests/cli_setups.py's data_* functions."""
import os

import pytest

from tests.cli_table import failures, run_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")
BASE = ["--model_config", "{tmp}/standin.yaml", "--data_path", "{tmp}/data", "--output_path", "{tmp}/out",
        "--image_size", "32", "--train_batch_size", "1", "--max_steps", "1", "--jit", "False",
        "--show_progress", "False"]
TINY_BASE = ["--model_config", TINY] + BASE[2:]
BUCKETS = ["--enable_bucket", "True", "--min_bucket_reso", "16", "--max_bucket_reso", "64"]
NO_OUTPUT = ["{tmp}/out"]


def case(name, extra, expect, setup="data_captions_ok", base=BASE, script="train_text_to_image.py"):
    return dict(name=name, script=script, argv=list(base) + list(extra), expect=expect, setup=setup,
                absent=NO_OUTPUT)


CASES = [
    # layouts
    case("empty folder", [], "no images in", setup="data_empty"),
    case("images without any caption file", [], "no captions in", setup="data_no_captions"),
    case("require_captions with one missing", ["--require_captions", "True"], "has no caption file",
         setup="data_one_caption_missing"),
    case("caption file not UTF-8", [], "b.txt line 2 is not UTF-8 text (byte 0xe9)", setup="data_caption_not_utf8"),
    case("metadata.jsonl bad JSON", [], "metadata.jsonl line 2", setup="data_jsonl_bad_json"),
    case("metadata.jsonl line not an object", [], "metadata.jsonl line 2", setup="data_jsonl_not_object"),
    case("metadata.jsonl without file_name", [], "file_name", setup="data_jsonl_no_file_name"),
    case("metadata.jsonl path leaves the folder", [], "metadata.jsonl line 1", setup="data_jsonl_escapes"),
    case("metadata.jsonl without the caption column", [], "metadata.jsonl line 1", setup="data_jsonl_no_caption"),
    case("metadata.jsonl named column missing", ["--caption_column", "prompt2"], "prompt2",
         setup="data_jsonl_no_caption"),
    case("repeat folder 0_dog", [], "repeat folder", setup="data_repeat_zero"),
    case("repeat folder -1_dog", [], "repeat folder", setup="data_repeat_negative"),
    case("empty repeat folder", [], "3_cat", setup="data_repeat_empty"),
    case("caption_extension empty", ["--caption_extension", ""], "caption_extension is empty"),
    # caption options
    case("keep_tokens -1", ["--keep_tokens", "-1"], "keep_tokens must be >= 0"),
    case("keep_tokens 1.5", ["--keep_tokens", "1.5"], "bad value for keep_tokens"),
    case("caption_tag_dropout_rate 1.5", ["--caption_tag_dropout_rate", "1.5"], "caption_tag_dropout_rate must be in"),
    case("caption_tag_dropout_rate nan", ["--caption_tag_dropout_rate", "nan"], "caption_tag_dropout_rate must be a finite"),
    case("caption_dropout_every_n_epochs -2", ["--caption_dropout_every_n_epochs", "-2"],
         "caption_dropout_every_n_epochs must be >= 0"),
    case("caption_separator empty", ["--caption_separator", ""], "caption_separator is empty"),
    # buckets
    case("min > max", ["--enable_bucket", "True", "--min_bucket_reso", "64", "--max_bucket_reso", "32"],
         "leave no bucket", base=TINY_BASE),
    case("steps not the model's multiple", BUCKETS + ["--bucket_reso_steps", "6"],
         "must be a multiple of the model's size multiple 4", base=TINY_BASE),
    case("min not a multiple of steps", ["--enable_bucket", "True", "--min_bucket_reso", "18",
                                         "--max_bucket_reso", "64"], "min_bucket_reso 18", base=TINY_BASE),
    case("image_size outside the buckets", ["--enable_bucket", "True", "--min_bucket_reso", "40",
                                            "--max_bucket_reso", "64"], "image_size 32 must lie within", base=TINY_BASE),
    case("min_bucket_reso 0", ["--enable_bucket", "True", "--min_bucket_reso", "0"], "min_bucket_reso must be >= 1",
         base=TINY_BASE),
    case("image too small with no_upscale", BUCKETS + ["--bucket_no_upscale", "True", "--filter_small_size", "False"],
         "too small for every bucket", setup="data_small_image", base=TINY_BASE),
    # validation and logs
    case("validation_split 1", ["--validation_split", "1", "--validation_steps", "1"], "validation_split must be in [0, 1)"),
    case("validation_split nan", ["--validation_split", "nan", "--validation_steps", "1"],
         "validation_split must be a finite"),
    case("validation_split leaves nothing", ["--validation_split", "0.5", "--validation_steps", "1"],
         "leaves no image to train on", setup="data_one_image"),
    case("validation split and folder", ["--validation_split", "0.5", "--validation_data_path", "{tmp}/data",
                                          "--validation_steps", "1"], "not both"),
    case("validation folder missing", ["--validation_data_path", "{tmp}/nope", "--validation_steps", "1"],
         "validation_data_path not found"),
    case("validation set without validation_steps", ["--validation_split", "0.5"], "needs validation_steps"),
    case("log_with wandb", ["--log_with", "wandb"], "log_with must be one of none | tensorboard"),
]

DB = ["-c", os.path.join(REPO, "configs", "train", "train_config_dreambooth_v2.yaml"), "--model_config", TINY,
      "--instance_data_dir", "{tmp}/inst", "--with_prior_preservation", "False", "--output_path", "{tmp}/out",
      "--image_size", "32", "--max_steps", "1", "--show_progress", "False", "--pretrained_model_path", ""]
TI = ["-c", os.path.join(REPO, "configs", "train", "train_config_textual_inversion_v2.yaml"), "--model_config",
      os.path.join(REPO, "configs", "tiny-v2.yaml"), "--train_data_dir", "{tmp}/inst", "--output_path", "{tmp}/out",
      "--image_size", "32", "--image_filter_size", "16", "--max_steps", "4", "--show_progress", "False"]
CASES += [
    case("dreambooth: min > max", ["--enable_bucket", "True", "--min_bucket_reso", "64", "--max_bucket_reso", "32"],
         "leave no bucket", setup="data_instances", base=DB, script="train_dreambooth.py"),
    case("dreambooth: caption options are text-to-image's", ["--shuffle_caption", "True"],
         "unrecognized arguments: --shuffle_caption", setup="data_instances", base=DB, script="train_dreambooth.py"),
    case("textual inversion: steps 6", BUCKETS + ["--bucket_reso_steps", "6"], "must be a multiple",
         setup="data_instances", base=TI, script="train_textual_inversion.py"),
    case("textual inversion: log_with", ["--log_with", "wandb"], "log_with must be one of",
         setup="data_instances", base=TI, script="train_textual_inversion.py"),
]


@pytest.fixture(scope="module")
def results():
    return run_table(CASES)


def test_every_bad_data_input_is_one_line_and_exit_2(results):
    assert len(CASES) >= 35
    assert failures(CASES, results) == []

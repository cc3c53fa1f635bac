"""Bad command lines for the evaluation, dataset and conversion CLIs: each must give exit 2, exactly one
stderr line naming the problem, no traceback, and leave no output that claims to be complete.

One table, run in one child interpreter by tests/cli_table.py (MindSpore is imported once for all cases).
Corrupt weight *contents* of the torch/safetensors/ckpt readers are tests/test_weight_fuzz.py's job;
here a random-bytes file only checks that the CLIs turn whatever the reader says into one line.
"""
import os

from tests.cli_table import failures, run_table

FIX = "{repo}/tests/fixtures/eval"
REAL, GEN = f"{FIX}/images/real", f"{FIX}/images/gen"
CLIP_IMAGES, CLIP_DIR = f"{FIX}/images/clip", f"{FIX}/clip_tiny"
WEIGHTS = f"{FIX}/fid_inception_random.pth"
TINY_V2 = "{repo}/configs/tiny-v2.yaml"
PIPE_SD1 = "{repo}/tests/fixtures/pipeline/sd1"

FID, CLIP, PROMPTS = "eval/eval_fid.py", "eval/eval_clip_score.py", "scripts/eval_prompts.py"
CONVERT, PARAMS = "scripts/convert_weights.py", "scripts/list_params.py"
SHAPES, SCORE = "datasets/synthetic_shapes.py", "scripts/score_shapes.py"


def case(name, script, argv, expect, setup=None, absent=()):
    return {"name": name, "script": script, "argv": argv, "expect": expect, "setup": setup,
            "absent": list(absent)}


def fid(*extra):
    return ["--real_dir", REAL, "--gen_dir", GEN, "--ckpt_path", WEIGHTS, "--no_cache", *extra]


def clip(*extra):
    return ["--image_path", CLIP_IMAGES, "--prompt", "a red circle", "--load_checkpoint", CLIP_DIR,
            "--output_csv", "{tmp}/scores.csv", *extra]


def prompts(*extra):
    return ["--data_path", f"{CLIP_IMAGES}/prompts.txt", "--output_path", "{tmp}", "--skip_generate", *extra]


def shapes(*extra):
    return ["--output_path", "{tmp}/shapes", "--num_train", "2", "--num_test", "2", "--size", "16", *extra]


SHAPES_DONE = ("{tmp}/shapes/test_prompts.txt", "{tmp}/shapes/train/img_txt.csv")

CASES = [
    # ---- eval/eval_fid.py
    case("fid missing real_dir", FID, ["--real_dir", "{tmp}/nope", "--gen_dir", GEN, "--ckpt_path", WEIGHTS],
         "image folder not found"),
    case("fid empty gen_dir", FID, ["--real_dir", REAL, "--gen_dir", "{tmp}/empty", "--ckpt_path", WEIGHTS],
         "no images", setup="empty_folder"),
    case("fid corrupt images", FID, ["--real_dir", "{tmp}/bad", "--gen_dir", GEN, "--ckpt_path", WEIGHTS],
         "cannot read image", setup="corrupt_images"),
    case("fid batch_size 0", FID, fid("--batch_size", "0"), "--batch_size"),
    case("fid batch_size not a number", FID, fid("--batch_size", "many"), "--batch_size"),
    case("fid kid_subsets negative", FID, fid("--kid", "--kid_subsets", "-3"), "--kid_subsets"),
    case("fid kid_subset_size 1", FID, fid("--kid", "--kid_subset_size", "1"), "--kid_subset_size"),
    case("fid unknown fid_method", FID, fid("--fid_method", "exact"), "--fid_method"),
    case("fid missing weights", FID, ["--real_dir", REAL, "--gen_dir", GEN, "--ckpt_path", "{tmp}/w.pth"],
         "weights not found"),
    case("fid weights path is a folder", FID, ["--real_dir", REAL, "--gen_dir", GEN, "--ckpt_path", "{tmp}"],
         "is a folder"),
    case("fid random-bytes weights", FID, ["--real_dir", REAL, "--gen_dir", GEN, "--ckpt_path", "{tmp}/inception.pth",
                                           "--no_cache", "--output_json", "{tmp}/fid.json"],
         "inception.pth", setup="random_bytes_weights", absent=["{tmp}/fid.json"]),
    case("fid output_json below a file", FID, fid("--output_json", "{tmp}/out/fid.json"), "is a file",
         setup="file_named_out"),
    case("fid unknown flag", FID, fid("--num_images", "5"), "unrecognized arguments"),
    # ---- eval/eval_clip_score.py
    case("clip non-UTF-8 prompt file", CLIP, clip("--prompt", "{tmp}/prompts.txt"), "not UTF-8",
         setup="non_utf8_prompts", absent=["{tmp}/scores.csv"]),
    case("clip prompt count does not fit", CLIP, clip("--prompt", "{tmp}/four.txt"), "cannot be matched",
         setup="four_prompts"),
    case("clip empty prompt file", CLIP, clip("--prompt", "{tmp}/empty.txt"), "no prompts", setup="empty_prompts"),
    case("clip manifest not JSON", CLIP, clip("--image_path", "{tmp}/imgs", "--prompt", "{tmp}/imgs/manifest.json"),
         "not valid JSON", setup="images_with_bad_manifest"),
    case("clip manifest.csv not UTF-8", CLIP, clip("--image_path", "{tmp}/imgs2", "--prompt",
                                                   "{tmp}/imgs2/manifest.csv"),
         "not UTF-8", setup="images_with_bad_manifest"),
    case("clip random-bytes .pt", CLIP, clip("--load_checkpoint", "{tmp}/ViT-B-32.pt"), "ViT-B-32.pt",
         setup="random_bytes_weights", absent=["{tmp}/scores.csv"]),
    case("clip random-bytes .ckpt", CLIP, clip("--load_checkpoint", "{tmp}/clip.ckpt"), "clip.ckpt",
         setup="random_bytes_weights", absent=["{tmp}/scores.csv"]),
    case("clip HF folder, random-bytes safetensors", CLIP, clip("--load_checkpoint", "{tmp}/hf"),
         "model.safetensors", setup="random_bytes_weights", absent=["{tmp}/scores.csv"]),
    case("clip TorchScript .pt without a storage record", CLIP, clip("--load_checkpoint", "{tmp}/ViT-B-32.pt"),
         "ViT-B-32.pt: TorchScript archive is missing openai_tiny_jit/data/7 (storage record 7 of data.pkl)",
         setup="openai_jit_incomplete", absent=["{tmp}/scores.csv"]),
    case("clip TorchScript .pt without data.pkl", CLIP, clip("--load_checkpoint", "{tmp}/ViT-B-16.pt"),
         "ViT-B-16.pt: TorchScript archive without data.pkl", setup="openai_jit_incomplete",
         absent=["{tmp}/scores.csv"]),
    case("clip TorchScript .pt with a truncated data.pkl", CLIP, clip("--load_checkpoint", "{tmp}/ViT-L-14.pt"),
         "ViT-L-14.pt: openai_tiny_jit/data.pkl (the module tree) is truncated", setup="openai_jit_incomplete",
         absent=["{tmp}/scores.csv"]),
    case("clip HF config.json not JSON", CLIP, clip("--load_checkpoint", "{tmp}/hf"), "config.json",
         setup="hf_folder_bad_config"),
    case("clip folder without config.json", CLIP, clip("--load_checkpoint", "{tmp}/noconf"), "config.json",
         setup="hf_folder_bad_config"),
    case("clip missing weights", CLIP, clip("--load_checkpoint", "{tmp}/ViT-L-14.pt"), "weights not found"),
    case("clip batch_size nan", CLIP, clip("--batch_size", "nan"), "--batch_size"),
    case("clip unknown model_name", CLIP, clip("--model_name", "ViT-H/14"), "--model_name"),
    case("clip output_csv below a file", CLIP, clip("--output_csv", "{tmp}/out/s.csv"), "is a file",
         setup="file_named_out"),
    # ---- scripts/eval_prompts.py
    case("prompts non-UTF-8 data_path", PROMPTS, ["--data_path", "{tmp}/prompts.txt", "--output_path", "{tmp}/run",
                                                  "--real_dir", REAL],
         "not UTF-8", setup="non_utf8_prompts", absent=["{tmp}/run/results.md", "{tmp}/run/results.json"]),
    case("prompts missing data_path", PROMPTS, ["--data_path", "{tmp}/none.txt", "--output_path", "{tmp}/run",
                                                "--real_dir", REAL], "prompt file not found"),
    case("prompts empty prompt file", PROMPTS, ["--data_path", "{tmp}/empty.txt", "--output_path", "{tmp}/run",
                                                "--real_dir", REAL], "no prompts", setup="empty_prompts"),
    case("prompts output_path is a file", PROMPTS, ["--data_path", f"{CLIP_IMAGES}/prompts.txt", "--output_path",
                                                    "{tmp}/out", "--real_dir", REAL], "is a file",
         setup="file_named_out"),
    case("prompts nothing to evaluate", PROMPTS, prompts(), "nothing to evaluate"),
    case("prompts n_samples 0", PROMPTS, prompts("--real_dir", REAL, "--n_samples", "0"), "--n_samples"),
    case("prompts batch_size -1", PROMPTS, prompts("--real_dir", REAL, "--batch_size", "-1"), "--batch_size"),
    case("prompts skip_generate without a run", PROMPTS, prompts("--real_dir", REAL, "--output_path", "{tmp}/run"),
         "does not exist"),
    case("prompts unknown clip_model_name", PROMPTS, prompts("--clip_checkpoint", CLIP_DIR, "--clip_model_name",
                                                             "RN50"), "--clip_model_name"),
    case("prompts random-bytes CLIP", PROMPTS, prompts("--clip_checkpoint", "{tmp}/ViT-B-32.pt"), "ViT-B-32.pt",
         setup="random_bytes_weights"),
    # ---- scripts/convert_weights.py
    case("convert missing source", CONVERT, ["--source", "{tmp}/x.ckpt", "--target", "{tmp}/o.ckpt"], "not found",
         absent=["{tmp}/o.ckpt"]),
    case("convert no source flag", CONVERT, ["--target", "{tmp}/o.ckpt"], "--source"),
    case("convert wrong dtype", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.ckpt", "--dtype", "bf16"],
         "--dtype", absent=["{tmp}/o.ckpt"]),
    case("convert fp16 to diffusers", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.safetensors",
                                                "--to", "diffusers", "--dtype", "fp16"], "--dtype"),
    case("convert wrong --to", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.ckpt", "--to", "onnx"], "--to"),
    case("convert target inside a file", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/out/o.ckpt"],
         "is a file", setup="file_named_out"),
    case("convert diffusers target is a file", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/out",
                                                         "--to", "diffusers"], "is a file", setup="file_named_out"),
    case("convert target is a folder", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/empty"], "is a folder",
         setup="empty_folder"),
    case("convert target not .ckpt", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.bin"], ".ckpt",
         absent=["{tmp}/o.bin"]),
    case("convert unknown layout folder", CONVERT, ["--source", "{tmp}/layout", "--target", "{tmp}/o.ckpt"],
         "not a diffusers", setup="unknown_layout_folder", absent=["{tmp}/o.ckpt"]),
    case("convert read-only target folder", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.ckpt",
                                                      "--config_out", "{tmp}/o.yaml"],
         "Read-only file system", setup="read_only_folder", absent=["{tmp}/o.ckpt", "{tmp}/o.yaml"]),
    case("convert missing config", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.ckpt", "--config",
                                             "{tmp}/none.yaml"], "none.yaml", absent=["{tmp}/o.ckpt"]),
    case("convert config_out inside a file", CONVERT, ["--source", PIPE_SD1, "--target", "{tmp}/o.ckpt",
                                                       "--config_out", "{tmp}/out/c.yaml"], "is a file",
         setup="file_named_out", absent=["{tmp}/o.ckpt"]),
    # ---- scripts/list_params.py
    case("list_params missing config", PARAMS, ["--config", "{tmp}/missing.yaml"], "missing.yaml"),
    case("list_params non-UTF-8 config", PARAMS, ["--config", "{tmp}/bad.yaml"], "bad.yaml", setup="non_utf8_yaml"),
    case("list_params no --config", PARAMS, [], "--config"),
    case("list_params config is a folder", PARAMS, ["--config", "{tmp}"], "config file"),
    # ---- datasets/synthetic_shapes.py
    case("shapes size not multiple of 8", SHAPES, shapes("--size", "30"), "--size", absent=SHAPES_DONE),
    case("shapes size negative", SHAPES, shapes("--size", "-8"), "--size", absent=SHAPES_DONE),
    case("shapes size huge", SHAPES, shapes("--size", "800000"), "--size", absent=SHAPES_DONE),
    case("shapes num_train 0", SHAPES, shapes("--num_train", "0"), "--num_train", absent=SHAPES_DONE),
    case("shapes num_test not a number", SHAPES, shapes("--num_test", "1e3"), "--num_test", absent=SHAPES_DONE),
    case("shapes output_path is a file", SHAPES, ["--output_path", "{tmp}/out", "--num_train", "2", "--num_test", "2"],
         "is a file", setup="file_named_out"),
    case("shapes output_path below a file", SHAPES, ["--output_path", "{tmp}/out/shapes", "--num_train", "2"],
         "is a file", setup="file_named_out"),
    case("shapes disk full", SHAPES, shapes(), "No space left", setup="shapes_disk_full",
         absent=SHAPES_DONE + ("{tmp}/shapes/test/img_txt.csv",)),
    case("shapes read-only file system", SHAPES, shapes(), "Read-only file system", setup="read_only_folder",
         absent=SHAPES_DONE),
    # ---- scripts/score_shapes.py
    case("score json_out on a full disk", SCORE, ["--output_path", "{tmp}/run", "--json_out", "{tmp}/run/s.json"],
         "No space left", setup="scored_run_disk_full", absent=["{tmp}/run/s.json"]),
    case("score missing output_path", SCORE, ["--output_path", "{tmp}/nope"], "not a folder"),
    case("score no manifest", SCORE, ["--output_path", "{tmp}/nomanifest"], "no manifest",
         setup="shapes_run_folders"),
    case("score manifest not UTF-8", SCORE, ["--output_path", "{tmp}/latin1"], "manifest.jsonl",
         setup="shapes_run_folders"),
    case("score record without prompt", SCORE, ["--output_path", "{tmp}/noprompt"], "prompt",
         setup="shapes_run_folders"),
    case("score min_colour nan", SCORE, ["--output_path", "{tmp}", "--min_colour", "nan"], "--min_colour"),
    case("score min_shape above 1", SCORE, ["--output_path", "{tmp}", "--min_shape", "1.5"], "--min_shape"),
    case("score json_out below a file", SCORE, ["--output_path", "{tmp}/nomanifest", "--json_out", "{tmp}/out/s.json"],
         "is a file", setup="file_named_out"),
]


def test_bad_inputs_give_exit_2_and_one_line():
    results = run_table(CASES)
    bad = failures(CASES, results)
    assert not bad, f"{len(bad)} of {len(CASES)} cases:\n" + "\n".join(bad)


def test_table_covers_every_cli():
    scripts = {c["script"] for c in CASES}
    assert scripts == {FID, CLIP, PROMPTS, CONVERT, PARAMS, SHAPES, SCORE}
    assert len(CASES) >= 25
    assert all(os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(__file__)), s)) for s in scripts)

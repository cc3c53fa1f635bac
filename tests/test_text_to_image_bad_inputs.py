"""text_to_image.py refuses every bad input with one clear line: a table of bad command lines run in one
child interpreter (tests/cli_table.py): exit 2, exactly one stderr line naming the problem, no traceback,
and no output left that claims to be complete. Almost every case must fail before a model is built.

The read-only and full-disk cases need ``mount -t tmpfs`` (root in a container usually may); where it
fails they are skipped with the reason. Root ignores permission bits, so the chmod 0555 case runs only
for other users.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_table import REPO, failures, run_table

SCRIPT = "text_to_image.py"
BASE = ["--config", "{repo}/configs/tiny-shapes-v2.yaml", "--ckpt_path", "{repo}/models/tiny_shapes_base.ckpt",
        "--W", "32", "--H", "32", "--sampling_steps", "3", "--n_iter", "1", "--n_samples", "1"]
OUT = ["--output_path", "{tmp}/out"]
NOTHING = ["{tmp}/out"]          # the common promise: no output folder at all


def case(name, extra, expect, setup=None, absent=NOTHING, out=True):
    c = dict(name=name, script=SCRIPT, argv=BASE + extra + (OUT if out else []), expect=expect,
             absent=list(absent))
    if setup:
        c["setup"] = setup
    return c


INIT = ["--init_image", "{tmp}/init.png"]
CASES = [
    # ---- numeric domains
    case("scale nan", ["--scale", "nan"], "--scale must be a finite number"),
    case("scale inf", ["--scale", "inf"], "--scale must be a finite number"),
    case("scale -inf", ["--scale=-inf"], "--scale must be a finite number"),
    case("scale huge", ["--scale", "1e39"], "--scale must be in [-1000, 1000]"),
    case("scale text", ["--scale", "high"], "argument --scale: invalid float value"),
    case("attention nonsense", ["--attention", "nonsense"], "argument --attention: invalid choice: 'nonsense'"),
    case("attention_chunk 0", ["--attention_chunk", "0"], "--attention_chunk must be in [1, inf]"),
    case("attention_chunk negative", ["--attention_chunk=-3"], "--attention_chunk must be in [1, inf]"),
    case("attention_chunk nan", ["--attention_chunk", "nan"], "argument --attention_chunk: invalid int value"),
    case("attention in the config", ["--config", "{tmp}/bad_attention.yaml"], "unet_config attention 'nonsense'",
         "t2i_config_bad_attention"),
    case("ddim_eta nan", ["--ddim_eta", "nan"], "--ddim_eta must be a finite number"),
    case("ddim_eta inf", ["--ddim_eta", "inf"], "--ddim_eta must be a finite number"),
    case("ddim_eta negative", ["--ddim_eta", "-0.5"], "--ddim_eta must be in [0, 100]"),
    case("guidance_rescale 1.5", ["--guidance_rescale", "1.5"], "--guidance_rescale must be in [0, 1]"),
    case("guidance_rescale negative", ["--guidance_rescale", "-0.1"], "--guidance_rescale must be in [0, 1]"),
    case("guidance_rescale nan", ["--guidance_rescale", "nan"], "--guidance_rescale must be a finite"),
    case("strength 0", INIT + ["--strength", "0"], "--strength must be in (0, 1]", "t2i_init_png"),
    case("strength 1.5", INIT + ["--strength", "1.5"], "--strength must be in (0, 1]", "t2i_init_png"),
    case("strength nan", INIT + ["--strength", "nan"], "--strength must be a finite", "t2i_init_png"),
    case("strength without init image", ["--strength", "-1"], "--strength must be in (0, 1]"),
    case("strength leaves no step", INIT + ["--strength", "0.1"], "leaves no step to run", "t2i_init_png"),
    case("lora_scale nan", ["--lora_scale", "nan"], "--lora_scale must be a finite number"),
    case("lora_scale inf", ["--lora_scale", "inf"], "--lora_scale must be a finite number"),
    case("lora_rank 0", ["--lora_rank", "0"], "--lora_rank must be in [1, inf]"),
    case("seed negative", ["--seed", "-1"], "--seed must be in [0, 9223372036854775807], got -1"),
    case("seed past numpy", ["--seed", str(2 ** 63)], "--seed must be in [0, "),
    case("seed + images past numpy", ["--seed", str(2 ** 63 - 1), "--n_samples", "2"], "past numpy's limit"),
    case("seed text", ["--seed", "lucky"], "argument --seed: invalid int value"),
    case("n_iter 0", ["--n_iter", "0"], "--n_iter must be in [1, inf]"),
    case("n_samples 0", ["--n_samples", "0"], "--n_samples must be in [1, inf]"),
    case("n_samples -3", ["--n_samples", "-3"], "--n_samples must be in [1, inf]"),
    case("n_rows -1", ["--n_rows", "-1"], "--n_rows must be in [0, inf]"),
    case("save_intermediates -1", ["--save_intermediates", "-1"], "--save_intermediates must be in [0, inf]"),
    # ---- sizes and memory
    case("W 0", ["--W", "0"], "--W (width) must be a positive multiple of 8"),
    case("W negative", ["--W", "-32"], "--W (width) must be a positive multiple of 8"),
    case("W not a multiple", ["--W", "36"], "VAE factor 4 x UNet downsampling), got 36"),
    case("H not a multiple", ["--H", "30"], "--H (height) must be a positive multiple of 8"),
    case("W float", ["--W", "32.5"], "argument --W: invalid int value"),
    case("W/H 100000", ["--W", "100000", "--H", "100000"], "GiB of memory available"),
    case("n_samples huge", ["--n_samples", "10000000"], "GiB of memory available"),
    # ---- steps and samplers
    case("steps 0", ["--sampling_steps", "0"], "--sampling_steps must be in [1, 1000]"),
    case("steps -1", ["--sampling_steps", "-1"], "--sampling_steps must be in [1, 1000]"),
    case("steps 2000", ["--sampling_steps", "2000"], "--sampling_steps must be in [1, 1000], got 2000"),
    case("mindone_ddim 600 steps", ["--sampler", "mindone_ddim", "--sampling_steps", "600"],
         "sampler mindone_ddim with 600 steps"),
    case("plms with eta", ["--plms", "--ddim_eta", "0.5"], "eta must be 0 for PLMS"),
    case("unknown sampler", ["--sampler", "fancy"], "unknown sampler 'fancy'"),
    case("timestep spacing", ["--timestep_spacing", "sideways"], "argument --timestep_spacing: invalid choice"),
    case("zero SNR with an eps model", ["--rescale_zero_snr", "True", "--sampler", "ddim"],
         "an eps model cannot give x0 at zero SNR"),
    # ---- prompt files and text
    case("prompt file non-UTF-8", ["--data_path", "{tmp}/prompts.txt"], "prompts.txt line 2 is not UTF-8",
         "non_utf8_prompts"),
    case("prompt file bad at line 500", ["--data_path", "{tmp}/prompts.txt"], "line 500 is not UTF-8",
         "t2i_late_bad_prompt"),
    case("prompt file missing", ["--data_path", "{tmp}/nowhere.txt"], "prompt file not found"),
    case("prompt file blank", ["--data_path", "{tmp}/prompts.txt"], "holds no prompts", "t2i_blank_prompts"),
    case("prompt file is a folder", ["--data_path", "{tmp}/prompts.txt"], "prompts.txt: not a regular file",
         "t2i_prompts_folder"),
    case("negatives non-UTF-8", ["--data_path", "{tmp}/prompts.txt", "--negative_data_path", "{tmp}/neg.txt"],
         "neg.txt line 2 is not UTF-8", "t2i_non_utf8_negatives"),
    case("negatives missing", ["--negative_data_path", "{tmp}/nowhere.txt"], "negative prompt file not found"),
    case("negatives too many", ["--data_path", "{tmp}/prompts.txt", "--negative_data_path", "{tmp}/neg.txt"],
         "has 3 negative prompt lines for 1 prompt line", "t2i_too_many_negatives"),
    case("from-file disagrees", ["--data_path", "{tmp}/a.txt", "--from-file", "{tmp}/b.txt"],
         "name different prompt files"),
    case("prompt not UTF-8", ["--prompt", "caf\udce9"], "--prompt 'caf?' is not valid UTF-8 text (character 3); write"),
    case("negative prompt not UTF-8", ["--negative_prompt", "\udcff"], "--negative_prompt '?' is not valid UTF-8"),
    # ---- model files
    case("config missing", ["--config", "{tmp}/nowhere.yaml"], "config file not found"),
    case("config not YAML", ["--config", "{tmp}/model.yaml"], "model.yaml", "t2i_bad_yaml"),
    case("config not UTF-8", ["--config", "{tmp}/model.yaml"], "model.yaml", "t2i_non_utf8_yaml"),
    case("config a list", ["--config", "{tmp}/model.yaml"], "does not hold a mapping", "t2i_list_yaml"),
    case("checkpoint missing", ["--ckpt_path", "{tmp}/nowhere.ckpt"], "checkpoint not found"),
    case("checkpoint garbage", ["--ckpt_path", "{tmp}/garbage.bin"], "garbage.bin", "t2i_garbage"),
    case("lora missing", ["--lora_ckpt_path", "{tmp}/nowhere.ckpt"], "LoRA checkpoint not found"),
    case("lora unreadable", ["--lora_ckpt_path", "{tmp}/garbage.bin"], "garbage.bin", "t2i_garbage"),
    case("lora without adapters", ["--lora_ckpt_path", "{repo}/models/tiny_shapes_base.ckpt"],
         "holds no unet adapters"),
    case("version", ["--version", "3.0"], "unknown --version '3.0'"),
    case("wukong", ["-v", "1.5-wukong"], "--version 1.5-wukong"),
    case("textual inversion missing", ["--ti_ckpt_path", "{tmp}/nowhere.ckpt"], "checkpoint not found"),
    case("textual inversion not an embedding", ["--ti_ckpt_path", "{repo}/models/tiny_shapes_base.ckpt"],
         "no placeholder_token recorded"),
    # ---- init files
    case("init image missing", ["--init_image", "{tmp}/nowhere.png"], "--init_image"),
    case("init image is text", INIT, "init.png cannot be decoded", "t2i_text_as_png"),
    case("init image truncated", INIT, "init.png cannot be decoded", "t2i_truncated_png"),
    case("init image is a folder", ["--init_image", "{tmp}"], "not a regular file"),
    case("init latents missing", ["--init_latents", "{tmp}/nowhere.npy"], "init latents file not found"),
    case("init latents wrong shape", ["--init_latents", "{tmp}/z.npy"], "have shape (1, 4, 4, 4), expected "
         "(1, 4, 8, 8)", "t2i_latents_wrong_shape"),
    case("init latents truncated", ["--init_latents", "{tmp}/z.npy"], "is not a .npy array",
         "t2i_latents_truncated"),
    case("init latents text", ["--init_latents", "{tmp}/garbage.bin"], "is not a .npy array", "t2i_garbage"),
    case("init latents NaN", ["--init_latents", "{tmp}/z.npy"], "NaN or infinite", "t2i_latents_nan"),
    case("init latents objects", ["--init_latents", "{tmp}/z.npy"], "is not a .npy array", "t2i_latents_objects"),
    case("init latents complex", ["--init_latents", "{tmp}/z.npy"], "hold complex64 values",
         "t2i_latents_complex"),
    # ---- output folder
    case("output path is a file", [], "exists and is not a folder", "file_named_out", absent=[]),
    case("output path under a file", ["--output_path", "{tmp}/out/sub"], "is a file, not a folder",
         "file_named_out", absent=[], out=False),
    case("manifest is a folder", [], "manifest.jsonl exists and is not a regular file", "t2i_manifest_folder",
         absent=["{tmp}/out/samples", "{tmp}/out/manifest.csv"]),
    case("samples is a file", [], "samples exists and is not a folder", "t2i_samples_file",
         absent=["{tmp}/out/manifest.jsonl"]),
    case("resume other settings", ["--resume"], "--resume: image 0 in samples/00000.png was made with "
         "prompt='some other prompt'", "t2i_other_run", absent=["{tmp}/out/manifest.csv", "{tmp}/out/grid-00000.png"]),
    # ---- runtime flags
    case("ms_mode", ["--ms_mode", "2"], "argument --ms_mode: invalid choice: 2"),
    case("device", ["--device_target", "TPU"], "argument --device_target: invalid choice"),
    case("log level", ["--log_level", "logging.LOUD"], "--log_level 'logging.LOUD'"),
    case("unknown flag", ["--sample_steps", "3"], "unrecognized arguments: --sample_steps"),
]


def _mount_tmpfs(path, options):
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


def _umount(path):
    subprocess.run(["umount", str(path)], capture_output=True)


def _fill(path):
    """Write until the file system says ENOSPC."""
    try:
        with open(os.path.join(path, "filler"), "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass


def _mount_cases(root, mounts):
    """Cases on tmpfs mounts made here (the table's own folders vanish with it: these stay to inspect);
    every mount point goes into ``mounts`` first, so the caller unmounts whatever was mounted."""
    cases, reasons = [], []
    ro, full, fills = root / "ro", root / "full", root / "fills"
    mounts += [ro, full, fills]
    reason = _mount_tmpfs(ro, "ro,size=64k")
    if reason:
        reasons.append(f"read-only tmpfs: {reason}")
    else:
        cases.append(case("read-only file system", ["--output_path", f"{ro}/out"], "Read-only file system",
                          absent=[f"{ro}/out"], out=False))
    reason = _mount_tmpfs(full, "size=64k")
    if reason:
        reasons.append(f"full tmpfs: {reason}")
    else:
        _fill(full)
        cases.append(case("disk full at the start", ["--output_path", f"{full}/out"], "No space left on device",
                          absent=[f"{full}/out"], out=False))
    reason = _mount_tmpfs(fills, "size=24k")
    if reason:
        reasons.append(f"small tmpfs: {reason}")
    else:
        # 12 images of 32 px (~3 KB each, a 4 KB page) do not fit in 24 KB: the disk fills mid-run. At
        # --log_level WARNING the start line is off, so the one stderr line is the error itself.
        cases.append(case("disk fills mid-run", ["--n_samples", "4", "--n_iter", "3", "--log_level", "WARNING",
                                                 "--output_path", f"{fills}/out"],
                          "No space left on device (errno 28); the images recorded in manifest.jsonl",
                          absent=[f"{fills}/out/manifest.csv", f"{fills}/out/grid-00000.png"], out=False))
    return cases, reasons


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i-mounts")
    mounts = []
    try:
        mount_cases, reasons = _mount_cases(root, mounts)
        cases = CASES + mount_cases
        if os.geteuid() != 0:
            cases.append(case("read-only folder (chmod 0555)", ["--output_path", "{tmp}/ro/out"],
                              "Permission denied", "t2i_read_only_folder", absent=["{tmp}/ro/out"], out=False))
        else:
            reasons.append("chmod 0555: running as root, which writes into read-only folders anyway "
                           "(the read-only tmpfs case covers it)")
        results = run_table(cases, timeout=900)
        fills = mounts[2]
        snapshot = None
        if os.path.isdir(fills / "out"):
            snapshot = _inspect(fills / "out")
    finally:
        for m in mounts:
            _umount(m)
    return dict(cases=cases, results=results, reasons=reasons, fills=snapshot)


def _inspect(out):
    """What a disk-full run left: manifest lines (strict JSON), PNGs, leftover temporary files."""
    lines = open(out / "manifest.jsonl", encoding="utf-8").read().splitlines() \
        if os.path.exists(out / "manifest.jsonl") else []
    records = [json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) for line in lines]
    pngs = sorted(os.listdir(out / "samples")) if os.path.isdir(out / "samples") else []
    decoded = [np.asarray(Image.open(out / "samples" / p)).shape for p in pngs if p.endswith(".png")]
    temps = [n for d, _, names in os.walk(out) for n in names if ".tmp" in n or n.startswith(".")]
    return dict(records=records, pngs=pngs, decoded=decoded, temps=temps)


def test_at_least_60_cases():
    assert len(CASES) >= 60


def test_bad_inputs_are_one_line_exit_2(table):
    """Every case: exit 2, one stderr line naming the problem, no traceback, nothing claiming completeness."""
    assert not failures(table["cases"], table["results"]), "\n".join(failures(table["cases"], table["results"]))


def test_read_only_and_full_disk(table):
    """Read-only and full file systems fail in one line; a disk that fills mid-run keeps only complete,
    recorded images (every manifest line strict JSON naming a PNG that decodes, no temporary files)."""
    names = [c["name"] for c in table["cases"]]
    if "disk fills mid-run" not in names:
        pytest.skip("; ".join(table["reasons"]))
    snap = table["fills"]
    assert snap is not None and snap["records"], "the run should have written some images before the disk filled"
    assert [r["file"] for r in snap["records"]] == [f"samples/{p}" for p in snap["pngs"]]
    assert all(shape == (32, 32, 3) for shape in snap["decoded"])
    assert len(snap["records"]) < 12 and not snap["temps"], snap


def test_read_only_folder_by_permissions(table):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0555 does not stop root's writes (the read-only tmpfs case covers it)")
    assert any(c["name"].startswith("read-only folder") for c in table["cases"])


def test_bad_input_in_a_real_process(tmp_path):
    """The way a user sees it, outside the harness: a separate process, exit 2, one line, no folder."""
    argv = [a.replace("{repo}", REPO) for a in BASE] + ["--scale", "nan", "--output_path", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, os.path.join(REPO, SCRIPT)] + argv, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--scale must be a finite number, got nan" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()

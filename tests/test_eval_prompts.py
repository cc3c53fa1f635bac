"""scripts/eval_prompts.py: a run folder in text_to_image.py's layout (samples/ + manifest.jsonl) is
evaluated into results.md / results.json with FID (N shown), KID and CLIP score; generation is
delegated to text_to_image.py with the user's extra flags; bad input fails in one line."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_FIX = os.path.join(REPO, "tests", "fixtures", "eval")
SCRIPT = os.path.join(REPO, "scripts", "eval_prompts.py")
CLIP_IMAGES = os.path.join(EVAL_FIX, "images", "clip")


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_prompts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(tmp_path):
    """What text_to_image.py leaves behind: samples/NNNNN.png and manifest.jsonl with relative paths."""
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    prompts = [ln.strip() for ln in open(os.path.join(CLIP_IMAGES, "prompts.txt"), encoding="utf-8") if ln.strip()]
    with open(run / "manifest.jsonl", "w", encoding="utf-8") as f:
        for i in range(4):
            shutil.copy(os.path.join(CLIP_IMAGES, f"{i:02d}.png"), run / "samples" / f"{i:05d}.png")
            f.write(json.dumps({"index": i, "file": f"samples/{i:05d}.png", "prompt": prompts[i], "seed": 42 + i,
                                "sampler": "dpm_solver", "steps": 15, "scale": 9.0}) + "\n")
    pf = tmp_path / "prompts.txt"
    pf.write_text("\n".join(prompts[:4]) + "\n", encoding="utf-8")
    return run, pf


def test_results_table_from_existing_run(tmp_path):
    run, pf = _fake_run(tmp_path)
    module = _load_script()
    code = module.main(["--data_path", str(pf), "--output_path", str(run), "--skip_generate",
                        "--real_dir", CLIP_IMAGES, "--fid_ckpt", os.path.join(EVAL_FIX, "fid_inception_random.pth"),
                        "--clip_checkpoint", os.path.join(EVAL_FIX, "clip_tiny"), "--kid", "--batch_size", "8",
                        "--cache_dir", str(tmp_path / "cache")])
    assert code == 0
    res = json.loads((run / "results.json").read_text())
    assert res["results"]["fid"]["n_gen"] == 4 and res["results"]["fid"]["n_real"] == 6
    assert res["results"]["fid"]["kid_subset_size"] == 4
    assert res["results"]["clip"]["n"] == 4
    table = (run / "results.md").read_text()
    for word in ("FID", "KID", "CLIP score", "4 gen / 6 real"):
        assert word in table
    assert (run / "clip_scores.csv").read_text().count("\n") == 5  # header + 4 images


def test_generation_is_delegated_with_extra_flags(tmp_path, monkeypatch):
    module = _load_script()
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(module.subprocess, "run", lambda cmd, cwd=None: calls.append(cmd) or Done())
    args, extra = module.build_parser().parse_known_args(
        ["--data_path", "p.txt", "--output_path", str(tmp_path), "--config", "c.yaml", "--ckpt_path", "m.ckpt",
         "--n_samples", "2", "--", "--dpm_solver", "--sampling_steps", "15"])
    module.generate(args, [a for a in extra if a != "--"])
    cmd = calls[0]
    assert cmd[1].endswith("text_to_image.py")
    for pair in (["--data_path", "p.txt"], ["--config", "c.yaml"], ["--ckpt_path", "m.ckpt"], ["--n_samples", "2"]):
        i = cmd.index(pair[0])
        assert cmd[i:i + 2] == pair
    assert cmd[-3:] == ["--dpm_solver", "--sampling_steps", "15"]


@pytest.mark.parametrize("case", ["missing_prompts", "missing_real_dir", "nothing_to_do"])
def test_bad_input_one_line(tmp_path, case):
    run, pf = _fake_run(tmp_path)
    args = {"missing_prompts": ["--data_path", str(tmp_path / "none.txt"), "--output_path", str(run),
                                "--real_dir", CLIP_IMAGES, "--skip_generate"],
            "missing_real_dir": ["--data_path", str(pf), "--output_path", str(run),
                                 "--real_dir", str(tmp_path / "nope"), "--skip_generate"],
            "nothing_to_do": ["--data_path", str(pf), "--output_path", str(run), "--skip_generate"]}[case]
    proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert len(lines) == 1 and "error" in lines[0], proc.stderr[-2000:]

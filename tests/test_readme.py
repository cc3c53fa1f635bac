"""README stays true: every flag of every CLI is in its reference (README.md or the manual, docs/*.md),
and its commands name real files."""
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIS = [
    "train_text_to_image.py",
    "train_textual_inversion.py",
    "train_dreambooth.py",
    "text_to_image.py",
    "inpaint.py",
    "controlnet_image2image.py",
    "eval/eval_fid.py",
    "eval/eval_clip_score.py",
    "scripts/eval_prompts.py",
    "scripts/convert_weights.py",
    "scripts/list_params.py",
    "datasets/synthetic_shapes.py",
    "scripts/score_shapes.py",
    "scripts/train_tiny_vae.py",
    "scripts/ascend_audit.py",
]


def _readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def _manual():
    """README.md and every page of docs/ (where the flags are documented)."""
    texts = [_readme()]
    docs = os.path.join(REPO, "docs")
    for name in sorted(os.listdir(docs)):
        if name.endswith(".md"):
            with open(os.path.join(docs, name), encoding="utf-8") as f:
                texts.append(f.read())
    return "\n".join(texts)


def _help(cli):
    proc = subprocess.run([sys.executable, cli, "-h"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    return cli, proc


@pytest.fixture(scope="module")
def help_texts():
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(_help, CLIS))


@pytest.mark.parametrize("cli", CLIS)
def test_every_flag_is_documented(cli, help_texts):
    proc = help_texts[cli]
    assert proc.returncode == 0, proc.stderr[-500:]
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_]*)", proc.stdout)) - {"--help"}
    assert flags, f"{cli} -h lists no flags"
    manual = _manual()
    missing = sorted(f for f in flags if f"`{f}" not in manual and f"{f} " not in manual)
    assert not missing, f"{cli}: flags missing from README.md and docs/: {missing}"


def test_referenced_files_exist():
    manual = _manual()
    paths = set(re.findall(r"(?<![\w/.])((?:configs|scripts|eval|bench|datasets)/[\w./-]+\.(?:py|sh|yaml))", manual))
    assert paths
    missing = sorted(p for p in paths if not os.path.isfile(os.path.join(REPO, p)))
    assert not missing, f"README.md or docs/ name files that do not exist: {missing}"

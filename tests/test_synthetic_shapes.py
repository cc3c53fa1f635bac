"""The synthetic shapes dataset: MindONE folder format, and a prompt-following score that works."""
import csv
import os
import subprocess
import sys

from PIL import Image

from datasets.synthetic_shapes import caption_match, draw, make_dataset, parse_caption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_folder_format_and_split(tmp_path):
    make_dataset(str(tmp_path), num_train=12, num_test=5, size=32, seed=1)
    with open(tmp_path / "train" / "img_txt.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and set(rows[0]) == {"dir", "text"}
    for row in rows:
        img = Image.open(tmp_path / "train" / row["dir"])
        assert img.size == (32, 32) and img.mode == "RGB"
        parse_caption(row["text"])
    prompts = (tmp_path / "test_prompts.txt").read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 5 and len(set(prompts)) == 5


def test_caption_match_accepts_right_and_rejects_wrong():
    img = draw("circle", "red", "white", "top left", 64)
    right = caption_match(img, "a red circle on a white background, top left")
    assert right == {"colour": True, "shape": True, "position": True, "background": True}
    wrong_pos = caption_match(img, "a red circle on a white background, bottom right")
    assert wrong_pos == {"colour": True, "shape": True, "position": False, "background": True}
    wrong_colour = caption_match(img, "a blue circle on a black background, top left")
    assert wrong_colour["colour"] is False and wrong_colour["background"] is False
    wrong_shape = caption_match(img, "a red square on a white background, top left")
    assert wrong_shape == {"colour": True, "shape": False, "position": True, "background": True}


def test_every_generated_image_matches_its_caption(tmp_path):
    make_dataset(str(tmp_path), num_train=1, num_test=180, size=32, seed=0)
    with open(tmp_path / "test" / "img_txt.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores = [caption_match(Image.open(tmp_path / "test" / r["dir"]), r["text"]) for r in rows]
    assert all(all(s.values()) for s in scores)


def test_cli_rejects_bad_size(tmp_path):
    proc = subprocess.run([sys.executable, "datasets/synthetic_shapes.py", "--output_path",
                           str(tmp_path), "--size", "30"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--size" in proc.stderr

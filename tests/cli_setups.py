"""Setup functions for tests/cli_table.py cases: each makes the bad input a case needs in its folder."""
import os


def file_named_out(folder):
    """A regular file where an output folder should go."""
    with open(os.path.join(folder, "out"), "w", encoding="utf-8") as f:
        f.write("not a folder\n")


def non_utf8_prompts(folder):
    with open(os.path.join(folder, "prompts.txt"), "wb") as f:
        f.write(b"a red circle\ncaf\xe9 au lait\n")


# ------------------------------------------------------------------ eval / dataset / conversion CLIs
# (tests/test_eval_bad_inputs.py)

def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _random_bytes(n, seed):
    import random
    return random.Random(seed).randbytes(n)


def _png(path):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def empty_folder(folder):
    os.makedirs(os.path.join(folder, "empty"))


def corrupt_images(folder):
    """Two files named .png that are not images."""
    _write(os.path.join(folder, "bad", "a.png"), b"not a png")
    _write(os.path.join(folder, "bad", "b.png"), b"not a png either")


def random_bytes_weights(folder):
    """Random bytes under the names real weight files have: an OpenAI .pt, an HF folder's
    model.safetensors (with a valid config.json), a .ckpt and a .pth."""
    _write(os.path.join(folder, "ViT-B-32.pt"), _random_bytes(4096, 1))
    _write(os.path.join(folder, "hf", "config.json"), b'{"projection_dim": 24}')
    _write(os.path.join(folder, "hf", "model.safetensors"), _random_bytes(4096, 2))
    _write(os.path.join(folder, "clip.ckpt"), _random_bytes(4096, 3))
    _write(os.path.join(folder, "inception.pth"), _random_bytes(4096, 4))


def hf_folder_bad_config(folder):
    """An HF-style folder whose config.json is not JSON, and one without config.json."""
    _write(os.path.join(folder, "hf", "config.json"), b"{ not json")
    _write(os.path.join(folder, "hf", "model.safetensors"), _random_bytes(64, 5))
    _write(os.path.join(folder, "noconf", "model.safetensors"), _random_bytes(64, 6))


def images_with_bad_manifest(folder):
    """Two images and a manifest.json that is not JSON; a second folder whose manifest.csv is not UTF-8."""
    for sub in ("imgs", "imgs2"):
        for i in range(2):
            _png(os.path.join(folder, sub, f"{i}.png"))
    _write(os.path.join(folder, "imgs", "manifest.json"), b'{"images": [')
    _write(os.path.join(folder, "imgs2", "manifest.csv"), b"file,prompt\n0.png,caf\xe9\n")


def four_prompts(folder):
    _write(os.path.join(folder, "four.txt"), b"a\nb\nc\nd\n")


def empty_prompts(folder):
    _write(os.path.join(folder, "empty.txt"), b"\n  \n")


def non_utf8_yaml(folder):
    _write(os.path.join(folder, "bad.yaml"), b"model:\n  prediction_type: \"v\"  # caf\xe9\n")


def unknown_layout_folder(folder):
    """A folder that is no diffusers layout (no unet/ vae/ text_encoder/)."""
    _write(os.path.join(folder, "layout", "weights.bin"), _random_bytes(64, 7))


def shapes_run_folders(folder):
    """text_to_image.py-like output folders: one without manifest, one whose manifest is not UTF-8,
    one whose record lacks a prompt."""
    _png(os.path.join(folder, "nomanifest", "0.png"))
    _png(os.path.join(folder, "latin1", "0.png"))
    _write(os.path.join(folder, "latin1", "manifest.jsonl"), b'{"index": 0, "file": "0.png", "prompt": "caf\xe9"}\n')
    _png(os.path.join(folder, "noprompt", "0.png"))
    _write(os.path.join(folder, "noprompt", "manifest.jsonl"), b'{"index": 0, "file": "0.png"}\n')

"""Setup functions for tests/cli_table.py cases: each makes the bad input a case needs in its folder."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def openai_jit_incomplete(folder):
    """The OpenAI-style TorchScript fixture with members deleted: ViT-B-32.pt without storage record 7
    (the visual conv1 weight), ViT-B-16.pt without data.pkl, ViT-L-14.pt with data.pkl cut in half."""
    import zipfile
    source = os.path.join(REPO, "tests", "fixtures", "eval", "openai_tiny_jit.pt")
    for name, member, change in (("ViT-B-32.pt", "openai_tiny_jit/data/7", None),
                                 ("ViT-B-16.pt", "openai_tiny_jit/data.pkl", None),
                                 ("ViT-L-14.pt", "openai_tiny_jit/data.pkl", lambda data: data[:len(data) // 2])):
        with zipfile.ZipFile(source) as zin, zipfile.ZipFile(os.path.join(folder, name), "w") as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename == member:
                    if change is None:
                        continue
                    data = change(data)
                zout.writestr(info, data)


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


def _writes_fail_below(root, err, after=0):
    """From now on, in this interpreter, the (after+1)-th and every later write below ``root`` (open
    for writing, os.open with a write flag, mkdir, ms.save_checkpoint) raises OSError ``err``: a full
    disk (ENOSPC) or a read-only file system (EROFS) without needing either. Paths elsewhere (the
    other cases' folders) are unaffected."""
    import builtins
    import errno
    root = os.path.abspath(root)
    message = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}[err]
    state = {"left": after}
    below = lambda p: isinstance(p, (str, bytes, os.PathLike)) and \
        os.path.abspath(os.fsdecode(p)).startswith(root + os.sep)          # noqa: E731
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def check(path):
        if below(path):
            if state["left"] <= 0:
                raise OSError(err, message, os.fsdecode(path))
            state["left"] -= 1

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            check(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if err == errno.EROFS:
            check(path)
        return real_mkdir(path, *args, **kwargs)
    builtins.open, os.open, os.mkdir = fake_open, fake_os_open, fake_mkdir
    import mindspore as ms
    real_save = ms.save_checkpoint

    def fake_save(params, name, *args, **kwargs):
        check(name)
        return real_save(params, name, *args, **kwargs)
    ms.save_checkpoint = fake_save


def shapes_disk_full(folder):
    """The disk fills after the two train images and the first temporary CSV."""
    import errno
    _writes_fail_below(folder, errno.ENOSPC, after=3)


def read_only_folder(folder):
    import errno
    _writes_fail_below(folder, errno.EROFS)


def scored_run_disk_full(folder):
    """A text_to_image.py-like run of one synthetic-shapes image, then a full disk."""
    import errno
    import json
    from datasets.synthetic_shapes import caption, draw
    os.makedirs(os.path.join(folder, "run"))
    spec = ("circle", "red", "white", "top left")
    draw(*spec, size=32).save(os.path.join(folder, "run", "0.png"))
    _write(os.path.join(folder, "run", "manifest.jsonl"),
           (json.dumps({"index": 0, "file": "0.png", "prompt": caption(*spec)}) + "\n").encode())
    _writes_fail_below(folder, errno.ENOSPC)


# ---- train_text_to_image.py cases (tests/test_train_bad_inputs.py): {tmp}/data + {tmp}/standin.yaml
def train_ok(folder, n=4, size=32):
    """A usable training setup: ``data/`` with ``n`` RGB PNGs and img_txt.csv, and the stand-in model."""
    import numpy as np
    from PIL import Image
    from tests.train_standin import write_standin_config
    data = os.path.join(folder, "data")
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["dir,text"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(os.path.join(data, f"{i}.png"))
        rows.append(f"{i}.png,shape {i}")
    with open(os.path.join(data, "img_txt.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    write_standin_config(folder)
    return data


def _csv(folder, payload):
    data = train_ok(folder)
    with open(os.path.join(data, "img_txt.csv"), "wb") as f:
        f.write(payload)


def train_csv_not_utf8(folder):
    _csv(folder, b"dir,text\n0.png,caf\xe9\n1.png,ok\n")


def train_csv_too_many_fields(folder):
    _csv(folder, b"dir,text\n0.png,a red circle\n1.png,a red, blue circle\n")


def train_csv_too_few_fields(folder):
    _csv(folder, b"dir,text\n0.png,a red circle\n1.png\n")


def train_csv_no_text_column(folder):
    _csv(folder, b"dir,caption\n0.png,x\n")


def train_csv_header_only(folder):
    _csv(folder, b"dir,text\n")


def train_csv_missing_images(folder):
    _csv(folder, b"dir,text\nnope1.png,x\nnope2.png,y\n")


def train_no_csv(folder):
    os.remove(os.path.join(train_ok(folder), "img_txt.csv"))


def train_only_truncated_jpeg(folder):
    """One JPEG cut in half: PIL's verify() passes it, decoding fails."""
    import io
    import numpy as np
    from PIL import Image
    data = train_ok(folder)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with open(os.path.join(data, "cut.jpg"), "wb") as f:
        f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
    with open(os.path.join(data, "img_txt.csv"), "w", encoding="utf-8") as f:
        f.write("dir,text\ncut.jpg,a cut image\n")


def train_only_small_images(folder):
    train_ok(folder, size=8)


def _recipe(folder, payload):
    train_ok(folder)
    with open(os.path.join(folder, "recipe.yaml"), "wb") as f:
        f.write(payload)


def train_recipe_duplicate_key(folder):
    _recipe(folder, b"image_size: 32\nepochs: 1\nepochs: 2\n")


def train_recipe_not_utf8(folder):
    _recipe(folder, b"image_size: 32\n# caf\xe9\n")


def train_recipe_unknown_key(folder):
    _recipe(folder, b"image_size: 32\nlearning_rate: 0.1\n")


def train_recipe_not_mapping(folder):
    _recipe(folder, b"- a\n- b\n")


def train_output_is_file(folder):
    train_ok(folder)
    file_named_out(folder)


def _fail_writes_under(root, err, message):
    """Patch ms.save_checkpoint and os.mkdir so that writes below ``root`` fail with ``err`` (other
    cases of the same interpreter are unaffected: only paths below this case's folder fail)."""
    import mindspore as ms
    root = os.path.abspath(root)
    below = lambda p: os.path.abspath(os.fspath(p)).startswith(root)      # noqa: E731
    save, mkdir = ms.save_checkpoint, os.mkdir

    def failing_save(params, name, *args, **kwargs):
        if below(name):
            with open(os.path.splitext(name)[0] + ".tmp", "wb") as f:       # what MindSpore writes first
                f.write(b"partial")
            raise OSError(err, message, name)
        return save(params, name, *args, **kwargs)

    def failing_mkdir(path, *args, **kwargs):
        if below(path):
            raise OSError(err, message, os.fspath(path))
        return mkdir(path, *args, **kwargs)
    ms.save_checkpoint = failing_save
    if err == 30:
        os.mkdir = failing_mkdir


def train_disk_full(folder):
    import errno
    train_ok(folder)
    _fail_writes_under(os.path.join(folder, "out"), errno.ENOSPC, "No space left on device")


def train_read_only(folder):
    import errno
    train_ok(folder)
    _fail_writes_under(os.path.join(folder, "out"), errno.EROFS, "Read-only file system")


# ---- text_to_image.py bad inputs (tests/test_text_to_image_bad_inputs.py)
def _t2i_png(path, size=32):
    import numpy as np
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def t2i_init_png(folder):
    """A good 32x32 init image, for the cases whose bad value is elsewhere (strength)."""
    _t2i_png(os.path.join(folder, "init.png"))


def t2i_text_as_png(folder):
    with open(os.path.join(folder, "init.png"), "w", encoding="utf-8") as f:
        f.write("this is text, not a PNG\n")


def t2i_truncated_png(folder):
    path = os.path.join(folder, "init.png")
    _t2i_png(path, 64)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _t2i_npy(folder, array, name="z.npy"):
    import numpy as np
    np.save(os.path.join(folder, name), array, allow_pickle=True)


def t2i_latents_wrong_shape(folder):
    import numpy as np
    _t2i_npy(folder, np.zeros((1, 4, 4, 4), np.float32))


def t2i_latents_truncated(folder):
    import numpy as np
    _t2i_npy(folder, np.zeros((1, 4, 8, 8), np.float32))
    path = os.path.join(folder, "z.npy")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:100])


def t2i_latents_nan(folder):
    import numpy as np
    z = np.zeros((1, 4, 8, 8), np.float32)
    z[0, 0, 0, 0] = np.nan
    _t2i_npy(folder, z)


def t2i_latents_objects(folder):
    import numpy as np
    _t2i_npy(folder, np.array([{"a": 1}], dtype=object))


def t2i_latents_complex(folder):
    import numpy as np
    _t2i_npy(folder, np.zeros((1, 4, 8, 8), np.complex64))


def t2i_garbage(folder):
    with open(os.path.join(folder, "garbage.bin"), "wb") as f:
        f.write(b"\x00\x01 not a checkpoint \xff" * 10)


def t2i_non_utf8_negatives(folder):
    with open(os.path.join(folder, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write("a red circle\na blue square\na green star\n")
    with open(os.path.join(folder, "neg.txt"), "wb") as f:
        f.write(b"blurry\n\xff\xfe ugly\n")


def t2i_too_many_negatives(folder):
    with open(os.path.join(folder, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write("a red circle\n")
    with open(os.path.join(folder, "neg.txt"), "w", encoding="utf-8") as f:
        f.write("blurry\nugly\ndark\n")


def t2i_blank_prompts(folder):
    with open(os.path.join(folder, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write("\n   \n\n")


def t2i_late_bad_prompt(folder):
    """A prompt file whose bad byte is on line 500: refused before any image, not mid-run."""
    with open(os.path.join(folder, "prompts.txt"), "wb") as f:
        f.write(b"a red circle\n" * 499 + b"\xc3\x28 broken\n")


def t2i_prompts_folder(folder):
    os.makedirs(os.path.join(folder, "prompts.txt"))


def t2i_config_bad_attention(folder):
    """The tiny shapes config with an attention mode that does not exist."""
    with open(os.path.join(REPO, "configs", "tiny-shapes-v2.yaml"), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("upcast_attention: True", "upcast_attention: True\n        attention: nonsense", 1)
    with open(os.path.join(folder, "bad_attention.yaml"), "w", encoding="utf-8") as f:
        f.write(text)


def t2i_bad_yaml(folder):
    with open(os.path.join(folder, "model.yaml"), "w", encoding="utf-8") as f:
        f.write("model: [unclosed\n  params: {")


def t2i_non_utf8_yaml(folder):
    with open(os.path.join(folder, "model.yaml"), "wb") as f:
        f.write(b"model:\n  target: caf\xe9\n")


def t2i_list_yaml(folder):
    with open(os.path.join(folder, "model.yaml"), "w", encoding="utf-8") as f:
        f.write("- just\n- a list\n")


def t2i_other_run(folder):
    """An output folder holding image 0 of another prompt, for --resume."""
    import json
    os.makedirs(os.path.join(folder, "out", "samples"))
    _t2i_png(os.path.join(folder, "out", "samples", "00000.png"))
    rec = dict(index=0, file="samples/00000.png", prompt="some other prompt", negative_prompt="", seed=42,
               sampler="mindone_dpm_solver_pp", steps=3, scale=9.0, width=32, height=32, run_start=0)
    with open(os.path.join(folder, "out", "manifest.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def t2i_manifest_folder(folder):
    os.makedirs(os.path.join(folder, "out", "manifest.jsonl"))


def t2i_samples_file(folder):
    os.makedirs(os.path.join(folder, "out"))
    with open(os.path.join(folder, "out", "samples"), "w", encoding="utf-8") as f:
        f.write("not a folder\n")


def t2i_read_only_folder(folder):
    """A folder without write permission (only meaningful when not root: root writes anyway)."""
    os.makedirs(os.path.join(folder, "ro"))
    os.chmod(os.path.join(folder, "ro"), 0o555)


# ---- data layouts (tests/test_train_data_bad_inputs.py): {tmp}/data + {tmp}/standin.yaml
def _data_folder(folder, images=(("a", 40, 32), ("b", 32, 48)), captions=True):
    """``data/`` with PNGs of the given (stem, width, height) and, with ``captions``, their .txt files."""
    import numpy as np
    from PIL import Image
    from tests.train_standin import write_standin_config
    data = os.path.join(folder, "data")
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, w, h in images:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(data, f"{stem}.png"))
        if captions:
            _write(os.path.join(data, f"{stem}.txt"), f"{stem}, a test image".encode())
    write_standin_config(folder)
    return data


def data_captions_ok(folder):
    _data_folder(folder)


def data_empty(folder):
    _data_folder(folder, images=())


def data_no_captions(folder):
    _data_folder(folder, captions=False)


def data_one_caption_missing(folder):
    data = _data_folder(folder)
    os.remove(os.path.join(data, "b.txt"))


def data_caption_not_utf8(folder):
    data = _data_folder(folder)
    _write(os.path.join(data, "b.txt"), b"first line\ncaf\xe9 au lait\n")


def _jsonl(folder, text):
    data = _data_folder(folder, captions=False)
    _write(os.path.join(data, "metadata.jsonl"), text.encode())


def data_jsonl_bad_json(folder):
    _jsonl(folder, '{"file_name": "a.png", "text": "a"}\n{"file_name": "b.png", "text": \n')


def data_jsonl_not_object(folder):
    _jsonl(folder, '{"file_name": "a.png", "text": "a"}\n["b.png", "b"]\n')


def data_jsonl_no_file_name(folder):
    _jsonl(folder, '{"file_name": "a.png", "text": "a"}\n{"image": "b.png", "text": "b"}\n')


def data_jsonl_escapes(folder):
    _jsonl(folder, '{"file_name": "../outside.png", "text": "a"}\n')


def data_jsonl_no_caption(folder):
    _jsonl(folder, '{"file_name": "a.png", "prompt": "a"}\n')


def _repeat_folder(folder, name):
    import shutil
    data = _data_folder(folder)
    sub = os.path.join(data, name)
    os.makedirs(sub)
    for stem in ("a", "b"):
        for ext in (".png", ".txt"):
            shutil.move(os.path.join(data, stem + ext), os.path.join(sub, stem + ext))


def data_repeat_zero(folder):
    _repeat_folder(folder, "0_dog")


def data_repeat_negative(folder):
    _repeat_folder(folder, "-1_dog")


def data_repeat_empty(folder):
    _repeat_folder(folder, "2_dog")
    os.makedirs(os.path.join(folder, "data", "3_cat"))


def data_one_image(folder):
    _data_folder(folder, images=(("a", 40, 32),))


def data_small_image(folder):
    _data_folder(folder, images=(("a", 64, 64), ("tiny", 12, 10)))


def data_instances(folder):
    """``inst/`` with two non-square images (DreamBooth instance / textual-inversion folders)."""
    import numpy as np
    from PIL import Image
    inst = os.path.join(folder, "inst")
    os.makedirs(inst)
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate(((48, 32), (32, 40))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(inst, f"{i}.png"))


def template_not_utf8(folder):
    """{tmp}/templates.txt with a Latin-1 byte on line 2 (textual inversion's --template_file)."""
    _write(os.path.join(folder, "templates.txt"), b"a photo of a {}\na caf\xe9 with a {}\n")


# ---- crafted adapters, embeddings and damaged run files (tests/test_adapter_bad_inputs.py)
def bad_adapters(folder):
    """{tmp}/bad/: every file of tests/fixtures/make_bad_adapters.py."""
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from make_bad_adapters import write_all
    write_all(os.path.join(folder, "bad"))


_TRAINED = {}


def _trained_run(folder):
    """{tmp}/data, {tmp}/standin.yaml and {tmp}/out: a finished 2-step run of the stand-in model with
    sd-1/sd-2 checkpoints and train_resume.ckpt (trained once per worker, then copied)."""
    import shutil
    import tempfile
    if "root" not in _TRAINED:
        root = tempfile.mkdtemp(prefix="trained-run-")
        train_ok(root)
        sys.path.insert(0, REPO)
        from ldm.train.config import parse_config
        from ldm.train.loop import train
        train(parse_config(["--model_config", f"{root}/standin.yaml", "--data_path", f"{root}/data", "--output_path",
                            f"{root}/out", "--image_size", "32", "--train_batch_size", "2", "--max_steps", "2",
                            "--jit", "False", "--show_progress", "False", "--step_mode", "True",
                            "--ckpt_save_interval", "1", "--log_level", "logging.ERROR"]))
        _TRAINED["root"] = root
    for name in ("data", "out"):
        shutil.copytree(os.path.join(_TRAINED["root"], name), os.path.join(folder, name))
    shutil.copy(os.path.join(_TRAINED["root"], "standin.yaml"), folder)
    return os.path.join(folder, "out", "ckpt")


def _flip_middle(path, count=10):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        middle = len(data) // 2
        for i in range(middle, middle + count):
            data[i] ^= 0x5A
        f.seek(0)
        f.write(data)


def resume_flipped(folder):
    """A finished run whose train_resume.ckpt has 10 bytes flipped in the middle."""
    _flip_middle(os.path.join(_trained_run(folder), "train_resume.ckpt"))


def resume_truncated(folder):
    """A finished run, and {tmp}/trunc.ckpt: its resume file cut in half."""
    ckpt = _trained_run(folder)
    with open(os.path.join(ckpt, "train_resume.ckpt"), "rb") as f:
        data = f.read()
    _write(os.path.join(folder, "trunc.ckpt"), data[:len(data) // 2])


def _respelled_resume(folder, spoil):
    """A finished run whose resume file is rewritten (without CRC) with one float tensor spoiled."""
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from make_bad_adapters import write_ckpt
    from ldm.io.ckpt_proto import read_ckpt
    path = os.path.join(_trained_run(folder), "train_resume.ckpt")
    entries = read_ckpt(path)
    name = next(k for k, v in entries.items() if not isinstance(v, str) and v.dtype.kind == "f" and v.size > 1)
    entries[name] = spoil(entries[name])
    write_ckpt(entries, path)


def resume_nan_state(folder):
    def spoil(array):
        array = array.copy()
        array.reshape(-1)[0] = float("nan")
        return array
    _respelled_resume(folder, spoil)


def resume_int_state(folder):
    _respelled_resume(folder, lambda a: (a * 100).astype("int32"))


def ckpt_flipped(folder):
    """A finished run whose sd-2.ckpt (the newest weights) has 10 bytes flipped in the middle."""
    _flip_middle(os.path.join(_trained_run(folder), "sd-2.ckpt"))


def weights_nan(folder):
    """{tmp}/nan.ckpt: the tiny shapes base weights with one NaN (no CRC, as from elsewhere)."""
    import numpy as np
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from make_bad_adapters import write_ckpt
    from ldm.io.ckpt_proto import read_ckpt
    entries = read_ckpt(os.path.join(REPO, "models", "tiny_shapes_base.ckpt"))
    name = next(k for k, v in entries.items() if not isinstance(v, str) and v.dtype.kind == "f" and v.size > 1
                and k.startswith("model.diffusion_model."))
    entries[name] = entries[name].copy()
    entries[name].reshape(-1)[0] = np.inf
    write_ckpt(entries, os.path.join(folder, "nan.ckpt"))


def embeds_flipped(folder):
    """{tmp}/embeds.safetensors written by our writer (CRC in its metadata), then one data byte flipped."""
    import numpy as np
    from ldm.convert.readers import write_safetensors
    path = os.path.join(folder, "embeds.safetensors")
    write_safetensors({"<cat>": np.ones((1, 32), np.float32)}, path)
    with open(path, "r+b") as f:
        f.seek(-5, os.SEEK_END)
        byte = f.read(1)[0]
        f.seek(-5, os.SEEK_END)
        f.write(bytes([byte ^ 0x40]))


def peft_config_not_utf8(folder):
    """{tmp}/peft/: a peft LoRA with an adapter_config.json that is not UTF-8."""
    import shutil
    os.makedirs(os.path.join(folder, "peft"))
    shutil.copy(os.path.join(REPO, "tests", "fixtures", "lora", "sd2_peft.safetensors"), os.path.join(folder, "peft"))
    _write(os.path.join(folder, "peft", "adapter_config.json"), b'{"r": 4, "note": "caf\xe9"}')


def _rank_pattern(folder, payload):
    train_ok(folder)
    with open(os.path.join(folder, "pattern.yaml"), "wb") as f:
        f.write(payload)


def train_rank_pattern_typo(folder):
    """A rank pattern whose key matches no LoRA layer of the stand-in (to_qq for to_q)."""
    _rank_pattern(folder, b"to_qq: 8\n")


def train_rank_pattern_rank_zero(folder):
    _rank_pattern(folder, b"to_q: {rank: 0, alpha: 2}\n")


# ---- inpaint.py bad inputs (tests/test_inpaint_cli.py): {tmp}/image.png and {tmp}/mask.png
def _inp_png(path, width, height, mask=False):
    import numpy as np
    from PIL import Image
    if mask:
        array = np.zeros((height, width), np.uint8)
        array[height // 4:3 * height // 4, width // 4:3 * width // 4] = 255
    else:
        array = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)


def inp_files(folder, image=(64, 64), mask=(64, 64)):
    """A random 64x64 image and a mask with a white square in the middle."""
    _inp_png(os.path.join(folder, "image.png"), *image)
    _inp_png(os.path.join(folder, "mask.png"), *mask, mask=True)


def inp_mask_other_aspect(folder):
    inp_files(folder, mask=(64, 32))


def inp_mask_half_size(folder):
    """A 32x32 mask for a 64x64 image: the same aspect ratio, resized (a run that must fail elsewhere)."""
    inp_files(folder, mask=(32, 32))


def inp_image_other_aspect(folder):
    inp_files(folder, image=(96, 64), mask=(96, 64))


def inp_small_image(folder):
    inp_files(folder, image=(16, 16), mask=(16, 16))


def inp_text_image(folder):
    inp_files(folder)
    with open(os.path.join(folder, "image.png"), "w", encoding="utf-8") as f:
        f.write("this is text, not a PNG\n")


def inp_truncated_mask(folder):
    inp_files(folder)
    path = os.path.join(folder, "mask.png")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def inp_mask_folder(folder):
    inp_files(folder)
    os.remove(os.path.join(folder, "mask.png"))
    os.makedirs(os.path.join(folder, "mask.png"))


def inp_shapes_inpaint_config(folder):
    """{tmp}/shapes_inpaint.yaml: the demo model's config with a 9-channel (inpainting) UNet; the demo checkpoint
    models/tiny_shapes_base.ckpt is its text-to-image counterpart."""
    inp_files(folder)
    with open(os.path.join(REPO, "configs", "tiny-shapes-v2.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert "        in_channels: 4\n" in text
    with open(os.path.join(folder, "shapes_inpaint.yaml"), "w", encoding="utf-8") as f:
        f.write(text.replace("        in_channels: 4\n", "        in_channels: 9\n", 1))


def inp_inpaint_checkpoint(folder):
    """{tmp}/inpaint9.safetensors: the demo checkpoint with a 9-channel UNet input conv (an inpainting checkpoint
    for configs/tiny-shapes-v2.yaml's shapes otherwise)."""
    import numpy as np
    from ldm.convert.readers import read_weight_file, write_safetensors
    inp_files(folder)
    state = read_weight_file(os.path.join(REPO, "models", "tiny_shapes_base.ckpt"))
    name = "model.diffusion_model.input_blocks.0.0.conv.weight"
    w = state[name]
    state[name] = np.concatenate([w, np.zeros((w.shape[0], 5) + w.shape[2:], w.dtype)], axis=1)
    write_safetensors({k: v for k, v in state.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"},
                      os.path.join(folder, "inpaint9.safetensors"))


def inp_other_mask_run(folder):
    """An output folder whose image 0 was made by the same command line with another mask, for --resume."""
    import json
    inp_files(folder)
    os.makedirs(os.path.join(folder, "out", "samples"))
    _inp_png(os.path.join(folder, "out", "samples", "00000.png"), 32, 32)
    rec = dict(index=0, file="samples/00000.png", prompt="a cat", negative_prompt="", seed=42,
               sampler="mindone_plms", steps=4, scale=7.5, width=32, height=32, run_start=0,
               image=os.path.join(folder, "image.png"), mask=os.path.join(folder, "other_mask.png"), strength=1.0,
               aug="resize", inpaint_mode="concat")
    with open(os.path.join(folder, "out", "manifest.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def inp_non_utf8_prompts(folder):
    inp_files(folder)
    non_utf8_prompts(folder)


# ------------------------------------------------------------------ controlnet_image2image.py
# (tests/test_controlnet_cli.py)

def cn_files(folder):
    """photo.png (48x32 RGB shapes), wide.png (64x32: another aspect ratio), text.png (not an image)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (48, 32), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    draw.ellipse((8, 4, 30, 28), fill=(220, 40, 40))
    draw.rectangle((32, 8, 44, 24), fill=(40, 200, 60))
    img.save(os.path.join(folder, "photo.png"))
    Image.new("RGB", (64, 32), (0, 0, 0)).save(os.path.join(folder, "wide.png"))
    _write(os.path.join(folder, "text.png"), b"not an image\n")


def cn_other_base(folder):
    """cn_files plus other_base.ckpt: a ControlNet made for configs/tiny-v2.yaml (UNet width 32, text context
    32), not for the demo model (64, 64)."""
    sys.path.insert(0, REPO)
    from ldm.convert.controlnet import save_controlnet
    from ldm.models.controlnet import ControlNetModel, controlnet_params_from_unet
    from ldm.util import load_config, part_params
    cn_files(folder)
    unet = part_params(load_config(os.path.join(REPO, "configs", "tiny-v2.yaml")), "unet_config")
    save_controlnet(ControlNetModel(**controlnet_params_from_unet(unet, 3, (16, 32, 32))),
                    os.path.join(folder, "other_base.ckpt"))


# ------------------------------------------------------------------ train_controlnet.py (tests/test_controlnet_train_cli.py)
def cn_train_ok(folder, count=3):
    """data/: MindONE's prompt.json layout (target/ images, source/ canny edges) of ``count`` shapes at 32 px."""
    import random
    sys.path.insert(0, REPO)
    from datasets.synthetic_control import draw_specs, write_split
    write_split(os.path.join(folder, "data"), draw_specs(random.Random(0), count, 32), 32)
    return os.path.join(folder, "data")


def cn_train_control_missing(folder):
    os.remove(os.path.join(cn_train_ok(folder), "source", "00001.png"))


def cn_train_control_aspect(folder):
    from PIL import Image
    Image.new("RGB", (48, 32), (0, 0, 0)).save(os.path.join(cn_train_ok(folder), "source", "00001.png"))


def cn_train_control_corrupt(folder):
    _write(os.path.join(cn_train_ok(folder), "source", "00001.png"), b"not a png\n")


def cn_train_image_corrupt(folder):
    _write(os.path.join(cn_train_ok(folder), "target", "00001.png"), b"not a png\n")


def cn_train_no_controls(folder):
    """data/: an image and its caption file, no control images (a text-to-image folder)."""
    _png(os.path.join(folder, "data", "a.png"))
    _write(os.path.join(folder, "data", "a.txt"), b"a red square\n")


def cn_train_jsonl_no_control(folder):
    _png(os.path.join(folder, "data", "a.png"))
    _write(os.path.join(folder, "data", "metadata.jsonl"), b'{"file_name": "a.png", "text": "a red square"}\n')


def cn_train_prompt_bad_json(folder):
    _write(os.path.join(cn_train_ok(folder), "prompt.json"), b'{"source": "source/00000.png", not json\n')


def cn_train_prompt_no_source(folder):
    _write(os.path.join(cn_train_ok(folder), "prompt.json"), b'{"target": "target/00000.png", "prompt": "a"}\n')


def cn_train_openpose_no_match(folder):
    """MindONE's openpose layout whose captions name an image_id no target/ image has."""
    _png(os.path.join(folder, "data", "target", "0.png"))
    _png(os.path.join(folder, "data", "source", "0.png"))
    _write(os.path.join(folder, "data", "prompt.json"), b'[{"image_id": 99, "caption": "a person"}]')


def cn_train_other_base(folder):
    """cn_train_ok plus other_base.ckpt: a ControlNet made for configs/tiny-v2.yaml, not for the demo model."""
    cn_train_ok(folder)
    cn_other_base(folder)


def cn_other_control_run(folder):
    """An output folder (out/run) whose image 0 was made from another control image, for --resume."""
    import json
    cn_files(folder)
    os.makedirs(os.path.join(folder, "out", "run", "samples"))
    _inp_png(os.path.join(folder, "out", "run", "samples", "00000.png"), 32, 32)
    rec = dict(index=0, file="samples/00000.png", run_start=0, control_images=[os.path.join(folder, "other.png")])
    with open(os.path.join(folder, "out", "run", "manifest.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")

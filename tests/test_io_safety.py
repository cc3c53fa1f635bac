"""What the file writers and readers promise: atomic writes leave no partial or temporary files (also
MindSpore's own), results get ordinary permissions, strict YAML and UTF-8 prompt files, and the CLI
wrapper turns any OSError into one stderr line with exit code 2."""
import errno
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ldm.errors import UserError
from ldm.io.atomic import atomic_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_ordinary_permissions(tmp_path, umask_022):
    import mindspore as ms
    from ldm.io.images import save_png_atomic
    from ldm.io.manifest import Manifest
    from ldm.io.ms_checkpoint import atomic_save
    from ldm.util import write_yaml

    save_png_atomic(np.zeros((8, 8, 3), np.uint8), str(tmp_path / "a.png"))
    manifest = Manifest(str(tmp_path))
    manifest.append({"index": 0, "file": "a.png", "prompt": "p"})
    manifest.write_csv()
    write_yaml({"a": 1}, str(tmp_path / "c.yaml"))
    atomic_save([{"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}], str(tmp_path / "w.ckpt"))
    from ldm.models.textual_inversion import save_learned_embeds
    save_learned_embeds(str(tmp_path / "e.safetensors"), np.ones((2, 4), np.float32), "<t>")
    for name in ("a.png", "manifest.csv", "c.yaml", "w.ckpt", "e.safetensors"):
        assert _mode(tmp_path / name) == 0o644, name
    assert sorted(os.listdir(tmp_path)) == ["a.png", "c.yaml", "e.safetensors", "manifest.csv", "manifest.jsonl",
                                            "w.ckpt"]


def test_a_failed_safetensors_write_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """The safetensors library reports a failed write as its own SafetensorError (a read-only target gave
    a traceback through convert_weights.py --to diffusers_lora): one UserError, no temporary file."""
    import safetensors.numpy
    from ldm.convert.readers import write_safetensors

    class SafetensorError(Exception):
        pass

    def failing(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise SafetensorError("Error while serializing: IoError(Os { code: 30, kind: ReadOnlyFilesystem })")
    monkeypatch.setattr(safetensors.numpy, "save_file", failing)
    with pytest.raises(UserError, match="cannot write .*lora.safetensors: Error while serializing"):
        write_safetensors({"x": np.ones(3, np.float32)}, str(tmp_path / "lora.safetensors"))
    assert os.listdir(tmp_path) == []


def test_a_failed_checkpoint_write_leaves_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    import mindspore as ms
    from ldm.io import ms_checkpoint

    path = tmp_path / "sd-1.ckpt"
    ms_checkpoint.atomic_save([{"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}], str(path))
    before = path.read_bytes()

    def disk_full(params, name, append_dict=None, crc_check=False):
        with open(os.path.splitext(name)[0] + ".tmp", "wb") as f:    # what MindSpore writes first
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", name)

    monkeypatch.setattr(ms, "save_checkpoint", disk_full)
    with pytest.raises(OSError):
        ms_checkpoint.atomic_save([{"name": "w", "data": ms.Tensor(np.zeros(3, np.float32))}], str(path))
    assert os.listdir(tmp_path) == ["sd-1.ckpt"]
    assert path.read_bytes() == before


def test_atomic_path_removes_the_temporary_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(str(tmp_path / "x.txt")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_yaml_with_a_duplicate_key_or_bad_bytes_is_one_error(tmp_path):
    from ldm.util import load_config
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  params:\n    scale_factor: 0.1\n    scale_factor: 0.2\n")
    with pytest.raises(UserError, match=r"duplicate key 'scale_factor' \(line 4\)"):
        load_config(str(path))
    path.write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_config(str(path))


def test_prompt_file_that_is_not_utf8_names_file_and_line(tmp_path):
    from ldm.io.prompts import iter_prompt_file
    path = tmp_path / "prompts.txt"
    path.write_bytes("a red circle\n\nun cercle bleu é\n".encode() + b"caf\xe9\n")
    with pytest.raises(UserError, match=r"prompts.txt line 4 is not UTF-8"):
        list(iter_prompt_file(str(path)))
    path.write_bytes("a red circle\n\nun cercle bleu é\n".encode())
    assert list(iter_prompt_file(str(path))) == ["a red circle", "un cercle bleu é"]


def test_run_cli_turns_every_oserror_into_one_line_and_exit_2(tmp_path):
    """One interpreter for all cases; each error is raised while a tqdm bar is on screen."""
    script = tmp_path / "cli.py"
    script.write_text(textwrap.dedent(f"""
        import errno, sys
        sys.path.insert(0, {REPO!r})
        from tqdm import tqdm
        from ldm.errors import UserError, run_cli
        CASES = {{
            "enospc": OSError(errno.ENOSPC, "No space left on device", "/out/sd-1.ckpt"),
            "erofs": OSError(errno.EROFS, "Read-only file system", "/ro/x.png"),
            "notdir": NotADirectoryError(errno.ENOTDIR, "Not a directory", "/file/samples"),
            "exists": FileExistsError(errno.EEXIST, "File exists", "/out"),
            "user": UserError("bad value\\nsecond line"),
        }}
        def main(argv):
            bar = tqdm(range(10), file=sys.stderr)
            next(iter(bar))
            raise CASES[argv[0]]
        run_cli(main, sys.argv[1:])
    """))
    expected = {"enospc": "No space left on device: /out/sd-1.ckpt", "erofs": "Read-only file system: /ro/x.png",
                "notdir": "Not a directory: /file/samples", "exists": "File exists: /out",
                "user": "bad value second line"}
    for case, message in expected.items():
        proc = subprocess.run([sys.executable, str(script), case], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (case, proc.stderr)
        last = proc.stderr.replace("\r", "\n").strip().splitlines()[-1]
        assert last == f"cli.py: error: {message}", (case, proc.stderr)
        assert "Traceback" not in proc.stderr

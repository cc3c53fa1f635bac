"""Weight-file readers are memory-safe: fuzzed and hand-crafted hostile files are one CheckpointError line.

The fuzz batches (tests/fuzz_weights.py, one subprocess per format, each mutant in a forked child)
check for crashes, hangs, non-CheckpointError exceptions, multi-line messages and loads that differ
from a strict element-by-element reference decoding. The explicit cases pin the messages for the
attacks that segfaulted or read foreign memory before (tensor larger than its storage, negative
stride) and for the safetensors / MindSpore header checks.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fuzz_weights as fw
from ldm.convert.readers import read_weight_file
from ldm.convert.torch_pickle import load_torch_file
from ldm.errors import CheckpointError
from ldm.io.ckpt_proto import read_ckpt

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FORMATS = ["zip", "legacy", "safetensors", "ckpt"]
MUTANTS = 320


# ------------------------------------------------------------------ fuzz batches
@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """Run the four batches, two at a time (one subprocess per format); summaries by format."""
    tmp = tmp_path_factory.mktemp("fuzz")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    summaries = {}
    for pair in (FORMATS[:2], FORMATS[2:]):
        procs = {fmt: subprocess.Popen([sys.executable, os.path.join(HERE, "fuzz_weights.py"), fmt,
                                        str(MUTANTS), str(FORMATS.index(fmt) + 11), str(tmp / f"{fmt}.json"),
                                        str(tmp / f"failed-{fmt}")], env=env, cwd=REPO,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for fmt in pair}
        for fmt, proc in procs.items():
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"{fmt} fuzz worker failed:\n{out[-3000:]}"
            with open(tmp / f"{fmt}.json") as f:
                summaries[fmt] = json.load(f)
    return summaries


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzzed_files_never_crash_hang_or_load_out_of_range_data(fuzz, fmt):
    s = fuzz[fmt]
    print(f"\n{fmt}: {s['count']} mutants, {s['verdicts']}, {s['seconds']} s, "
          f"{len(s['messages'])} distinct rejection messages")
    assert s["count"] >= 300
    assert not s["failures"], json.dumps(s["failures"][:5], indent=1)
    # both outcomes must be well represented, or the mutants test nothing
    assert s["verdicts"].get("loaded", 0) >= 20 and s["verdicts"].get("rejected", 0) >= 150
    assert len(s["messages"]) >= 25  # rejections come from many different checks
    assert not s["mindspore_imported"] and not s["torch_imported"]


# ------------------------------------------------------------------ hand-crafted PyTorch files
def _torch_file(tmp_path, fmt, size, stride, offset=0, numel=4, name="evil.pth"):
    raw = np.arange(numel, dtype="<f4").tobytes()
    tensors = {"w": dict(key="0", offset=offset, size=size, stride=stride)}
    path = tmp_path / name
    path.write_bytes(fw.spec_files({"0": ["FloatStorage", raw]}, tensors, fmt))
    return str(path)


def _message(path, reader=read_weight_file):
    with pytest.raises(CheckpointError) as info:
        reader(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_tensor_larger_than_its_storage(tmp_path, fmt):
    path = _torch_file(tmp_path, fmt, size=(1000,), stride=(1,))
    assert _message(path) == f"{path}: tensor 'w' needs 4000 bytes from storage '0' which has 16"


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_negative_stride_and_offset_past_the_storage(tmp_path, fmt):
    path = _torch_file(tmp_path, fmt, size=(1000,), stride=(-1,), offset=3)
    assert _message(path) == f"{path}: tensor 'w' has a negative or invalid stride (-1,)"
    path = _torch_file(tmp_path, fmt, size=(2,), stride=(1,), offset=3)
    assert _message(path) == f"{path}: tensor 'w' needs 20 bytes from storage '0' which has 16"


def test_huge_strides_and_broadcasts_are_refused(tmp_path):
    path = _torch_file(tmp_path, "zip", size=(2, 2), stride=(2**62, 1))
    assert f"needs {(2**62 + 2) * 4} bytes from storage '0' which has 16" in _message(path)
    path = _torch_file(tmp_path, "zip", size=(2**20, 2**20), stride=(0, 0))
    assert "needs 4398046511104 bytes, absurd for a" in _message(path)
    path = _torch_file(tmp_path, "zip", size=(1, 4), stride=(2**70, 1))  # size-1 dim: stride unused...
    assert "negative or invalid stride" in _message(path)  # ...but still not a valid int64


def test_valid_views_load_as_the_reference_decodes_them(tmp_path):
    """Offsets, transposed and stride-0 views, bf16/bool/scalar/empty, a v3 tensor on untyped bytes."""
    for fmt in ("zip", "legacy"):
        path = tmp_path / f"ok_{fmt}.pth"
        path.write_bytes(fw.spec_files(*fw.synthetic_spec(None), fmt, wrap=True))
        got = load_torch_file(str(path))
        assert fw.differences(got, fw.REFERENCES[fmt](str(path))) is None
        state = got["state_dict"]
        np.testing.assert_array_equal(state["wt"], (np.arange(12, dtype=np.float32) * 0.5 - 2)[[[1, 5, 9], [2, 6, 10]]])
        np.testing.assert_array_equal(state["bc"], np.array([[-1, -0.5]] * 3, np.float32))
        np.testing.assert_array_equal(state["v3"], np.array([-3.5, 7.0, 0.0], np.float32))
        assert state["b"].dtype == np.float32 and state["m"].dtype == np.bool_ and state["s"].shape == ()
        assert state["e"].shape == (0,) and state["w"].flags.writeable
        for name, dtype, value in (("s", np.float32, 0.5), ("sb", np.bool_, True), ("sbf", np.float32, 2.0)):
            assert isinstance(state[name], np.ndarray) and state[name].shape == () and state[name].dtype == dtype
            assert state[name] == value


def test_unknown_storage_type_and_missing_storage(tmp_path):
    path = tmp_path / "c.pth"
    tensors = {"w": dict(key="0", offset=0, size=(2,), stride=(1,))}
    path.write_bytes(fw.spec_files({"0": ["ComplexFloatStorage", b"\0" * 16]}, tensors, "zip"))
    assert _message(str(path)) == f"{path}: storage '0' has unsupported type 'ComplexFloatStorage'"
    path.write_bytes(fw.spec_files({"0": ["FloatStorage", b"\0" * 16]}, tensors, "zip", drop=("0",)))
    assert "storage '0' is missing from the archive" in _message(str(path))


def test_truncated_legacy_storage(tmp_path):
    good = _torch_file(tmp_path, "legacy", size=(4,), stride=(1,), name="good.pth")
    data = open(good, "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-3])
    assert _message(str(cut)).endswith("file ends inside storage '0' (truncated?)")


def test_memo_index_cannot_make_the_unpickler_allocate(tmp_path):
    """The C unpickler sizes its memo from a PUT index: 9 bytes asked it for 4 GB. Not any more."""
    path = tmp_path / "memo.pth"
    path.write_bytes(fw.torch_zip(b"\x80\x02]r\xff\xff\xff\x7f.", {}))
    start = time.monotonic()
    assert load_torch_file(str(path)) == []
    assert time.monotonic() - start < 1.0


def test_pickled_code_is_still_refused(tmp_path):
    path = tmp_path / "code.pth"
    call = fw.Call(fw.Global("os", "system"), ("echo pwned",))
    path.write_bytes(fw.torch_zip(fw.pickle_bytes({"w": call}), {}))
    assert "refusing to load global 'os.system'" in _message(str(path))


# ------------------------------------------------------------------ safetensors
def _safetensors(tmp_path, header, body, header_len=None):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(fw.st_build(header, body, header_len))
    return str(path)


def test_safetensors_overlapping_offsets(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    path = _safetensors(tmp_path, header, b"\0" * 12)
    assert _message(path) == (f"{path}: corrupt safetensors file: tensors 'a' (bytes 0-8) and 'b' "
                              "(bytes 4-12) overlap")


def test_safetensors_header_length_past_the_end(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = _safetensors(tmp_path, header, b"\0" * 4, header_len=10**6)
    size = os.path.getsize(path)
    assert _message(path) == (f"{path}: corrupt safetensors file: header length 1000000 runs past the end "
                              f"of the file ({size} bytes; truncated?)")


def test_safetensors_unknown_dtype_shape_and_range(tmp_path):
    header = {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}
    assert _message(_safetensors(tmp_path, header, b"\0" * 4)).endswith("tensor 'a' has unsupported dtype 'F8_E4M3'")
    header = {"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}
    assert "needs 4835703278458516698824704 bytes but its offsets span 4" in \
        _message(_safetensors(tmp_path, header, b"\0" * 4))
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    assert "lies at bytes 0-8 of the data, which has 4 bytes" in _message(_safetensors(tmp_path, header, b"\0" * 4))
    header = {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}
    assert "invalid shape [-1]" in _message(_safetensors(tmp_path, header, b"\0" * 4))


def test_safetensors_seed_matches_the_library(tmp_path):
    from safetensors.numpy import load_file
    seed = os.path.join(fw.SEEDS, "seed.safetensors")
    got, official = read_weight_file(seed), load_file(seed)
    assert fw.differences(got, official) is None and len(got) == 9


# ------------------------------------------------------------------ MindSpore .ckpt
def _ckpt(tmp_path, *values):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(b"".join(values))
    return str(path)


def test_ckpt_content_shorter_than_its_dims(tmp_path):
    path = _ckpt(tmp_path, fw.pb_value("w", [2, 2], "Float32", b"\0" * 8))
    assert _message(path) == (f"{path}: corrupt MindSpore checkpoint: tensor 'w' of shape (2, 2) and type "
                              "Float32 needs 16 bytes but holds 8")


def test_ckpt_negative_dim_unknown_type_and_overlong_field(tmp_path):
    assert _message(_ckpt(tmp_path, fw.pb_value("w", [-1], "Float32", b""))).endswith("negative dim -1")
    assert _message(_ckpt(tmp_path, fw.pb_value("w", [2], "Int4", b"\0"))).endswith(
        "tensor 'w' has unsupported type 'Int4'")
    value = fw.pb_value("w", [1], "Float32", b"\0" * 4)
    assert "runs past its message" in _message(_ckpt(tmp_path, value[:1] + b"\x7f" + value[2:]))


def test_ckpt_seed_reads_as_written(tmp_path):
    """seed.ckpt was written by mindspore.save_checkpoint from make_weight_fuzz_fixtures.arrays()."""
    sys.path.insert(0, os.path.join(HERE, "fixtures"))
    from make_weight_fuzz_fixtures import arrays
    for name in ("seed.ckpt", "seed_crc.ckpt"):
        got = read_ckpt(os.path.join(fw.SEEDS, name))
        for key, value in arrays().items():
            assert got[key].dtype == value.dtype and got[key].shape == np.shape(value), key
            np.testing.assert_array_equal(got[key], value)
        np.testing.assert_array_equal(got["model.bf"], np.array([1.5, -2.25, 3072.0], np.float32))
        assert json.loads(got["diffusion_spec"])["note"] == "héllo" and got["epoch"] == 3
    data = open(os.path.join(fw.SEEDS, "seed_crc.ckpt"), "rb").read()
    bad = tmp_path / "crc.ckpt"
    bad.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    assert "its CRC-32 does not match: the file was damaged after it was written" in _message(str(bad))


def test_ckpt_slices_of_one_tensor_are_joined(tmp_path):
    values = np.arange(6, dtype="<f4")
    path = _ckpt(tmp_path, fw.pb_value("w", [2, 3], "Float32", values[:4].tobytes()),
                 fw.pb_value("w", [2, 3], "Float32", values[4:].tobytes()))
    np.testing.assert_array_equal(read_ckpt(path)["w"], values.reshape(2, 3))
    path = _ckpt(tmp_path, fw.pb_value("w", [1], "Float32", b"\0" * 4), fw.pb_value("v", [1], "Float32", b"\0" * 4),
                 fw.pb_value("w", [1], "Float32", b"\0" * 4))
    assert _message(path).endswith("parameter 'w' appears twice")


# ------------------------------------------------------------------ CLI
def test_convert_weights_cli_rejects_a_hostile_file_in_one_line(tmp_path):
    path = _torch_file(tmp_path, "zip", size=(1000,), stride=(1,))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"), "--source", path,
                           "--target", str(tmp_path / "out.ckpt"), "--config",
                           os.path.join(REPO, "configs", "tiny-shapes-v2.yaml")],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ, GLOG_v="3"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines == [f"convert_weights.py: error: {path}: tensor 'w' needs 4000 bytes from storage '0' which has 16"]
    assert not (tmp_path / "out.ckpt").exists()

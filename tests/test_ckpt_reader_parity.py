"""The pure-Python .ckpt parser (ldm/io/ckpt_proto.py) reads what ``mindspore.load_checkpoint`` reads:
same names in the same order, same dtypes, shapes and bytes, append-dict text, CRC-checked files,
and the shipped demo checkpoint."""
import os

import mindspore as ms
import numpy as np
import pytest

from ldm.convert.readers import read_weight_file
from ldm.diffusion.spec import recorded_spec, resolve_spec, spec_record
from ldm.io.ckpt_proto import read_ckpt
from ldm.io.ms_checkpoint import atomic_save, read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
          np.int64, np.uint64, np.bool_]


def _same_as_mindspore(path):
    ours, theirs = read_ckpt(path), ms.load_checkpoint(path)
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        if isinstance(value, str):
            assert ours[name] == value, name
            continue
        if value.dtype == ms.bfloat16:  # numpy has no bf16: ours widens, exactly
            expected = value.astype(ms.float32).asnumpy()
        else:
            expected = value.asnumpy()
        got = ours[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert got.tobytes() == expected.tobytes(), name
    return ours


@pytest.mark.parametrize("crc", [False, True])
def test_every_dtype_and_the_append_dict(tmp_path, crc):
    rng = np.random.default_rng(0)
    params = [{"name": f"p.{np.dtype(d).name}", "data": ms.Tensor((rng.standard_normal((3, 2)) * 50).astype(d))}
              for d in DTYPES]
    params += [{"name": "p.bf16", "data": ms.Tensor(rng.standard_normal(5).astype(np.float32), ms.bfloat16)},
               {"name": "p.scalar", "data": ms.Tensor(np.float32(-0.5))},
               {"name": "p.4d", "data": ms.Tensor(rng.standard_normal((2, 1, 3, 2)).astype(np.float16))}]
    path = str(tmp_path / "all.ckpt")
    spec = resolve_spec(prediction_type="v", rescale_zero_snr=True)
    ms.save_checkpoint(params, path, append_dict={**spec_record(spec), "step": 7, "lr": 1e-4, "note": "日本 ✓"},
                       crc_check=crc)
    ours = _same_as_mindspore(path)
    assert ours["note"] == "日本 ✓" and ours["step"] == 7
    assert recorded_spec(read_weight_file(path)) == spec


def test_atomic_save_round_trip_through_read_checkpoint(tmp_path):
    params = [ms.Parameter(ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), name="a.weight"),
              ms.Parameter(ms.Tensor(np.ones(4, np.float16)), name="b.gamma")]
    path = atomic_save(params, str(tmp_path / "x.ckpt"), append_dict={"text": "kept out"})
    back = read_checkpoint(path)
    assert list(back) == ["a.weight", "b.gamma"]
    np.testing.assert_array_equal(back["a.weight"], params[0].asnumpy())
    assert back["b.gamma"].dtype == np.float16


def test_shipped_demo_checkpoint():
    ours = _same_as_mindspore(os.path.join(REPO, "models", "tiny_shapes_base.ckpt"))
    assert len(ours) > 400

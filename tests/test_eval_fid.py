"""FID / KID parity with pytorch-fid and torchmetrics on a random FID Inception (fixtures from
tests/fixtures/make_eval_fixtures.py), the resize, the maths, caching and the CLI's bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest

from eval.fid import feature_statistics, frechet_distance, kernel_inception_distance, polynomial_mmd
from eval.images import _bilinear_matrix, resize_bilinear

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_FIX = os.path.join(REPO, "tests", "fixtures", "eval")
WEIGHTS = os.path.join(EVAL_FIX, "fid_inception_random.pth")
REAL = os.path.join(EVAL_FIX, "images", "real")
GEN = os.path.join(EVAL_FIX, "images", "gen")


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(EVAL_FIX, "fid_reference.npz")) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def fid_run(tmp_path_factory):
    """Our full pipeline (folders -> features -> FID/KID) once for the module; caches in a temp dir."""
    from eval.eval_fid import compute_fid
    cache = str(tmp_path_factory.mktemp("fidcache"))
    res = compute_fid(REAL, GEN, WEIGHTS, batch_size=26, kid=True, kid_subsets=10, kid_subset_size=20,
                      cache_dir=cache, fid_method="sqrtm")  # pytorch-fid's own algorithm
    return res, cache


@pytest.mark.slow
def test_features_match_pytorch_fid(fid_run, reference):
    res, cache = fid_run
    from eval.features import folder_key, weights_key
    from eval.images import list_images
    for folder, name in ((REAL, "feats_real"), (GEN, "feats_gen")):
        key = f"{folder_key(list_images(folder))}-{weights_key(WEIGHTS)}"
        ours = np.load(os.path.join(cache, f"inception2048-{key}.npz"))["features"]
        ref = reference[name]
        assert ours.shape == ref.shape == (52, 2048)
        assert ref.std() > 0.1  # the random net's features are not degenerate
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_fid_and_kid_match_references(fid_run, reference):
    res, _ = fid_run
    assert res["n_real"] == res["n_gen"] == 52
    assert abs(res["fid"] - reference["fid"]) <= 1e-3 * abs(reference["fid"])
    # torch-fidelity's subsets (RandomState(2020), 10 x 20) scored by torchmetrics' poly_mmd
    assert res["kid_subset_size"] == 20
    np.testing.assert_allclose(res["kid_mean"], reference["kid_subsets_mean"], rtol=1e-3)
    np.testing.assert_allclose(res["kid_std"], reference["kid_subsets_std"], rtol=1e-2)


def test_downscaled_large_images_match(reference):
    """Non-square images bigger than 299 (bilinear down-scaling without antialias, as torch)."""
    from eval.images import list_images, load_unit_images
    from eval.inception import InceptionFeatureExtractor
    ext = InceptionFeatureExtractor(WEIGHTS)
    images = np.stack(load_unit_images(list_images(os.path.join(EVAL_FIX, "images", "large"))))
    np.testing.assert_allclose(ext(images), reference["feats_large"], rtol=0, atol=1e-4)


def test_fid_maths_on_reference_features(reference):
    """FID from pytorch-fid's own features: the eigenvalue trace equals its sqrtm FID to 1e-6."""
    s1, s2 = feature_statistics(reference["feats_real"]), feature_statistics(reference["feats_gen"])
    fid = frechet_distance(s1["mu"], s1["sigma"], s2["mu"], s2["sigma"])["fid"]
    assert abs(fid - reference["fid"]) <= 1e-6 * abs(reference["fid"])


def test_kid_on_reference_features(reference):
    """KID maths alone on pytorch-fid's own features vs torchmetrics' poly_mmd (whole-set subsets)."""
    kid = kernel_inception_distance(reference["feats_real"], reference["feats_gen"], subsets=3)
    np.testing.assert_allclose(kid["kid_mean"], reference["kid_full"], rtol=1e-9)
    assert kid["kid_std"] < 1e-9 * abs(kid["kid_mean"]) + 1e-12  # whole-set subsets: identical values


@pytest.mark.parametrize("method", ["eig", "sqrtm"])
def test_frechet_distance_of_known_gaussians(method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    s1 = a @ a.T + np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    assert frechet_distance(mu1, s1, mu1, s1, method=method)["fid"] == pytest.approx(0.0, abs=1e-8)
    # same covariance, shifted mean: FID = |mu1 - mu2|^2
    assert frechet_distance(mu1, s1, mu2, s1, method=method)["fid"] == \
        pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-8)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    d1, d2 = np.diag([1.0, 4.0, 9.0, 16.0]), np.diag([4.0, 4.0, 1.0, 1.0])
    expect = sum((np.sqrt(x) - np.sqrt(y)) ** 2 for x, y in zip(np.diag(d1), np.diag(d2)))
    assert frechet_distance(mu1, d1, mu1, d2, method=method)["fid"] == pytest.approx(expect, rel=1e-8)


@pytest.mark.parametrize("method", ["eig", "sqrtm"])
def test_singular_covariances_stay_finite(method):
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(5, 64)), rng.normal(size=(5, 64)) + 0.5
    s1, s2 = feature_statistics(f1), feature_statistics(f2)
    out = frechet_distance(s1["mu"], s1["sigma"], s2["mu"], s2["sigma"], method=method)
    assert np.isfinite(out["fid"]) and out["fid"] > 0


def test_kid_is_unbiased_near_zero_for_same_distribution():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same = kernel_inception_distance(x, y, subsets=20, subset_size=100)["kid_mean"]
    shifted = kernel_inception_distance(x, y + 1.0, subsets=20, subset_size=100)["kid_mean"]
    assert abs(same) < 0.05 * shifted
    assert polynomial_mmd(x, x[::-1]) < 0  # unbiased estimate of 0 on identical sets goes below 0


def test_bilinear_matrix_rows_and_identity():
    for n_in, n_out in ((40, 299), (311, 299), (17, 5)):
        m = _bilinear_matrix(n_in, n_out)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    x = np.random.default_rng(3).random((1, 3, 8, 8)).astype(np.float32)
    assert resize_bilinear(x, 8, 8) is x
    # exact pixel centres: 2x up-scaling of a ramp stays a ramp (torch's half-pixel convention)
    ramp = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4).repeat(2, axis=2)
    out = resize_bilinear(ramp, 2, 8)[0, 0, 0]
    np.testing.assert_allclose(out, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)


@pytest.mark.slow
def test_feature_cache_is_used(fid_run, reference):
    from eval.features import folder_features
    res, cache = fid_run
    assert res["cached"] == [False, False]
    again = folder_features(GEN, extractor=None, weights_path=WEIGHTS, cache_dir=cache)  # a hit never runs the model
    assert again["cached"]
    np.testing.assert_allclose(again["features"], reference["feats_gen"], rtol=0, atol=1e-4)


def test_cache_key_follows_images_and_weights(tmp_path):
    import shutil
    from eval.features import folder_key, weights_key
    from eval.images import list_images
    for i in range(3):
        shutil.copy(os.path.join(GEN, f"{i:03d}.png"), tmp_path / f"{i:03d}.png")
    key = folder_key(list_images(str(tmp_path)))
    assert folder_key(list_images(str(tmp_path))) == key
    shutil.copy(os.path.join(REAL, "000.png"), tmp_path / "001.png")  # same name, other content
    assert folder_key(list_images(str(tmp_path))) != key
    assert weights_key(WEIGHTS) != weights_key(os.path.join(EVAL_FIX, "openai_tiny_jit.pt"))


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "eval", "eval_fid.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("case", ["missing_dir", "empty_dir", "corrupt_image", "missing_weights"])
def test_cli_bad_input_one_line(tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "b.png").write_bytes(b"not a png either")
    args = {"missing_dir": ["--real_dir", str(tmp_path / "nope"), "--gen_dir", GEN, "--ckpt_path", WEIGHTS],
            "empty_dir": ["--real_dir", REAL, "--gen_dir", str(empty), "--ckpt_path", WEIGHTS],
            "corrupt_image": ["--real_dir", str(bad), "--gen_dir", GEN, "--ckpt_path", WEIGHTS, "--no_cache"],
            "missing_weights": ["--real_dir", REAL, "--gen_dir", GEN, "--ckpt_path", str(tmp_path / "w.pth")]}[case]
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln and "%|" not in ln]
    assert len(lines) == 1 and "error" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    if case == "missing_weights":
        assert "pt_inception-2015-12-05-6726825d.pth" in lines[0] and "--convert" in lines[0]


def test_cli_help_lists_flags():
    out = _cli("-h").stdout
    for flag in ("--real_dir", "--gen_dir", "--ckpt_path", "--batch_size", "--kid", "--cache_dir"):
        assert flag in out


def test_converted_ckpt_gives_the_same_features(tmp_path, reference):
    from eval.images import list_images, load_unit_images
    from eval.inception import InceptionFeatureExtractor, main as inception_main
    ckpt = str(tmp_path / "fid_inception.ckpt")
    assert inception_main(["--convert", WEIGHTS, ckpt]) == 0
    images = np.stack(load_unit_images(list_images(REAL)[:2]))
    np.testing.assert_allclose(InceptionFeatureExtractor(ckpt)(images), reference["feats_real"][:2], rtol=0, atol=1e-4)


def test_wrong_weights_file_is_one_clear_error():
    from ldm.errors import CheckpointError
    from eval.inception import build_fid_inception
    with pytest.raises(CheckpointError, match="does not fit the FID Inception-v3"):
        build_fid_inception(os.path.join(EVAL_FIX, "clip_tiny", "model.safetensors"))

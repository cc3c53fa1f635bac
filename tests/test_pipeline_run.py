"""Run bookkeeping of text_to_image: batching, per-image seeds, streaming, manifest, grid, resume.

The model is replaced by a stand-in whose image is a pure function of (prompt, seed), so these tests
check the folder logic alone, quickly; the real model runs in test_text_to_image.py.
"""
import json
import os
import zlib

import numpy as np
import pytest

from ldm.errors import UserError
from ldm.io.images import make_grid, save_png_atomic, to_uint8
from ldm.io.manifest import Manifest
from ldm.io.prompts import check_prompt_file, iter_batches, iter_prompt_file
from ldm.pipeline import GenerationResult, initial_noise
from ldm.pipeline_run import (RunSettings, check_negative_file, count_images, plan_batches, prompt_pairs,
                              run_to_folder)


class StandInPipeline:
    """generate() -> images determined by (prompt, seed); records every batch it was asked for."""
    latent_channels, latent_factor, prediction_type = 4, 8, "v"

    def __init__(self):
        self.calls = []

    def make_sampler(self, name, eta=0.0, **options):
        from ldm.diffusion.samplers import get_sampler
        return get_sampler(name, prediction_type=self.prediction_type, **options)

    def generate(self, prompts, seeds=None, width=16, height=16, latents=None, **kwargs):
        self.calls.append(dict(prompts=list(prompts), seeds=list(seeds), latents=latents, **kwargs))
        images = []
        for p, s in zip(prompts, seeds):
            rng = np.random.default_rng([s, zlib.crc32(p.encode())])
            images.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        return GenerationResult(np.stack(images), list(seeds), [])


def write_prompts(path, n):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"prompt number {i}\n")
            if i % 3 == 0:
                f.write("   \n")           # blank lines are skipped
    return str(path)


def settings(tmp_path, **kw):
    base = dict(width=16, height=16, steps=2, sampler="ddim", seed=7, checkpoint="model.ckpt", config="c.yaml")
    base.update(kw)
    return RunSettings(**base)


def test_plan_batches_prompt_file_n_iter_and_seeds(tmp_path):
    """MindONE's order: each prompt line fills its own batches, n_iter of them in a row."""
    path = write_prompts(tmp_path / "p.txt", 3)
    batches = list(plan_batches(settings(tmp_path, data_path=path, n_samples=2, n_iter=2)))
    assert [b.prompts for b in batches] == [[f"prompt number {i}"] * 2 for i in (0, 0, 1, 1, 2, 2)]
    assert [i for b in batches for i in b.indices] == list(range(12))
    assert [s for b in batches for s in b.seeds] == [7 + i for i in range(12)]
    assert count_images(settings(tmp_path, data_path=path, n_samples=2, n_iter=2)) == 12


def test_plan_batches_packed_prompt_file(tmp_path):
    """--pack_prompts: n_samples different prompts a batch, the file gone over n_iter times."""
    path = write_prompts(tmp_path / "p.txt", 5)
    run = settings(tmp_path, data_path=path, n_samples=2, n_iter=2, pack_prompts=True)
    batches = list(plan_batches(run))
    assert [len(b.prompts) for b in batches] == [2, 2, 1, 2, 2, 1]
    assert [i for b in batches for i in b.indices] == list(range(10))
    assert [s for b in batches for s in b.seeds] == [7 + i for i in range(10)]
    assert batches[3].prompts == ["prompt number 0", "prompt number 1"]
    assert count_images(run) == 10


def test_negative_prompt_file_pairs_by_line_and_pads_blank(tmp_path):
    """Negative line i goes with prompt line i (a blank prompt line takes its negative along);
    prompt lines past the end of the negative file get the blank negative, as MindONE pads."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n\na dog\na cow\n")
    negatives = tmp_path / "n.txt"
    negatives.write_text("blurry\nfor the blank line\n\n")
    run = settings(tmp_path, data_path=str(prompts), negative_data_path=str(negatives), negative_prompt="unused",
                   n_samples=2, pack_prompts=True)
    assert list(prompt_pairs(run)) == [("a cat", "blurry"), ("a dog", ""), ("a cow", "")]
    batches = list(plan_batches(run))
    assert [b.negatives for b in batches] == [["blurry", ""], [""]]
    check_negative_file(run)
    negatives.write_text("1\n2\n3\n4\n5\n")
    with pytest.raises(UserError, match="5 negative prompt lines for 4 prompt line"):
        check_negative_file(run)
    # without a file, --negative_prompt goes with every prompt; a single --prompt takes the file's first line
    assert [n for _, n in prompt_pairs(settings(tmp_path, data_path=str(prompts), negative_prompt="x"))] == ["x"] * 3
    negatives.write_text("ugly\n")
    single = settings(tmp_path, prompt="a cat", negative_data_path=str(negatives), n_samples=3)
    assert [b.negatives for b in plan_batches(single)] == [["ugly"] * 3]
    negatives.write_text("1\n2\n3\n4\n")
    pipe = StandInPipeline()
    out = tmp_path / "out"
    run_to_folder(pipe, run, str(out), progress=False, log=lambda m: None)
    assert [c["negative_prompt"] for c in pipe.calls] == [["1", "3"], ["4"]]
    records = [json.loads(line) for line in open(out / "manifest.jsonl", encoding="utf-8")]
    assert [r["negative_prompt"] for r in records] == ["1", "3", "4"]


def test_grid_columns_follow_n_rows(tmp_path):
    """MindONE's --n_rows is the grid's images per row (torchvision's nrow); 0 means n_samples."""
    from PIL import Image
    sizes = {}
    for n_rows in (0, 1, 3):
        out = tmp_path / f"out{n_rows}"
        summary = run_to_folder(StandInPipeline(), settings(tmp_path, prompt="x", n_samples=2, n_iter=3,
                                                            n_rows=n_rows), str(out), progress=False,
                                log=lambda m: None, skip_save=True)
        sizes[n_rows] = Image.open(summary["grid"]).size
    cell = 16 + 2
    assert sizes == {0: (2 * cell + 2, 3 * cell + 2), 1: (cell + 2, 6 * cell + 2), 3: (3 * cell + 2, 2 * cell + 2)}


def test_plan_batches_single_prompt_and_fixed_code(tmp_path):
    batches = list(plan_batches(settings(tmp_path, prompt="a cat", n_samples=3, n_iter=2, fixed_code=True)))
    assert [b.prompts for b in batches] == [["a cat"] * 3] * 2
    assert [b.seeds for b in batches] == [[7, 8, 9], [7, 8, 9]]
    assert batches[1].indices == [3, 4, 5]


def test_prompt_file_is_streamed(tmp_path):
    path = write_prompts(tmp_path / "big.txt", 10_000)
    stream = iter_prompt_file(path)
    assert next(stream) == "prompt number 0"          # a generator: nothing read ahead
    assert sum(1 for _ in iter_batches(iter_prompt_file(path), 64)) == (10_000 + 63) // 64
    pipe = StandInPipeline()
    out = tmp_path / "out"
    run_to_folder(pipe, settings(tmp_path, data_path=path, n_samples=500, width=8, height=8, pack_prompts=True), str(out),
                  skip_save=True, skip_grid=True, progress=False, log=lambda m: None)
    assert len(pipe.calls) == 20 and pipe.calls[-1]["prompts"][-1] == "prompt number 9999"
    assert not os.listdir(out / "samples")


def test_bad_prompt_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(UserError, match="no prompts"):
        check_prompt_file(str(empty))
    with pytest.raises(UserError, match="not found"):
        check_prompt_file(str(tmp_path / "missing.txt"))


def test_layout_manifest_and_grid(tmp_path):
    path = write_prompts(tmp_path / "p.txt", 3)
    out = tmp_path / "out"
    summary = run_to_folder(StandInPipeline(), settings(tmp_path, data_path=path, n_samples=2, n_iter=1,
                                                                  pack_prompts=True),
                            str(out), progress=False, log=lambda m: None)
    assert sorted(os.listdir(out / "samples")) == ["00000.png", "00001.png", "00002.png"]
    records = [json.loads(line) for line in open(out / "manifest.jsonl", encoding="utf-8")]
    assert [r["index"] for r in records] == [0, 1, 2]
    r = records[2]
    assert (r["file"], r["prompt"], r["seed"], r["sampler"], r["steps"], r["width"], r["height"],
            r["checkpoint"], r["prediction_type"]) == ("samples/00002.png", "prompt number 2", 9, "ddim", 2,
                                                       16, 16, "model.ckpt", "v")
    csv_lines = open(summary["csv"], encoding="utf-8").read().splitlines()
    assert csv_lines[0].startswith("index,file,prompt,negative_prompt,seed,sampler,steps,scale")
    assert len(csv_lines) == 4
    assert os.path.isfile(summary["grid"])
    assert not [n for n in os.listdir(out / "samples") if n.startswith(".tmp")]


def test_resume_skips_finished_images_and_redoes_torn_ones(tmp_path):
    path = write_prompts(tmp_path / "p.txt", 5)
    out = str(tmp_path / "out")
    run = settings(tmp_path, data_path=path, n_samples=2, pack_prompts=True)
    run_to_folder(StandInPipeline(), run, out, progress=False, log=lambda m: None)
    original = {n: open(os.path.join(out, "samples", n), "rb").read() for n in os.listdir(os.path.join(out, "samples"))}
    # simulate a crash: image 3's manifest line torn, image 4 never written
    lines = open(os.path.join(out, "manifest.jsonl"), encoding="utf-8").read().splitlines()
    with open(os.path.join(out, "manifest.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:3]) + "\n" + lines[3][:20])
    os.remove(os.path.join(out, "samples", "00004.png"))
    pipe = StandInPipeline()
    summary = run_to_folder(pipe, run, out, resume=True, progress=False, log=lambda m: None)
    assert [c["prompts"] for c in pipe.calls] == [["prompt number 2", "prompt number 3"], ["prompt number 4"]]
    assert (summary["written"], summary["skipped"]) == (2, 3)
    for name, data in original.items():
        assert open(os.path.join(out, "samples", name), "rb").read() == data
    assert sorted(Manifest(out).read()) == [0, 1, 2, 3, 4]
    # a second resume has nothing left to do
    pipe = StandInPipeline()
    run_to_folder(pipe, run, out, resume=True, progress=False, log=lambda m: None)
    assert pipe.calls == []


def test_resume_refuses_other_settings_and_plain_rerun_appends(tmp_path):
    out = str(tmp_path / "out")
    run = settings(tmp_path, prompt="a dog", n_samples=2)
    run_to_folder(StandInPipeline(), run, out, progress=False, log=lambda m: None)
    with pytest.raises(UserError, match="seed"):
        run_to_folder(StandInPipeline(), settings(tmp_path, prompt="a dog", n_samples=2, seed=8), out,
                      resume=True, progress=False, log=lambda m: None)
    run_to_folder(StandInPipeline(), run, out, progress=False, log=lambda m: None)
    assert sorted(os.listdir(os.path.join(out, "samples"))) == [f"{i:05d}.png" for i in range(4)]
    # numbering continued, seeds restart with the run: images 2, 3 repeat images 0, 1
    assert open(os.path.join(out, "samples", "00002.png"), "rb").read() == \
        open(os.path.join(out, "samples", "00000.png"), "rb").read()


def test_init_latents_are_checked_and_passed(tmp_path):
    out = str(tmp_path / "out")
    good = tmp_path / "z.npy"
    np.save(good, np.ones((2, 4, 2, 2), np.float32))
    pipe = StandInPipeline()
    run_to_folder(pipe, settings(tmp_path, prompt="x", n_samples=2, init_latents=str(good)), out,
                  progress=False, log=lambda m: None)
    assert pipe.calls[0]["latents"].shape == (2, 4, 2, 2)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((1, 4, 2, 2), np.float32))
    with pytest.raises(UserError, match="shape"):
        run_to_folder(pipe, settings(tmp_path, prompt="x", n_samples=2, init_latents=str(bad)), out,
                      progress=False, log=lambda m: None)


def test_image_helpers(tmp_path):
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0], np.float32).reshape(1, 1, 1, 6).repeat(3, axis=1)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 255]
    grid = make_grid(np.zeros((5, 4, 4, 3), np.uint8), ncols=2, pad=1)
    assert grid.shape == (3 * 5 + 1, 2 * 5 + 1, 3)
    save_png_atomic(np.zeros((4, 4, 3), np.uint8), str(tmp_path / "a.png"))
    assert os.listdir(tmp_path) == ["a.png"]
    a, b = initial_noise([1, 2], (4, 2, 2)), initial_noise([2], (4, 2, 2))
    assert np.array_equal(a[1], b[0]) and not np.array_equal(a[0], a[1])


def _pngs(out):
    return sorted(os.listdir(os.path.join(out, "samples")))


def _records(out):
    return [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"), encoding="utf-8")]


def test_resume_after_a_kill_between_png_and_manifest_line(tmp_path):
    """A kill after a PNG's rename but before its manifest line: --resume redoes that image under its
    own number (never renumbers), so 20 prompts end as exactly 20 PNGs and 20 lines, at the first image
    (no manifest at all yet) and in the middle of the run."""
    path = write_prompts(tmp_path / "p.txt", 20)
    run = settings(tmp_path, data_path=path, n_samples=1)
    reference = str(tmp_path / "reference")
    run_to_folder(StandInPipeline(), run, reference, progress=False, log=lambda m: None)
    expected = {n: open(os.path.join(reference, "samples", n), "rb").read() for n in _pngs(reference)}
    assert len(expected) == 20
    for killed_at in (0, 7):
        out = str(tmp_path / f"killed{killed_at}")
        os.makedirs(os.path.join(out, "samples"))
        for i in range(killed_at + 1):          # images 0..killed_at renamed into place ...
            with open(os.path.join(out, "samples", f"{i:05d}.png"), "wb") as f:
                f.write(expected[f"{i:05d}.png"])
        lines = open(os.path.join(reference, "manifest.jsonl"), encoding="utf-8").read().splitlines(True)
        if killed_at:                           # ... but the manifest line of killed_at never written
            with open(os.path.join(out, "manifest.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(lines[:killed_at])
        pipe = StandInPipeline()
        summary = run_to_folder(pipe, run, out, resume=True, progress=False, log=lambda m: None)
        assert pipe.calls[0]["prompts"] == [f"prompt number {killed_at}"]
        assert (summary["written"], summary["skipped"]) == (20 - killed_at, killed_at)
        assert _pngs(out) == sorted(expected), killed_at
        assert [r["index"] for r in _records(out)] == list(range(20))
        assert all(open(os.path.join(out, "samples", n), "rb").read() == data for n, data in expected.items())


def test_resume_finds_a_new_run_killed_at_its_first_image(tmp_path):
    """The manifest's last run is complete and an unrecorded PNG follows it: that PNG starts the run to
    resume (a second plain run killed at its first image), not a re-plan of the finished one."""
    out = str(tmp_path / "out")
    run = settings(tmp_path, prompt="a dog", n_samples=2)
    run_to_folder(StandInPipeline(), run, out, progress=False, log=lambda m: None)      # images 0, 1
    save_png_atomic(np.zeros((16, 16, 3), np.uint8), os.path.join(out, "samples", "00002.png"))  # killed run
    pipe = StandInPipeline()
    run_to_folder(pipe, run, out, resume=True, progress=False, log=lambda m: None)
    assert [c["seeds"] for c in pipe.calls] == [[7, 8]]
    assert _pngs(out) == [f"{i:05d}.png" for i in range(4)]
    assert [(r["index"], r["run_start"]) for r in _records(out)] == [(0, 0), (1, 0), (2, 2), (3, 2)]


class FailingPipeline(StandInPipeline):
    def generate(self, *args, **kwargs):
        raise UserError("the model refused")


def test_failed_start_leaves_no_folder(tmp_path):
    """An error before the first image (here from the model) removes the folders the run created, with
    and without --resume; a folder that existed before stays."""
    for resume in (False, True):
        out = tmp_path / f"new{resume}" / "out"
        with pytest.raises(UserError, match="refused"):
            run_to_folder(FailingPipeline(), settings(tmp_path, prompt="x"), str(out), resume=resume,
                          progress=False, log=lambda m: None)
        assert not (tmp_path / f"new{resume}").exists() or not out.exists()
        assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(UserError):
        run_to_folder(FailingPipeline(), settings(tmp_path, prompt="x"), str(kept), progress=False,
                      log=lambda m: None)
    assert kept.is_dir() and not os.listdir(kept)


def test_disk_full_mid_run_keeps_only_complete_images(tmp_path, monkeypatch):
    """A write that fails (ENOSPC) on image 2: one UserError line, images 0 and 1 stay recorded and
    valid, nothing of image 2 is left, no CSV/grid claims the run finished."""
    import errno
    import ldm.pipeline_run as pipeline_run
    real = pipeline_run.save_png_atomic

    def save(array, path):
        if path.endswith("00002.png"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(array, path)
    monkeypatch.setattr(pipeline_run, "save_png_atomic", save)
    out = str(tmp_path / "out")
    with pytest.raises(UserError, match=r"cannot write image 2 .*No space left on device \(errno 28\)"):
        run_to_folder(StandInPipeline(), settings(tmp_path, prompt="x", n_samples=2, n_iter=2), out,
                      progress=False, log=lambda m: None)
    assert _pngs(out) == ["00000.png", "00001.png"]
    assert [r["index"] for r in _records(out)] == [0, 1]
    assert not os.path.exists(os.path.join(out, "manifest.csv"))
    assert not [n for n in os.listdir(out) if n.startswith("grid")]


def test_manifest_is_strict_json_and_survives_a_failed_append(tmp_path, monkeypatch):
    m = Manifest(str(tmp_path))
    with pytest.raises(UserError, match="scale is not a finite number"):
        m.append({"index": 0, "file": "a.png", "scale": float("nan")})
    (tmp_path / "a.png").write_bytes(b"x")
    m.append({"index": 0, "file": "a.png", "scale": 9.0})
    good = (tmp_path / "manifest.jsonl").read_bytes()

    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        m.append({"index": 1, "file": "a.png", "scale": 9.0})
    monkeypatch.undo()
    assert (tmp_path / "manifest.jsonl").read_bytes() == good        # truncated back to its last full line
    with open(tmp_path / "manifest.jsonl", "ab") as f:              # an old manifest's NaN / non-UTF-8 lines
        f.write(b'{"index": 2, "file": "a.png", "scale": NaN}\n{"index": 3, "file": "a.png", "p": "\xff"}\n')
    assert sorted(m.read()) == [0]


def test_summary_reports_time_to_first_image_and_rate(tmp_path):
    """The run reports how long the first picture took (compilation included) and images per second."""
    lines = []
    summary = run_to_folder(StandInPipeline(), settings(tmp_path, prompt="x", n_samples=2, n_iter=3),
                            str(tmp_path / "out"), progress=False, log=lines.append)
    assert 0 < summary["first_image_s"] <= summary["seconds"]
    assert summary["images_per_s"] == pytest.approx(6 / summary["seconds"])
    assert any(line.startswith("time to first image ") and "images/s" in line for line in lines)

"""Generate a whole run into a folder: batches of prompts, per-image seeds, PNGs, grid, manifest, resume.

Layout of ``output_path``::

    samples/00000.png ...      one PNG per image (written to a temp file, then renamed)
    manifest.jsonl             one JSON line per finished image, appended after its PNG is in place
    manifest.csv               the same records as CSV (rewritten at the end of every run)
    grid-00000.png             the run's first images (at most ``GRID_MAX``), n_rows (default n_samples) per row
    intermediates/00000/...    every k-th step's predicted x0 (--save_intermediates k)

Batches follow MindONE: with a prompt file every prompt line fills its own batch of ``n_samples``
copies, ``n_iter`` times in a row (prompt, iteration, position); ``pack_prompts`` instead fills each
batch with ``n_samples`` different prompts and goes over the file ``n_iter`` times (one image per
prompt per pass: what an evaluation over a test-prompt file wants). Negative prompts come from
``negative_data_path`` line by line (line i for prompt line i, blank for lines past its end, as
MindONE pads with blank prompts), else ``negative_prompt`` for every prompt.

Images are numbered across the run in that order. A run in a folder that already has images
continues the numbering after them (as MindONE does), so nothing is overwritten; ``resume=True``
instead re-plans the run being resumed and skips every image whose PNG and manifest line are both
present. An image without its manifest line (a kill between the PNG's rename and the line) is redone
under its own number: the run resumed is the last one the manifest records, or, when that one is
complete or there is no manifest at all, the one starting at the first such unrecorded PNG after it.

Every input is checked by :func:`check_run` before a model is built or a folder made; a run that
fails before its first image removes the folders it created, and a failed write (disk full) removes
that image's files, so the folder keeps only complete, recorded images.
"""
import dataclasses
import os
import shutil
import time

import numpy as np

from ldm import run_checks
from ldm.errors import UserError
from ldm.io.images import load_image, make_grid, save_png_atomic
from ldm.io.manifest import Manifest, check_same_run
from ldm.io.prompts import iter_batches, iter_prompt_file

GRID_MAX = 64


@dataclasses.dataclass
class RunSettings:
    """Everything that decides the pictures of a run (recorded per image in the manifest)."""
    prompt: str = None                 # a single prompt, or
    data_path: str = None              # a prompt file, one prompt a line
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 50
    sampler: str = "ddim"
    scale: float = 9.0
    guidance_rescale: float = None     # None: the model spec's choice (0.7 with zero terminal SNR)
    eta: float = 0.0
    seed: int = 42
    n_iter: int = 1
    n_samples: int = 1
    fixed_code: bool = False
    sampler_options: dict = dataclasses.field(default_factory=dict)
    init_latents: str = None           # .npy of unit-variance noise (n_samples, C, H/f, W/f)
    init_image: str = None
    strength: float = 0.8
    save_intermediates: int = 0
    checkpoint: str = None
    config: str = None
    lora: str = None
    negative_data_path: str = None     # negative prompts, one a line, paired with the prompt lines
    pack_prompts: bool = False         # prompt file: n_samples different prompts per batch
    long_prompts: bool = False         # MindONE's --support_long_prompts
    n_rows: int = 0                    # grid images per row (0: n_samples)
    record_extra: dict = dataclasses.field(default_factory=dict)   # more fields of every manifest line (inpaint.py)


@dataclasses.dataclass
class PlannedBatch:
    prompts: list
    indices: list
    seeds: list
    negatives: list = None


def _lines(path):
    """Every line of a UTF-8 text file, stripped, blank ones included (streamed; one UserError naming
    the file and line for bytes that are not UTF-8)."""
    return iter_prompt_file(path, keep_blank=True)


def count_lines(path):
    return sum(1 for _ in _lines(path))


def prompt_pairs(settings):
    """Yield (prompt, negative prompt) in order. Negatives from ``negative_data_path`` go with the
    prompt line of the same number (blank prompt lines are skipped, their negative with them); lines
    past the end of that file get the blank negative."""
    negatives = _lines(settings.negative_data_path) if settings.negative_data_path else None

    def negative():
        return (settings.negative_prompt or "") if negatives is None else next(negatives, "")
    if not settings.data_path:
        yield settings.prompt, negative()
        return
    for line in _lines(settings.data_path):
        neg = negative()
        if line:
            yield line, neg


def check_negative_file(settings):
    """MindONE refuses more negative prompts than prompt lines (a single --prompt counts as one)."""
    path = settings.negative_data_path
    if not path:
        return
    if not os.path.isfile(path):
        raise UserError(f"negative prompt file not found: {path}")
    run_checks.check_input_file("--negative_data_path", path)
    n_neg = count_lines(path)
    n_pos = count_lines(settings.data_path) if settings.data_path else 1
    if n_neg > n_pos:
        raise UserError(f"{path} has {n_neg} negative prompt lines for {n_pos} prompt line(s); it may have "
                        "fewer (the rest get the blank negative) but not more")


def _prompt_batches(settings):
    """Lists of (prompt, negative) pairs, one list per batch, in run order."""
    if settings.data_path and settings.pack_prompts:
        for _ in range(settings.n_iter):
            yield from iter_batches(prompt_pairs(settings), settings.n_samples)
        return
    for pair in prompt_pairs(settings):
        for _ in range(settings.n_iter):
            yield [pair] * settings.n_samples


def plan_batches(settings, start_index=0):
    """Yield the run's batches in order; prompt files are streamed, never read whole."""
    index = start_index
    for pairs in _prompt_batches(settings):
        prompts, negatives = [p for p, _ in pairs], [n for _, n in pairs]
        indices = list(range(index, index + len(prompts)))
        if settings.fixed_code:      # the same start code for every batch (MindONE's --fixed_code)
            seeds = [settings.seed + j for j in range(len(prompts))]
        else:
            seeds = [settings.seed + i - start_index for i in indices]
        index += len(prompts)
        yield PlannedBatch(prompts, indices, seeds, negatives)


def count_images(settings):
    n_prompts = sum(1 for line in _lines(settings.data_path) if line) if settings.data_path else 1
    per_prompt = settings.n_iter if settings.data_path and settings.pack_prompts \
        else settings.n_iter * settings.n_samples
    return n_prompts * per_prompt


def load_init_latents(path, n_samples, shape):
    """The --init_latents array, checked against (n_samples, *shape)."""
    if not os.path.isfile(path):
        raise UserError(f"init latents file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise UserError(f"init latents {path} is not a .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise UserError(f"init latents {path} is an .npz archive, not one .npy array")
    if arr.shape != (n_samples,) + tuple(shape):
        raise UserError(f"init latents {path} have shape {arr.shape}, expected {(n_samples,) + tuple(shape)} "
                        "(n_samples, C, H/f, W/f)")
    if arr.dtype.kind not in "fiu":
        raise UserError(f"init latents {path} hold {arr.dtype} values; save real floats")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise UserError(f"init latents {path} hold NaN or infinite values")
    return arr


def _identity(settings, batch, j):
    """The fields --resume compares (check_same_run): what makes image j of ``batch`` this picture (with the
    CLI's own inputs in ``record_extra``: inpainting's image and mask, ControlNet's control images)."""
    return dict(index=batch.indices[j], prompt=batch.prompts[j], negative_prompt=batch.negatives[j],
                seed=batch.seeds[j], sampler=settings.sampler, steps=settings.steps, scale=settings.scale,
                width=settings.width, height=settings.height, **settings.record_extra)


def image_record(settings, batch, j, file, run_start, sampler, guidance_rescale):
    """The manifest line of one image: its prompt and seed plus every setting that decided it, the
    diffusion spec the sampler actually ran on included (prediction type, zero SNR, spacing)."""
    rec = dict(index=batch.indices[j], file=file, prompt=batch.prompts[j],
               negative_prompt=batch.negatives[j], seed=batch.seeds[j], sampler=settings.sampler,
               steps=settings.steps, scale=settings.scale, guidance_rescale=guidance_rescale,
               width=settings.width, height=settings.height, checkpoint=settings.checkpoint,
               config=settings.config, prediction_type=sampler.prediction_type,
               rescale_zero_snr=sampler.spec.rescale_zero_snr, beta_schedule=sampler.spec.beta_schedule,
               timestep_spacing=sampler.timestep_spacing, eta=settings.eta, run_start=run_start)
    if settings.sampler_options:
        rec["sampler_options"] = settings.sampler_options
    if settings.init_latents:
        rec["init_latents"] = settings.init_latents
    if settings.init_image:
        rec.update(init_image=settings.init_image, strength=settings.strength)
    if settings.lora:
        rec["lora"] = settings.lora
    if settings.long_prompts:
        rec["long_prompts"] = True
    rec.update(settings.record_extra)
    return rec


def _png_numbers(folder):
    samples = os.path.join(folder, "samples")
    found = set()
    if os.path.isdir(samples):
        for name in os.listdir(samples):
            stem, ext = os.path.splitext(name)
            if ext == ".png" and stem.isdigit():
                found.add(int(stem))
    return found


def _first_free_index(folder, manifest_records):
    """Next image number in a folder: after the manifest's last record and any existing PNG."""
    return max(set(manifest_records) | _png_numbers(folder), default=-1) + 1


def resume_start(settings, folder, done):
    """The first image number of the run ``--resume`` continues (see the module docstring): the last
    recorded run's, unless that run is complete under these settings and an unrecorded PNG follows it
    (or nothing is recorded), whose number then starts the run."""
    orphans = _png_numbers(folder) - set(done)
    if not done:
        return min(orphans, default=0)
    start = max(done.values(), key=lambda r: r["index"]).get("run_start", 0)
    end = start + count_images(settings)
    if all(i in done for i in range(start, end)):
        later = [i for i in orphans if i >= end]
        if later:
            return min(later)
    return start


def check_resume(settings, folder, done, run_start):
    """--resume into a folder made with other settings: one UserError before anything is built."""
    for batch in plan_batches(settings, run_start):
        for j, i in enumerate(batch.indices):
            if i in done:
                check_same_run(done[i], _identity(settings, batch, j))
        if batch.indices and batch.indices[0] > max(done, default=-1):
            return


def check_run(settings, output_path, resume=False, spec=None, geometry=None):
    """Every check of a run that needs no model (numbers, sizes, memory, the sampler's plan, prompt and
    init files, output folder, resume consistency), so text_to_image.py refuses a bad input in one
    line before its first log line (the memory check, which needs the model's size and attention mode,
    is :func:`ldm.memory_estimate.plan`). ``spec``/``geometry``: from the model config (default: from
    ``settings.config``). Returns the number of images the run makes."""
    from ldm.diffusion.spec import resolve_spec
    s = settings
    if geometry is None:
        geometry = run_checks.geometry_from_config(s.config) if s.config else run_checks.ModelGeometry()
    if spec is None:
        spec = resolve_spec(s.config) if s.config else resolve_spec()
    for flag, value in (("--prompt", s.prompt), ("--negative_prompt", s.negative_prompt),
                        ("--ckpt_path", s.checkpoint), ("--config", s.config), ("--lora_ckpt_path", s.lora),
                        ("--data_path", s.data_path), ("--negative_data_path", s.negative_data_path),
                        ("--init_latents", s.init_latents), ("--init_image", s.init_image)):
        run_checks.check_text(flag, value)
    run_checks.check_size(s.width, s.height, geometry)
    run_checks.check_steps(s.steps, spec)
    for flag, value in (("--n_iter", s.n_iter), ("--n_samples", s.n_samples)):
        run_checks.check_number(flag, value, 1, integer=True)
    run_checks.check_number("--n_rows", s.n_rows, 0, integer=True)
    run_checks.check_number("--save_intermediates", s.save_intermediates, 0, integer=True)
    run_checks.check_number("--scale", s.scale, -run_checks.SCALE_LIMIT, run_checks.SCALE_LIMIT)
    if s.guidance_rescale is not None:
        run_checks.check_number("--guidance_rescale", s.guidance_rescale, 0.0, 1.0)
    run_checks.check_number("--ddim_eta", s.eta, 0.0, run_checks.ETA_LIMIT)
    if s.init_image:
        run_checks.check_strength(s.strength, s.steps)
    else:
        run_checks.check_number("--strength", s.strength, 0.0, 1.0, low_open=True)
    sampler = run_checks.build_sampler(spec, s.sampler, s.eta, **s.sampler_options)
    run_checks.plan_sampler(sampler, s.steps)
    # prompt files read whole once (streamed): a bad byte on line 9000 is refused now, not mid-run
    total = count_images(s)
    check_negative_file(s)
    run_checks.check_number("--seed", s.seed, 0, run_checks.SEED_LIMIT - 1, integer=True)
    if s.seed + (s.n_samples if s.fixed_code else total) > run_checks.SEED_LIMIT:
        raise UserError(f"--seed {s.seed}: the run's {total} images use seeds up to {s.seed + total - 1}, past "
                        f"numpy's limit {run_checks.SEED_LIMIT - 1}; use a smaller --seed")
    shape = (geometry.latent_channels, s.height // geometry.vae_factor, s.width // geometry.vae_factor)
    if s.init_latents:
        load_init_latents(s.init_latents, s.n_samples, shape)
    if s.init_image:
        run_checks.check_input_file("--init_image", s.init_image)
        load_image(s.init_image)
    run_checks.check_output_path(output_path)
    if resume:
        done = Manifest(output_path).read()
        check_resume(s, output_path, done, resume_start(s, output_path, done))
    return total


def _write_image(output_path, files_j, image, intermediates, j, index, manifest, record):
    """One image's files, then its manifest line. If any write fails (disk full, read-only), that
    image's files are removed (its intermediates, its PNG) so only recorded images stay, and the
    error is one UserError line saying what was kept."""
    png = os.path.join(output_path, files_j)
    steps_dir = os.path.join(output_path, "intermediates", f"{index:05d}")
    try:
        for step, imgs in intermediates:
            save_png_atomic(imgs[j], os.path.join(steps_dir, f"{step:03d}.png"))
        save_png_atomic(image, png)
        manifest.append(record)
    except OSError as exc:
        if os.path.exists(png):
            os.remove(png)
        shutil.rmtree(steps_dir, ignore_errors=True)
        raise UserError(f"cannot write image {index} in {output_path}: {exc.strerror or exc} (errno "
                        f"{exc.errno}); the images recorded in manifest.jsonl before it are complete: free "
                        "space (or fix the folder) and rerun with --resume") from exc


def _make_folders(output_path):
    """Create output_path/samples; returns the folders this created (deepest first) for cleanup."""
    created, path = [], os.path.abspath(os.path.join(output_path, "samples"))
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(os.path.join(output_path, "samples"), exist_ok=True)
    return created


def _remove_empty(folders):
    for folder in folders:
        try:
            os.rmdir(folder)          # only if still empty
        except OSError:
            pass


def run_to_folder(pipe, settings, output_path, skip_grid=False, skip_save=False, resume=False,
                  progress=True, log=print, started=None, generate_options=None):
    """Generate every image of ``settings`` into ``output_path``; returns a summary dict.

    Everything that can be checked is checked before the first folder is made (the sampler's plan on
    the model's own spec included); then ``started()`` is called (text_to_image.py logs its summary
    line there). A failure before the first image leaves no folder this call created. ``generate_options``:
    more keyword arguments of every ``pipe.generate`` call (inpaint.py: the image and mask)."""
    check_negative_file(settings)
    manifest = Manifest(output_path)
    done = manifest.read()
    run_start = resume_start(settings, output_path, done) if resume else _first_free_index(output_path, done)
    if resume:
        check_resume(settings, output_path, done, run_start)
    sampler = pipe.make_sampler(settings.sampler, eta=settings.eta, **settings.sampler_options)
    run_checks.plan_sampler(sampler, settings.steps)
    guidance_rescale = settings.guidance_rescale
    if guidance_rescale is None:
        guidance_rescale = sampler.spec.sampling_defaults()["guidance_rescale"]
    shape = (pipe.latent_channels, settings.height // pipe.latent_factor, settings.width // pipe.latent_factor)
    init_latents = load_init_latents(settings.init_latents, settings.n_samples, shape) \
        if settings.init_latents else None
    init_image = None
    if settings.init_image:
        if not os.path.isfile(settings.init_image):
            raise UserError(f"init image not found: {settings.init_image}")
        init_image = load_image(settings.init_image, settings.width, settings.height)
    total = count_images(settings)
    if started is not None:
        started()
    created = _make_folders(output_path)
    try:
        summary = _generate_all(pipe, settings, output_path, sampler, guidance_rescale, init_latents,
                                init_image, run_start, done, total, manifest, skip_grid, skip_save, resume,
                                progress, generate_options or {})
    except BaseException:
        _remove_empty(created)       # the folders stay only if an image made it into them
        raise
    log(f"wrote {summary['written']} image(s), skipped {summary['skipped']} already present, in {output_path}")
    if summary["first_image_s"] is not None:
        log(f"time to first image {summary['first_image_s']:.1f} s (compilation included), "
            f"{summary['images_per_s']:.3g} images/s over {summary['seconds']:.1f} s")
    return summary


def _generate_all(pipe, settings, output_path, sampler, guidance_rescale, init_latents, init_image, run_start,
                  done, total, manifest, skip_grid, skip_save, resume, progress, generate_options):
    """The generation loop of :func:`run_to_folder` (its arguments already checked and prepared)."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="images", unit="img", disable=None)   # a bar on a terminal only
    grid_images, written, skipped = [], 0, 0
    clock = time.perf_counter()
    first_image_s, generated = None, 0   # compilation included: what a user waits for the first picture
    for batch in plan_batches(settings, run_start):
        files = [os.path.join("samples", f"{i:05d}.png") for i in batch.indices]
        records = [image_record(settings, batch, j, files[j], run_start, sampler, guidance_rescale)
                   for j in range(len(batch.prompts))]
        todo = [j for j, i in enumerate(batch.indices) if not (resume and i in done)]
        for j, i in enumerate(batch.indices):
            if j not in todo:
                check_same_run(done[i], records[j])
        if not todo and not skip_save:
            skipped += len(batch.indices)
            if not skip_grid and len(grid_images) < GRID_MAX:
                grid_images += [load_image(os.path.join(output_path, f), settings.width, settings.height)
                                for f in files][:GRID_MAX - len(grid_images)]
            if bar is not None:
                bar.update(len(batch.indices))
            continue
        latents = None if init_latents is None else init_latents[:len(batch.prompts)]
        result = pipe.generate(batch.prompts, negative_prompt=batch.negatives, width=settings.width,
                               height=settings.height, steps=settings.steps, sampler=sampler,
                               scale=settings.scale, guidance_rescale=guidance_rescale,
                               seeds=batch.seeds, latents=latents, init_image=init_image,
                               strength=settings.strength, intermediates_every=settings.save_intermediates,
                               long_prompts=settings.long_prompts, **generate_options)
        generated += len(batch.prompts)
        if first_image_s is None:
            first_image_s = time.perf_counter() - clock
        for j in range(len(batch.prompts)):
            if not skip_save and j in todo:
                _write_image(output_path, files[j], result.images[j], result.intermediates, j,
                             batch.indices[j], manifest, records[j])
                written += 1
            elif j not in todo:
                skipped += 1
        if not skip_grid and len(grid_images) < GRID_MAX:
            grid_images += list(result.images[:GRID_MAX - len(grid_images)])
        if bar is not None:
            bar.update(len(batch.indices))
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - clock
    summary = dict(written=written, skipped=skipped, output_path=output_path, first_image_s=first_image_s,
                   seconds=elapsed, images_per_s=generated / elapsed if generated else None)
    try:
        if not skip_grid and grid_images:
            grid_path = os.path.join(output_path, f"grid-{run_start:05d}.png")
            save_png_atomic(make_grid(np.stack(grid_images), settings.n_rows or settings.n_samples), grid_path)
            summary["grid"] = grid_path
        if not skip_save:
            summary["manifest"] = manifest.path
            summary["csv"] = manifest.write_csv()
    except OSError as exc:
        raise UserError(f"cannot write the grid / manifest.csv in {output_path}: {exc.strerror or exc} (errno "
                        f"{exc.errno}); every image and manifest.jsonl are complete: rerun with --resume to "
                        "write them") from exc
    return summary

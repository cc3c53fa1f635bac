"""Generate a whole run into a folder: batches of prompts, per-image seeds, PNGs, grid, manifest, resume.

Layout of ``output_path``::

    samples/00000.png ...      one PNG per image (written to a temp file, then renamed)
    manifest.jsonl             one JSON line per finished image, appended after its PNG is in place
    manifest.csv               the same records as CSV (rewritten at the end of every run)
    grid-00000.png             the run's first images (at most ``GRID_MAX``), n_samples per row
    intermediates/00000/...    every k-th step's predicted x0 (--save_intermediates k)

Images are numbered across the run in order (iteration, batch, position). A run in a folder that
already has images continues the numbering after them (as MindONE does), so nothing is overwritten;
``resume=True`` instead re-plans the last run recorded in the manifest and skips every image whose
PNG and manifest line are both present.
"""
import dataclasses
import os

import numpy as np

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


@dataclasses.dataclass
class PlannedBatch:
    prompts: list
    indices: list
    seeds: list


def plan_batches(settings, start_index=0):
    """Yield the run's batches in order; prompt files are streamed, never read whole."""
    index = start_index
    for _ in range(settings.n_iter):
        if settings.data_path:
            batches = iter_batches(iter_prompt_file(settings.data_path), settings.n_samples)
        else:
            batches = [[settings.prompt] * settings.n_samples]
        for prompts in batches:
            indices = list(range(index, index + len(prompts)))
            if settings.fixed_code:      # the same start code for every batch (MindONE's --fixed_code)
                seeds = [settings.seed + j for j in range(len(prompts))]
            else:
                seeds = [settings.seed + i - start_index for i in indices]
            index += len(prompts)
            yield PlannedBatch(prompts, indices, seeds)


def count_images(settings):
    if settings.data_path:
        return settings.n_iter * sum(1 for _ in iter_prompt_file(settings.data_path))
    return settings.n_iter * settings.n_samples


def load_init_latents(path, n_samples, shape):
    """The --init_latents array, checked against (n_samples, *shape)."""
    if not os.path.isfile(path):
        raise UserError(f"init latents file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise UserError(f"init latents {path} is not a .npy array: {exc}") from exc
    if arr.shape != (n_samples,) + tuple(shape):
        raise UserError(f"init latents {path} have shape {arr.shape}, expected {(n_samples,) + tuple(shape)} "
                        "(n_samples, C, H/f, W/f)")
    return arr.astype(np.float32)


def image_record(settings, batch, j, file, run_start, sampler, guidance_rescale):
    """The manifest line of one image: its prompt and seed plus every setting that decided it, the
    diffusion spec the sampler actually ran on included (prediction type, zero SNR, spacing)."""
    rec = dict(index=batch.indices[j], file=file, prompt=batch.prompts[j],
               negative_prompt=settings.negative_prompt, seed=batch.seeds[j], sampler=settings.sampler,
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
    return rec


def _first_free_index(folder, manifest_records):
    """Next image number in a folder: after the manifest's last record and any existing PNG."""
    last = max(manifest_records, default=-1)
    samples = os.path.join(folder, "samples")
    if os.path.isdir(samples):
        for name in os.listdir(samples):
            stem, ext = os.path.splitext(name)
            if ext == ".png" and stem.isdigit():
                last = max(last, int(stem))
    return last + 1


def run_to_folder(pipe, settings, output_path, skip_grid=False, skip_save=False, resume=False,
                  progress=True, log=print):
    """Generate every image of ``settings`` into ``output_path``; returns a summary dict."""
    manifest = Manifest(output_path)
    done = manifest.read()
    if resume and done:
        run_start = max(done.values(), key=lambda r: r["index"]).get("run_start", 0)
    else:
        run_start = _first_free_index(output_path, done)
    sampler = pipe.make_sampler(settings.sampler, eta=settings.eta, **settings.sampler_options)
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
    os.makedirs(os.path.join(output_path, "samples"), exist_ok=True)

    total = count_images(settings)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="images", unit="img")
    grid_images, written, skipped = [], 0, 0
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
        result = pipe.generate(batch.prompts, negative_prompt=settings.negative_prompt, width=settings.width,
                               height=settings.height, steps=settings.steps, sampler=sampler,
                               scale=settings.scale, guidance_rescale=guidance_rescale,
                               seeds=batch.seeds, latents=latents, init_image=init_image,
                               strength=settings.strength, intermediates_every=settings.save_intermediates)
        for j in range(len(batch.prompts)):
            if not skip_save and j in todo:
                save_png_atomic(result.images[j], os.path.join(output_path, files[j]))
                for step, imgs in result.intermediates:
                    save_png_atomic(imgs[j], os.path.join(output_path, "intermediates",
                                                          f"{batch.indices[j]:05d}", f"{step:03d}.png"))
                manifest.append(records[j])
                written += 1
            elif j not in todo:
                skipped += 1
        if not skip_grid and len(grid_images) < GRID_MAX:
            grid_images += list(result.images[:GRID_MAX - len(grid_images)])
        if bar is not None:
            bar.update(len(batch.indices))
    if bar is not None:
        bar.close()
    summary = dict(written=written, skipped=skipped, output_path=output_path)
    if not skip_grid and grid_images:
        grid_path = os.path.join(output_path, f"grid-{run_start:05d}.png")
        save_png_atomic(make_grid(np.stack(grid_images), settings.n_samples), grid_path)
        summary["grid"] = grid_path
    if not skip_save:
        summary["manifest"] = manifest.path
        summary["csv"] = manifest.write_csv()
    log(f"wrote {written} image(s), skipped {skipped} already present, in {output_path}")
    return summary

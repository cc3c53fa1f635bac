"""Train the VAE of a small LatentDiffusion config on an image folder; write a full-model start checkpoint.

Real Stable Diffusion ships a trained VAE; a tiny demo model has to make its own. This trains only
``first_stage_model`` (L1 + L2 reconstruction, KL weight 1e-6 as in LDM's KL-f8 recipe) and saves
every parameter of the LatentDiffusion built from ``--config`` (the UNet and text encoder stay at
their seeded random initialisation), so ``train_text_to_image.py --pretrained_model_path`` can
start from it. It also measures the latent standard deviation and prints the ``scale_factor``
(1 / std) that makes the diffusion latents unit-variance, as was done for SD's 0.18215.

    python scripts/train_tiny_vae.py --config configs/tiny-shapes-v2.yaml \
        --data_path datasets/shapes/train --output models/tiny_shapes_init.ckpt --steps 1500
"""
import argparse
import csv
import os
import sys

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.errors import UserError, run_cli  # noqa: E402


def load_images(folder, size):
    """All images listed in ``folder/img_txt.csv`` as float32 (N, 3, size, size) in [-1, 1]."""
    csv_path = os.path.join(folder, "img_txt.csv")
    if not os.path.isfile(csv_path):
        raise UserError(f"no img_txt.csv in {folder}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "dir" not in rows[0]:
        raise UserError(f"{csv_path} has no 'dir' column")
    images = []
    for row in rows:
        try:
            img = Image.open(os.path.join(folder, row["dir"])).convert("RGB")
        except (OSError, UnidentifiedImageError):
            continue
        img = img.resize((size, size), Image.BICUBIC)
        images.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    if not images:
        raise UserError(f"no readable images in {folder}")
    return np.stack(images)


def save_full_model(model, path):
    """Every LatentDiffusion parameter, MindONE names, written atomically."""
    from ldm.io.ms_checkpoint import atomic_save

    atomic_save(list(model.get_parameters()), path)


def train(args):
    import mindspore as ms
    from mindspore import ops

    from ldm.models.latent_diffusion import build_model
    from ldm.train.optim import AdamW

    ms.set_device("CPU")
    ms.set_seed(args.seed)
    model = build_model(args.config)
    vae = model.first_stage_model
    params = list(vae.get_parameters())
    for p in params:
        p.requires_grad = True
    data = load_images(args.data_path, args.image_size)
    optimizer = AdamW(params, weight_decay=0.0)
    lr = ms.Tensor(args.learning_rate, ms.float32)

    def loss_fn(x, noise):
        mean, logvar = vae.encode(x)
        recon = vae.decode(vae.sample(mean, logvar, noise))
        rec = ops.abs(recon - x).mean() + ((recon - x) ** 2).mean()
        kl = 0.5 * (mean ** 2 + ops.exp(logvar) - 1.0 - logvar).sum(axis=(1, 2, 3)).mean()
        return rec + args.kl_weight * kl, rec

    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.params, has_aux=True)

    @ms.jit
    def train_step(x, noise):
        (loss, rec), grads = grad_fn(x, noise)
        optimizer(grads, lr)
        return loss, rec

    vae.set_train(True)
    rng = np.random.default_rng(args.seed)
    mean_shape = vae.encode(ms.Tensor(data[:1]))[0].shape[1:]
    bar = tqdm(range(args.steps), desc="vae", dynamic_ncols=True)
    for _ in bar:
        idx = rng.integers(0, len(data), args.batch_size)
        noise = rng.standard_normal((args.batch_size,) + tuple(mean_shape)).astype(np.float32)
        _, rec = train_step(ms.Tensor(data[idx]), ms.Tensor(noise))
        bar.set_postfix(rec=f"{float(rec.asnumpy()):.4f}")
    vae.set_train(False)
    latents = np.concatenate([vae.encode(ms.Tensor(data[i:i + 64]))[0].asnumpy()
                              for i in range(0, len(data), 64)])
    recon = vae.decode(vae.encode(ms.Tensor(data[:64]))[0]).asnumpy()
    for p in params:
        p.requires_grad = False
    save_full_model(model, args.output)
    return float(latents.std()), float(np.abs(recon - data[:64]).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="LatentDiffusion model YAML (tiny widths)")
    parser.add_argument("--data_path", required=True, help="image folder with img_txt.csv (dir,text)")
    parser.add_argument("--output", required=True, help="full-model MindSpore .ckpt to write")
    parser.add_argument("--image_size", type=int, default=32, help="training image side in pixels")
    parser.add_argument("--steps", type=int, default=1500, help="optimisation steps")
    parser.add_argument("--batch_size", type=int, default=16, help="images per step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--kl_weight", type=float, default=1e-6, help="weight of the KL term")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and batches")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_path):
        raise UserError(f"--data_path is not a folder: {args.data_path}")
    std, l1 = train(args)
    print(f"wrote {args.output}; reconstruction L1 {l1:.4f} (pixels in [-1, 1]); "
          f"latent std {std:.4f} -> scale_factor {1.0 / std:.5f}")
    return 0


if __name__ == "__main__":
    run_cli(main)

"""A full-size Stable Diffusion checkpoint with random weights, for the memory and speed benchmarks.

No real SD weights can be downloaded here, and memory depends only on the architecture: this builds the
model of a YAML (default SD 2.1-v, configs/v2-vpred-inference.yaml: UNet 866 M, OpenCLIP ViT-H text
tower 340 M, VAE 84 M parameters) with its random initialisation and writes it as a MindSpore .ckpt with
MindONE's names, fp32 like MindONE's ``sd_v2_768_v-e12e3a9b.ckpt`` (5.2 GB). Made once, reused.

    python bench/random_sd.py --out /tmp/msd-bench/sd21v_random.ckpt
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "v2-vpred-inference.yaml")
DEFAULT_OUT = os.path.join("/tmp", "msd-bench", "sd21v_random.ckpt")


def random_checkpoint(out=DEFAULT_OUT, config=DEFAULT_CONFIG, seed=0):
    """``out`` (made if missing) holding the randomly initialised model of ``config``."""
    if os.path.isfile(out):
        return out
    sys.path.insert(0, REPO)
    import mindspore as ms
    from ldm.io.ms_checkpoint import atomic_save
    from ldm.models.latent_diffusion import build_model
    ms.set_seed(seed)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    start = time.perf_counter()
    model = build_model(config)
    atomic_save(model, out)
    print(f"wrote {out} ({os.path.getsize(out) / 2 ** 30:.2f} GiB) in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="checkpoint to write (kept if it exists)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="model YAML whose architecture to build")
    p.add_argument("--seed", type=int, default=0, help="MindSpore seed of the random initialisation")
    args = p.parse_args(argv)
    print(random_checkpoint(args.out, args.config, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())

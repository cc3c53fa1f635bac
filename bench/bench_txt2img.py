"""Seconds per image for text -> image, ours (MindSpore) next to diffusers-PyTorch on the same CPU.

Two settings, both DPM-Solver++ 2M, guidance scale 9, batch 1 (CFG = UNet batch 2):
  tiny   the random tiny SD2-style pipeline of tests/fixtures/pipeline/sd2 at 64 px (converted with
         scripts/convert_weights.py for our side), 15 steps: measures the per-step overhead;
  sd2    full SD 2.x-base size (configs/v2-inference.yaml, random weights: no hub here), 512 px,
         15 steps: measures the real cost (UNet 865 M parameters, fp32).
Each side runs in its own process, one warm-up image (compilation) then --repeats timed images.
The torch side runs this same file under the interpreter given by --torch_python / $TORCH_PYTHON.

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env   # once: the torch reference side
    python bench/bench_txt2img.py --torch_python /tmp/msd-fixture-env/bin/python [--only tiny]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
FIXTURE = os.path.join(REPO, "tests", "fixtures", "pipeline", "sd2")
PROMPT, NEGATIVE, STEPS, SCALE = "a photograph of an astronaut riding a horse", "blurry", 15, 9.0
SETTINGS = {"tiny": dict(size=64), "sd2": dict(size=512)}

# diffusers configs of SD 2.x base (512, eps): the structure of stabilityai/stable-diffusion-2-base
SD2_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                cross_attention_dim=1024, use_linear_projection=True,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD2_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
               block_out_channels=(128, 256, 512, 512), sample_size=512,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD2_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
                layer_norm_eps=1e-5, pad_token_id=0)


# ------------------------------------------------------------------ our side (MindSpore)
def ours(setting, repeats):
    sys.path.insert(0, REPO)
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    from ldm.pipeline import Text2ImagePipeline
    t0 = time.perf_counter()
    if setting == "tiny":
        tmp = tempfile.mkdtemp()
        ckpt, cfg = os.path.join(tmp, "tiny.ckpt"), os.path.join(tmp, "tiny.yaml")
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"), "--source", FIXTURE,
                        "--target", ckpt, "--config_out", cfg], check=True, capture_output=True)
        pipe = Text2ImagePipeline.from_config(cfg, ckpt)
    else:
        from ldm.models.latent_diffusion import build_model
        from ldm.util import load_config
        cfg = load_config(os.path.join(REPO, "configs", "v2-inference.yaml"))
        pipe = Text2ImagePipeline(build_model(cfg), cfg)
    build_s = time.perf_counter() - t0
    return _time(lambda seed: pipe(PROMPT, negative_prompt=NEGATIVE, width=SETTINGS[setting]["size"],
                                   height=SETTINGS[setting]["size"], steps=STEPS, sampler="dpm_solver",
                                   scale=SCALE, seed=seed), repeats, build_s)


# ------------------------------------------------------------------ reference side (diffusers)
def reference(setting, repeats):
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from make_pipeline_fixtures import SD_SCHEDULER_SETTINGS, write_tokenizer_files
    tmp = tempfile.mkdtemp()
    write_tokenizer_files(tmp)
    tok = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token="!",
                        model_max_length=77)
    scheduler = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER_SETTINGS)
    t0 = time.perf_counter()
    if setting == "tiny":
        pipe = StableDiffusionPipeline.from_pretrained(FIXTURE, tokenizer=tok, scheduler=scheduler,
                                                       safety_checker=None, torch_dtype=torch.float32)
    else:
        pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD2_VAE), unet=UNet2DConditionModel(**SD2_UNET),
                                       text_encoder=CLIPTextModel(CLIPTextConfig(**SD2_TEXT)), tokenizer=tok,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - t0
    size = SETTINGS[setting]["size"]

    def one(seed):
        with torch.no_grad():
            return pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=STEPS,
                        guidance_scale=SCALE, generator=torch.Generator().manual_seed(seed), output_type="np")
    return _time(one, repeats, build_s)


def _time(generate, repeats, build_s):
    t0 = time.perf_counter()
    generate(0)
    warm_s = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(r + 1)
        times.append(time.perf_counter() - t0)
    return dict(build_s=round(build_s, 2), first_image_s=round(warm_s, 3),
                s_per_image=round(min(times), 3), all_s=[round(t, 3) for t in times])


# ------------------------------------------------------------------ driver
def run_side(python, side, setting, repeats):
    cmd = [python, os.path.abspath(__file__), "--side", side, "--only", setting, "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                        help="python with torch + diffusers for the reference side (empty: ours only)")
    parser.add_argument("--only", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=2, help="timed images per side after the warm-up")
    parser.add_argument("--side", choices=("ours", "reference"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_txt2img.json"))
    args = parser.parse_args(argv)
    if args.side:      # child process: one side, one setting, JSON on the last stdout line
        fn = ours if args.side == "ours" else reference
        print(json.dumps(fn(args.only[0], args.repeats)))
        return 0
    rows = []
    for setting in args.only:
        mine = run_side(sys.executable, "ours", setting, args.repeats)
        ref = run_side(args.torch_python, "reference", setting, args.repeats) if args.torch_python else {}
        rows.append(dict(setting=setting, size=SETTINGS[setting]["size"], steps=STEPS, scale=SCALE,
                         ours=mine, diffusers=ref))
    print(f"txt2img, DPM-Solver++ 2M, {STEPS} steps, scale {SCALE}, batch 1, fp32, CPU "
          f"({platform.machine()}, {os.cpu_count()} cores)")
    print(f"{'setting':8} {'size':>5} {'ours s/img':>11} {'diffusers s/img':>16} {'ratio':>7}  first image (ours / diffusers)")
    for r in rows:
        a, b = r["ours"].get("s_per_image"), r["diffusers"].get("s_per_image")
        ratio = f"{a / b:7.2f}" if a and b else "      -"
        print(f"{r['setting']:8} {r['size']:5d} {a if a else r['ours'].get('error', '-')!s:>11} "
              f"{b if b else r['diffusers'].get('error', '-')!s:>16} {ratio}  "
              f"{r['ours'].get('first_image_s', '-')} / {r['diffusers'].get('first_image_s', '-')}")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a ControlNet make the demo base draw the shape where its control image puts it? Samples the held-out set
of datasets/synthetic_control.py (each prompt with its own control image, the canny edges of a shape at a random
place) WITH the ControlNet (conditioning scale 1) and WITHOUT it (scale 0: the residuals are zeroed, so the UNet
runs as the base model), same prompts and seeds, and scores both with the shape scorer's ``find_shape``
(``datasets.synthetic_control.score_control_images``): the shape's centre within ``--tolerance`` px of the
control's, its kind the control's, its colour the prompt's. Prints one JSON object {"with": {...}, "without":
{...}}; with ``--min_position`` it exits 1 when the ControlNet's position score is below it.

    python scripts/score_control.py --controlnet output/demo_controlnet/train/ckpt/sd-800_controlnet.ckpt \\
        --data datasets/shapes_control/test --output_path output/demo_controlnet/heldout --min_position 0.6
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser, fraction, output_file, output_folder, positive_float, positive_int  # noqa: E402
from ldm.cli_args import write_text_atomic  # noqa: E402
from ldm.errors import run_cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "tiny-shapes-controlnet.yaml"),
                        help="the base model's YAML (with the ControlNet's control_stage_config)")
    parser.add_argument("--ckpt_path", default=os.path.join(REPO, "models", "tiny_shapes_base.ckpt"),
                        help="the base model")
    parser.add_argument("--controlnet", required=True,
                        help="the ControlNet (train_controlnet.py's sd-N_controlnet.ckpt)")
    parser.add_argument("--data", required=True, help="the test/ folder of datasets/synthetic_control.py")
    parser.add_argument("--output_path", required=True, help="where with/ and without/ images and scores.json go")
    parser.add_argument("--sampler", default="dpm_solver", help="sampler (any text_to_image.py --sampler)")
    parser.add_argument("--sampling_steps", type=positive_int, default=15, help="sampler steps")
    parser.add_argument("--scale", type=float, default=4.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=42, help="image i uses seed + i (the same with and without)")
    parser.add_argument("--tolerance", type=positive_float, default=4.0,
                        help="a centre within this many pixels of the control's counts as following it")
    parser.add_argument("--min_position", type=fraction, default=0.0,
                        help="exit 1 if the fraction of ControlNet images that follow the control's position is below")
    args = parser.parse_args(argv)
    output_folder(args.output_path, "--output_path")
    output_file(os.path.join(args.output_path, "scores.json"), "--output_path")

    from PIL import Image

    from datasets.synthetic_control import read_truth, score_control_images
    from ldm.control_inputs import read_control_image
    truths = read_truth(args.data)
    maps = [read_control_image(t["control"], "control image") for t in truths]
    height, width = maps[0].shape[:2]
    from ldm.io.images import save_png_atomic
    from ldm.pipeline_controlnet import ControlNetPipeline
    pipe = ControlNetPipeline.from_config(args.config, args.ckpt_path, controlnets=[args.controlnet])
    prompts = [t["prompt"] for t in truths]
    result = {}
    for label, conditioning in (("with", 1.0), ("without", 0.0)):
        images = pipe(prompts, control_image=[m for m in maps], controlnet_conditioning_scale=conditioning,
                      width=width, height=height, steps=args.sampling_steps, sampler=args.sampler, scale=args.scale,
                      seed=args.seed)
        for i, image in enumerate(images):
            save_png_atomic(image, os.path.join(args.output_path, label, f"{i:05d}.png"))
        result[label] = score_control_images([Image.fromarray(img) for img in images], truths, args.tolerance)
    result["settings"] = dict(sampler=args.sampler, sampling_steps=args.sampling_steps, scale=args.scale,
                              seed=args.seed, tolerance_px=args.tolerance, controlnet=args.controlnet)
    write_text_atomic(os.path.join(args.output_path, "scores.json"), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    if result["with"]["position"] < args.min_position:
        print(f"below the bound: position >= {args.min_position} required, got {result['with']['position']:.3f}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)

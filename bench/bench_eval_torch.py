"""PyTorch side of bench_eval.py (run with an interpreter that has torch, pytorch-fid, transformers:
tests/fixtures/make_fixture_env.sh builds one).

Prints one JSON line: images/s of pytorch-fid's InceptionV3 feature extraction (same random FID
weights as ours: tests/fixtures/eval/fid_inception_random.pth) and of transformers' CLIPModel scoring
(image + text towers, PIL CLIP preprocessing) on the same images and the same weights folder.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "fixtures"))


def bench_fid(weights, paths, batch_size):
    import make_eval_fixtures as fixtures
    from pytorch_fid import inception as pfi

    def patched():
        net = fixtures.build_fid_inception_structure()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return net

    pfi.fid_inception_v3 = patched
    model = pfi.InceptionV3([3]).eval()
    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255 for p in paths]
    with torch.no_grad():
        model(torch.stack(images[:batch_size]))  # warm-up
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            model(torch.stack(images[i:i + batch_size]))
        return len(images) / (time.perf_counter() - start)


def bench_clip(folder, paths, prompts, batch_size):
    from transformers import CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    sys.path.insert(0, os.path.dirname(HERE))
    from ldm.models.tokenizer import CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    size = model.config.vision_config.image_size
    processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tok = CLIPTokenizer(pad_token="eot")

    def run(chunk_paths, chunk_prompts):
        pixels = processor(images=[Image.open(p).convert("RGB") for p in chunk_paths], return_tensors="pt")["pixel_values"]
        ids = torch.from_numpy(tok(chunk_prompts).astype(np.int64))
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(input_ids=ids)
        img = img if torch.is_tensor(img) else img.pooler_output
        txt = txt if torch.is_tensor(txt) else txt.pooler_output
        return 100 * torch.nn.functional.cosine_similarity(img, txt)

    with torch.no_grad():
        run(paths[:batch_size], prompts[:batch_size])
        start = time.perf_counter()
        for i in range(0, len(paths), batch_size):
            run(paths[i:i + batch_size], prompts[i:i + batch_size])
        return len(paths) / (time.perf_counter() - start)


def make_clip_folder(folder, preset):
    """A random CLIPModel of the preset's size saved with save_pretrained (shared with our side)."""
    from transformers import CLIPConfig, CLIPModel
    sys.path.insert(0, os.path.dirname(HERE))
    from eval.clip_presets import hf_config_from_preset
    cfg = hf_config_from_preset(preset)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"],
                         projection_dim=cfg["projection_dim"])).save_pretrained(folder)


def main():
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--fid_weights", required=True)
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--clip_folder", required=True)
    p.add_argument("--clip_preset", default="ViT-B/32")
    p.add_argument("--make_clip", action="store_true")
    p.add_argument("--prompts", nargs="+", required=True)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.make_clip:
        make_clip_folder(args.clip_folder, args.clip_preset)
        print(json.dumps({"made": args.clip_folder}))
        return
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "fid_img_per_s": bench_fid(args.fid_weights, args.images, args.batch_size),
           "clip_img_per_s": bench_clip(args.clip_folder, args.images, args.prompts, args.batch_size)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

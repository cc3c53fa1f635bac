"""FID (and optionally KID) between two image folders with pytorch-fid's Inception-v3, in MindSpore.

    python eval/eval_fid.py --real_dir data/test --gen_dir outputs/samples --kid

Weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (read without torch) from
--ckpt_path or models/, or a .ckpt converted by ``python -m eval.inception --convert``.
Features are cached per folder (``<folder>/.fid_cache/``), so one real folder is extracted once.
"""
import argparse
import json
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser, output_file, positive_int, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402


def build_parser():
    p = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--real_dir", required=True, help="folder of reference images (e.g. the test split)")
    p.add_argument("--gen_dir", required=True, help="folder of generated images")
    p.add_argument("--ckpt_path", default=None,
                   help="Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or our .ckpt "
                        "(default: models/pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--batch_size", type=positive_int, default=50, help="images per Inception forward pass")
    p.add_argument("--kid", action="store_true", help="also compute KID (unbiased; better than FID for few images)")
    p.add_argument("--kid_subsets", type=positive_int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid_subset_size", type=positive_int, default=1000,
                   help="KID: images per subset (clamped to the smaller folder)")
    p.add_argument("--seed", type=int, default=2020, help="KID subset sampling seed (torch-fidelity's default)")
    p.add_argument("--fid_method", default="eig", choices=("eig", "sqrtm"),
                   help="Tr sqrtm(S1 S2): 'sqrtm' = pytorch-fid's scipy sqrtm (minutes at 2048 dims on CPU); "
                        "'eig' = the same trace from symmetric eigenvalues (~10x faster, agrees to ~1e-6)")
    p.add_argument("--cache_dir", default=None, help="where feature caches go (default: <folder>/.fid_cache)")
    p.add_argument("--no_cache", action="store_true", help="neither read nor write feature caches")
    p.add_argument("--output_json", default=None, help="also write the results as JSON here")
    p.add_argument("--device", default="CPU", help="MindSpore device target: CPU, GPU or Ascend")
    return p


def compute_fid(real_dir, gen_dir, ckpt_path=None, batch_size=50, kid=False, kid_subsets=100,
                kid_subset_size=1000, seed=2020, cache_dir=None, use_cache=True, fid_method="eig"):
    """Returns dict(fid, n_real, n_gen, [kid_mean, kid_std, kid_subsets, kid_subset_size], imag_max, ...)."""
    from eval.features import folder_features
    from eval.fid import feature_statistics, frechet_distance, kernel_inception_distance
    from eval.inception import DEFAULT_WEIGHTS, InceptionFeatureExtractor

    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    check_inputs(real_dir, gen_dir)
    weights = ckpt_path or DEFAULT_WEIGHTS
    extractor = InceptionFeatureExtractor(weights)
    feats = {}
    for label, folder in (("real", real_dir), ("gen", gen_dir)):
        feats[label] = folder_features(folder, extractor, weights, batch_size, cache_dir, use_cache)
    s1 = feature_statistics(feats["real"]["features"])
    s2 = feature_statistics(feats["gen"]["features"])
    result = frechet_distance(s1["mu"], s1["sigma"], s2["mu"], s2["sigma"], method=fid_method)
    result.update(n_real=s1["n"], n_gen=s2["n"], real_dir=real_dir, gen_dir=gen_dir, weights=weights,
                  cached=[feats["real"]["cached"], feats["gen"]["cached"]])
    if kid:
        result.update(kernel_inception_distance(feats["real"]["features"], feats["gen"]["features"],
                                                kid_subsets, kid_subset_size, seed))
    return result


def check_inputs(real_dir, gen_dir):
    """Fail on unusable folders before MindSpore and the weights load (seconds, not minutes)."""
    from eval.images import check_headers, list_images
    for folder in (real_dir, gen_dir):
        paths = list_images(folder)
        if len(paths) < 2:
            raise UserError(f"{folder}: FID needs at least 2 images, found {len(paths)}")
        check_headers(paths)


def check_weights(ckpt_path):
    """A missing or folder weights path fails before any image is read."""
    from eval.inception import DEFAULT_WEIGHTS, missing_weights_message
    path = ckpt_path or DEFAULT_WEIGHTS
    if os.path.isdir(path):
        raise UserError(f"--ckpt_path {path} is a folder: give the Inception weights file "
                        "(pt_inception-2015-12-05-6726825d.pth or a .ckpt)")
    if not os.path.isfile(path):
        raise UserError(missing_weights_message(path))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.kid_subset_size < 2:
        raise UserError(f"--kid_subset_size must be >= 2 (KID compares pairs), got {args.kid_subset_size}")
    if args.output_json:
        output_file(args.output_json, "--output_json")
    if args.cache_dir and not args.no_cache:
        from ldm.cli_args import output_folder
        output_folder(args.cache_dir, "--cache_dir")
    check_inputs(args.real_dir, args.gen_dir)
    check_weights(args.ckpt_path)
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device(args.device)
    res = compute_fid(args.real_dir, args.gen_dir, args.ckpt_path, args.batch_size, args.kid, args.kid_subsets,
                      args.kid_subset_size, args.seed, args.cache_dir, not args.no_cache, args.fid_method)
    if args.output_json:  # written before the summary is printed: a full disk is the only message
        write_text_atomic(args.output_json, json.dumps(res, indent=1))
    print(f"FID: {res['fid']:.4f}  (N_real={res['n_real']}, N_gen={res['n_gen']}; FID is biased upward "
          f"for small N, compare only at equal N)")
    if args.kid:
        print(f"KID: {res['kid_mean']:.6f} +- {res['kid_std']:.6f}  ({res['kid_subsets']} subsets of "
              f"{res['kid_subset_size']})")
    return 0


if __name__ == "__main__":
    run_cli(main)

"""Print every parameter of the model a config builds, as ``name#(d0, d1, ...)#Float32`` one a line.

The format (and sorted order) of MindONE's reference lists ``mindspore_v{1,2}.txt``, so that
``diff <(python scripts/list_params.py --config configs/v2-vpred-inference.yaml) mindspore_v2.txt``
shows whether a MindONE checkpoint fits the config (their dtype column may differ: fp16 tables).
Parameters are created without allocating their data, so even SD 2.x lists in seconds.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser  # noqa: E402
from ldm.errors import run_cli  # noqa: E402
from ldm.util import load_config  # noqa: E402


def param_lines(model):
    """``name#shape#dtype`` for each parameter of ``model``, sorted by name."""
    return sorted(f"{p.name}#{tuple(int(d) for d in p.shape)}#{p.dtype}" for p in model.get_parameters())


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="model YAML, e.g. configs/v2-vpred-inference.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.config)  # bad paths fail before MindSpore's slow import
    import mindspore as ms
    ms.set_device("CPU")
    from ldm.models.latent_diffusion import build_model
    model = build_model(config, lazy_init=True)
    sys.stdout.write("".join(line + "\n" for line in param_lines(model)))
    return 0


if __name__ == "__main__":
    run_cli(main)

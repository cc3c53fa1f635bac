"""The graphs the toolkit compiles, built on the tiny configs through the library's own builders, each
compiled once with MindSpore's IR dump switched on (:class:`DumpContext`).

A *target* (``GraphTarget``) builds what a user run builds (a TrainRun of a recipe, the text-to-image
pipeline, ...) and compiles one or more graphs, each inside ``ctx.graph(label, **meta)``. ``meta``
records what the checks need to know about a graph: ``compute`` ("fp16" where the UNet, or the network,
computes in fp16: the O2 check applies) and ``upcast_attention`` (the SD 2.x fp32 q.k^T is then
deliberate). Samplers (ldm.diffusion) compile nothing: their step math runs op by op between the
compiled denoiser calls (see docs/ascend_audit.md).
"""
import contextlib
import copy
import dataclasses
import glob
import logging
import os
import warnings

import numpy as np

from ldm.util import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_V2 = os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")        # SD 2.x-v shaped, upcast_attention
TINY_SHAPES = os.path.join(REPO, "configs", "tiny-shapes-v2.yaml")   # the shipped demo base's config
TINY_BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")
RECIPES = os.path.join(REPO, "configs", "train")
DUMP_PASS = "backend_pass"           # the last front-end pass: the graph every backend receives
CHUNK_ROWS = 64      # chunked attention: 4 chunks of the tiny models' 256 latent tokens (32 px images)
LONG_PROMPT = " ".join(["a red circle on a white background with a small blue square in the corner"] * 12)


@dataclasses.dataclass
class DumpedGraph:
    name: str            # "<target>/<label>" (several dumps under one label: "<target>/<label>:<entry>")
    path: str            # the IR text file
    meta: dict


class DumpContext:
    """Switches MindSpore's IR dump on for the graphs compiled inside :meth:`graph` (one folder each)."""

    def __init__(self, root, target):
        self.root = root
        self.target = target
        self.graphs = []
        self.workdir = os.path.join(root, "_work", target)
        os.makedirs(self.workdir, exist_ok=True)

    @contextlib.contextmanager
    def graph(self, label, **meta):
        import mindspore as ms
        folder = os.path.join(self.root, self.target, label)
        os.makedirs(folder, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with quiet_mindspore():          # its deprecation notice for save_graphs (the env var is read once)
                ms.set_context(save_graphs=1, save_graphs_path=folder)
        try:
            yield
        finally:
            with quiet_mindspore():
                ms.set_context(save_graphs=0)
        dumps = sorted(glob.glob(os.path.join(folder, f"*{DUMP_PASS}*.ir")))
        if not dumps:
            raise RuntimeError(f"{self.target}/{label}: nothing was compiled (no {DUMP_PASS} IR in {folder}); "
                               f"was the graph already in ms.jit's cache?")
        for path in dumps:
            name = f"{self.target}/{label}"
            if len(dumps) > 1:
                from ldm.audit.ir import entry_name
                with open(path, encoding="utf-8", errors="replace") as f:
                    name += ":" + entry_name(f.read(4096))
            self.graphs.append(DumpedGraph(name, path, dict(meta)))


@contextlib.contextmanager
def quiet_mindspore():
    from mindspore import log as ms_log
    logger = ms_log._get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def prepare_environment():
    """Before MindSpore is imported: dump only the pass the audit reads (MindSpore writes ~50 IR files
    per graph otherwise). Returns the value in effect."""
    os.environ.setdefault("MS_DEV_DUMP_IR_PASSES", DUMP_PASS)
    return os.environ["MS_DEV_DUMP_IR_PASSES"]


# ---------------------------------------------------------------- shared inputs
def write_images(folder, n=4, size=32, captions=True, seed=0):
    """``n`` random RGB PNGs (and img_txt.csv with ``captions``): a training folder in MindONE's layout."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["dir,text"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))
        rows.append(f"{i}.png,a red circle {i}")
    if captions:
        with open(os.path.join(folder, "img_txt.csv"), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return folder


def model_uses_upcast(config):
    unet = ((load_config(config).get("model") or {}).get("params") or {}).get("unet_config") or {}
    return bool((unet.get("params") or {}).get("upcast_attention", False))


# ---------------------------------------------------------------- training steps
def _train_argv(ctx, extra):
    data = write_images(os.path.join(ctx.workdir, "data"))
    return ["-c", os.path.join(RECIPES, "train_config_tiny_vpred.yaml"), "--model_config", TINY_V2,
            "--data_path", data, "--output_path", os.path.join(ctx.workdir, "out"), "--image_size", "32",
            "--train_batch_size", "2", "--max_steps", "1", "--use_ema", "False", "--validation_steps", "0",
            "--show_progress", "False", "--log_level", "warning"] + list(extra)


def compile_train_steps(ctx, run, compute):
    """Compile what TrainRun.loop compiles: the encode graph, then the step (or accumulate + apply)."""
    import mindspore as ms
    meta = dict(compute=compute, upcast_attention=model_uses_upcast(run.cfg.model_config))
    batch = run.host_batch(0, 0)
    with ctx.graph("encode", compute="fp32", upcast_attention=meta["upcast_attention"]):
        inputs = run.device_inputs(*batch)
    lr = ms.Tensor(np.float32(1e-5))
    if run.cfg.gradient_accumulation_steps > 1:
        with ctx.graph("accumulate", **meta):
            run.step_fn.accumulate(*inputs)
        with ctx.graph("apply", **meta):
            run.step_fn.apply(lr)
    else:
        with ctx.graph("step", **meta):
            run.step_fn.step(*inputs, lr)


def train_target(extra, compute="fp32", tool="train"):
    def build(ctx):
        if tool == "dreambooth":
            from ldm.train import dreambooth as mod
            run_cls, argv = mod.DreamBoothRun, _dreambooth_argv(ctx, extra)
        elif tool == "textual_inversion":
            from ldm.train import textual_inversion as mod
            run_cls, argv = mod.TextualInversionRun, _ti_argv(ctx, extra)
        else:
            from ldm.train import config as mod
            from ldm.train.loop import TrainRun as run_cls
            argv = _train_argv(ctx, extra)
        cfg = mod.parse_config(argv)
        run = run_cls(cfg)
        try:
            compile_train_steps(ctx, run, compute)
        finally:
            logging.getLogger("ldm").setLevel(logging.NOTSET)   # TrainRun sets the recipe's log level
    return build


def _dreambooth_argv(ctx, extra):
    instance = write_images(os.path.join(ctx.workdir, "instance"), captions=False)
    classes = write_images(os.path.join(ctx.workdir, "class"), captions=False, seed=1)
    return ["-c", os.path.join(RECIPES, "train_config_dreambooth_v2.yaml"), "--model_config", TINY_SHAPES,
            "--pretrained_model_path", TINY_BASE, "--instance_data_dir", instance, "--class_data_dir", classes,
            "--num_class_images", "4", "--output_path", os.path.join(ctx.workdir, "out"), "--image_size", "32",
            "--train_batch_size", "1", "--max_steps", "1", "--show_progress", "False",
            "--log_level", "warning"] + list(extra)


def _ti_argv(ctx, extra):
    data = write_images(os.path.join(ctx.workdir, "ti"), captions=False)
    return ["-c", os.path.join(RECIPES, "train_config_textual_inversion_v2.yaml"), "--model_config", TINY_SHAPES,
            "--pretrained_model_path", TINY_BASE, "--train_data_dir", data, "--initializer_token", "circle",
            "--output_path", os.path.join(ctx.workdir, "out"), "--image_size", "32", "--image_filter_size", "16",
            "--train_batch_size", "1", "--gradient_accumulation_steps", "1", "--max_steps", "1",
            "--show_progress", "False", "--log_level", "warning"] + list(extra)


# ---------------------------------------------------------------- sampling and the encoders
def fp16_config(path):
    """The model YAML with every part that has a ``use_fp16`` switch (UNet, text encoder, VAE) set to
    True: what "True on Ascend" in our YAMLs means."""
    config = copy.deepcopy(load_config(path))
    params = config["model"]["params"]
    params["use_fp16"] = True
    for part in ("unet_config", "first_stage_config", "cond_stage_config"):
        if part in params:
            params[part].setdefault("params", {})["use_fp16"] = True
    return config


def pipeline_target(precision="fp32", modes=("standard", "chunked"), config_path=TINY_V2, encoders=True):
    """The text-to-image pipeline (ldm.pipeline): text encoder (77 tokens and a long prompt), VAE decode
    and encode (img2img), then one sampling run per attention mode with and without guidance (its
    compiled denoisers: GuidedDenoiser, PlainDenoiser)."""
    def build(ctx):
        from ldm.models.attention_ops import AttentionSettings
        from ldm.models.latent_diffusion import build_model
        from ldm.pipeline import Text2ImagePipeline
        config = fp16_config(config_path) if precision == "fp16" else load_config(config_path)
        meta = dict(compute=precision, upcast_attention=model_uses_upcast(config_path))
        model = build_model(config)
        size = 32
        for mode in modes:
            model.set_attention(AttentionSettings(mode, CHUNK_ROWS if mode == "chunked" else None))
            pipe = Text2ImagePipeline(model, config)
            if encoders and mode == modes[0]:
                with ctx.graph("text_encoder", **meta):
                    context = pipe.encode_prompts(["a red circle"], [""])
                with ctx.graph("text_encoder_long_prompt", **meta):
                    pipe.encode_prompts([LONG_PROMPT], [""], long_prompts=True)
                with ctx.graph("vae_decode", **meta):
                    pipe.decode(ms_zeros((1, 4, size // 2, size // 2)))
                with ctx.graph("vae_encode", **meta):
                    pipe.encode_images(np.zeros((1, size, size, 3), np.uint8), [0])
            else:                              # the text/VAE graphs of this pipeline, compiled unaudited
                context = pipe.encode_prompts(["a red circle"], [""])
                pipe.decode(ms_zeros((1, 4, size // 2, size // 2)))
            del context
            pipe.encode_prompts(["a red circle"])  # the plain call's (1, 77) text graph, compiled unaudited
            with ctx.graph(f"guided_denoiser_{mode}", **meta):
                pipe.generate("a red circle", width=size, height=size, steps=1, sampler="dpm_solver", scale=5.0,
                              seed=0)
            with ctx.graph(f"plain_denoiser_{mode}", **meta):
                pipe.generate("a red circle", width=size, height=size, steps=1, sampler="ddim", scale=1.0, seed=0)
    return build


def ms_zeros(shape):
    import mindspore as ms
    return ms.Tensor(np.zeros(shape, np.float32))


@dataclasses.dataclass
class GraphTarget:
    name: str
    build: object          # fn(DumpContext)
    help: str


TARGETS = [
    GraphTarget("train_fp32", train_target([]), "training step, fp32 (train_config_tiny_vpred.yaml, tiny-v2-vpred)"),
    GraphTarget("train_fp16_o2", train_target(["--amp_level", "O2", "--clip_grad", "True"], "fp16"),
                "training step, amp_level O2 (fp16 UNet), dynamic loss scaling, gradient clipping"),
    GraphTarget("train_fp16_o2_chunked", train_target(["--amp_level", "O2", "--attention", "chunked",
                                                       "--attention_chunk", str(CHUNK_ROWS)], "fp16"),
                "training step, O2, chunked attention (its hand-written backward)"),
    GraphTarget("train_ema_accumulate", train_target(["--use_ema", "True", "--gradient_accumulation_steps", "2"]),
                "training with EMA and gradient accumulation (accumulate + apply graphs)"),
    GraphTarget("train_lora", train_target(["--use_lora", "True", "--lora_ft_text_encoder", "True",
                                            "--lora_fp16", "False"]),
                "LoRA on UNet and text encoder, fp32 (text encoder inside the step)"),
    GraphTarget("train_lora_fp16_o2", train_target(["--use_lora", "True", "--lora_fp16", "True",
                                                    "--amp_level", "O2"], "fp16"),
                "LoRA on the UNet, lora_fp16 (MindONE's default), amp_level O2"),
    GraphTarget("textual_inversion", train_target([], tool="textual_inversion"),
                "textual inversion step (train_config_textual_inversion_v2.yaml on the tiny shapes base)"),
    GraphTarget("dreambooth", train_target([], tool="dreambooth"),
                "DreamBooth step with prior preservation (train_config_dreambooth_v2.yaml)"),
    GraphTarget("pipeline_fp32", pipeline_target("fp32"),
                "txt2img/img2img: text encoder (+ long prompt), VAE decode/encode, guided and plain denoisers "
                "with standard and chunked attention"),
    GraphTarget("pipeline_fp16", pipeline_target("fp16"),
                "the same with use_fp16 True in every part of the YAML (what runs on Ascend)"),
]

"""Bad adapters, embeddings, checkpoints and resume files (issue 28's classes), through the CLIs that read
them: each is exit 2 and one stderr line naming the file and the tensor, nothing written, nothing that was
there changed. The crafted files come from tests/fixtures/make_bad_adapters.py; all cases of a table run
in one child interpreter (tests/cli_table.py). The readers' own fuzz is at the end of the file."""
import os
import sys

import numpy as np
import pytest

from cli_table import REPO, failures, run_table

T2I = ["--config", "{repo}/configs/tiny-shapes-v2.yaml", "--ckpt_path", "{repo}/models/tiny_shapes_base.ckpt",
       "--W", "32", "--H", "32", "--sampling_steps", "2", "--n_iter", "1", "--n_samples", "1",
       "--output_path", "{tmp}/out"]
TRAIN = ["--model_config", "{tmp}/standin.yaml", "--data_path", "{tmp}/data", "--output_path", "{tmp}/out",
         "--image_size", "32", "--train_batch_size", "2", "--max_steps", "4", "--jit", "False",
         "--show_progress", "False"]
NAN = "holds 1 non-finite value(s) (NaN/inf)"


def t2i(name, extra, expect, setup="bad_adapters"):
    return dict(name=name, script="text_to_image.py", argv=T2I + extra, expect=expect, setup=setup,
                absent=["{tmp}/out"])


def lora(file, expect):
    return t2i(f"LoRA {file}", ["--lora_ckpt_path", "{tmp}/bad/" + file], expect)


def embedding(file, expect):
    return t2i(f"embedding {file}", ["--ti_ckpt_path", "{tmp}/bad/" + file], expect)


def resume(name, setup, expect, extra=("--resume", "True")):
    """A finished run resumed: refused, and nothing in its output folder changes (args.yaml included)."""
    return dict(name=name, script="train_text_to_image.py", argv=TRAIN + list(extra), expect=expect, setup=setup,
                unchanged=["{tmp}/out"])


SILENT_ADAPTERS = [
    lora("kohya_up_nan.safetensors", f"lora_up.weight {NAN}"),
    lora("kohya_down_inf.safetensors", f"lora_down.weight {NAN}"),
    lora("kohya_down_neginf_fp16.safetensors", f"lora_down.weight {NAN}"),
    lora("kohya_down_int32.safetensors", "lora_down.weight has dtype int32, but a LoRA must be floating point"),
    lora("kohya_up_bool.safetensors", "lora_up.weight has dtype bool, but a LoRA must be floating point"),
    lora("kohya_alpha_nan.safetensors", "to_q.alpha (LoRA alpha) is nan, not a finite number"),
    lora("kohya_alpha_inf.safetensors", "to_q.alpha (LoRA alpha) is inf, not a finite number"),
    lora("kohya_alpha_negative.safetensors", "to_q.alpha is -4: a negative LoRA alpha would apply the adapter"),
    lora("kohya_alpha_vector.safetensors", "to_q.alpha must be one number (LoRA alpha), got dtype float32 shape (2,)"),
    lora("kohya_alpha_bool.safetensors", "to_q.alpha must be one number (LoRA alpha), got dtype bool"),
    lora("peft_a_nan.safetensors", f"to_q.lora_A.weight {NAN}"),
    lora("peft_b_int64.safetensors", "to_q.lora_B.weight has dtype int64"),
    lora("ours_up_nan.ckpt", f"to_q.lora_up.weight {NAN}"),
    lora("ours_down_int32.ckpt", "to_q.lora_down.weight has dtype int32"),
    lora("ours_alpha_inf.ckpt", "lora_meta.alpha (LoRA alpha) is inf"),
    lora("ours_alpha_negative.ckpt", "lora_meta.alpha is -1: a negative LoRA alpha"),
    embedding("embeds_nan.safetensors", f"tensor <crafted> {NAN}"),
    embedding("embeds_int64.safetensors", "<crafted> has dtype int64, but a textual-inversion embedding must be"),
    embedding("embeds_bool.safetensors", "<crafted> has dtype bool"),
    embedding("embeds_mindone_inf_ti.ckpt", f"cond_stage_model.transformer.embedding_table {NAN}"),
    embedding("embeds_a1111_nan.pt", f"string_to_param['*'] {NAN}"),
    embedding("embeds_a1111_int64.pt", "string_to_param['*'] has dtype int64"),
    t2i("model weights with inf", ["--ckpt_path", "{tmp}/nan.ckpt"], f"nan.ckpt: tensor model.diffusion_model.",
        setup="weights_nan"),
    dict(name="convert a NaN LoRA", script="scripts/convert_weights.py",
         argv=["--source", "{tmp}/bad/ours_up_nan.ckpt", "--config", "{repo}/configs/tiny-shapes-v2.yaml",
               "--target", "{tmp}/x.safetensors", "--to", "diffusers_lora"],
         expect=f"lora_up.weight {NAN}", setup="bad_adapters", absent=["{tmp}/x.safetensors"]),
    dict(name="convert NaN weights", script="scripts/convert_weights.py",
         argv=["--source", "{tmp}/nan.ckpt", "--config", "{repo}/configs/tiny-shapes-v2.yaml",
               "--target", "{tmp}/x", "--to", "diffusers"],
         expect=NAN, setup="weights_nan", absent=["{tmp}/x"]),
]

RESUME_INTEGRITY = [
    resume("10 bytes flipped in train_resume.ckpt", "resume_flipped",
           "train_resume.ckpt: corrupt MindSpore checkpoint: its CRC-32 does not match"),
    resume("resume file cut in half", "resume_truncated", "trunc.ckpt: corrupt MindSpore checkpoint",
           extra=("--resume", "{tmp}/trunc.ckpt")),
    resume("resume state with a NaN (no CRC)", "resume_nan_state", NAN),
    resume("resume state of integers (no CRC)", "resume_int_state", "has dtype int32, but a state must be floating"),
    dict(name="10 bytes flipped in sd-2.ckpt", script="text_to_image.py",
         argv=["--config", "{tmp}/out/ckpt/model_config.yaml", "--ckpt_path", "{tmp}/out/ckpt/sd-2.ckpt", "--W", "64",
               "--H", "64", "--sampling_steps", "2", "--n_samples", "1", "--n_iter", "1", "--output_path",
               "{tmp}/gen"],
         expect="sd-2.ckpt: corrupt MindSpore checkpoint: its CRC-32 does not match", setup="ckpt_flipped",
         absent=["{tmp}/gen"], unchanged=["{tmp}/out"]),
    t2i("a byte flipped in our embedding file", ["--ti_ckpt_path", "{tmp}/embeds.safetensors"],
        "embeds.safetensors: its content no longer matches the CRC-32 recorded", setup="embeds_flipped"),
]

# a notice was due before the refusal: the refusal must still be the only line
REFUSE_FIRST = [
    t2i("SD 1.x LoRA on an SD 2.x model, with notices due",
        ["--lora_ckpt_path", "{repo}/tests/fixtures/lora/sd1_kohya.safetensors", "--lora_ft_text_encoder", "False",
         "--attention", "flash"], "a LoRA made for another base model, e.g. SD 1.x adapters on an SD 2.x model?"),
    t2i("NaN weights with the flash notice due", ["--ckpt_path", "{tmp}/nan.ckpt", "--attention", "flash"], NAN,
        setup="weights_nan"),
    resume("truncated resume with the ModelArts notice due", "resume_truncated", "corrupt MindSpore checkpoint",
           extra=("--resume", "{tmp}/trunc.ckpt", "--enable_modelarts", "True")),
    resume("flipped resume with the sink notice due", "resume_flipped", "CRC-32 does not match",
           extra=("--resume", "True", "--dataset_sink_mode", "True")),
]

TEXT = [
    t2i("adapter_config.json not UTF-8", ["--lora_ckpt_path", "{tmp}/peft/sd2_peft.safetensors"],
        "adapter_config.json line 1 is not UTF-8 text (byte 0xe9)", setup="peft_config_not_utf8"),
]

TABLES = {"silent adapters and embeddings": SILENT_ADAPTERS, "resume and checkpoint integrity": RESUME_INTEGRITY,
          "refuse before notices": REFUSE_FIRST, "text encodings": TEXT}


def test_every_class_is_one_line_and_changes_nothing():
    cases = [c for table in TABLES.values() for c in table]
    results = run_table(cases)
    bad = failures(cases, results)
    assert not bad, "\n".join(bad)
    print({name: len(table) for name, table in TABLES.items()})


# ------------------------------------------------------------------ reader fuzz (no CLI: one process)
FUZZ_CASES = 300


def _fuzz_state(rng, index):
    """A random adapter or embedding state: mostly plausible, with random dtypes, non-finite values and
    alphas; returns (state, kind)."""
    dtypes = [np.float32, np.float16, np.float64, np.int32, np.int64, np.int8, np.uint8, np.bool_]
    kind = ("kohya", "peft", "embedding")[index % 3]
    width, rank = int(rng.integers(1, 6)), int(rng.integers(1, 4))

    def tensor(shape):
        value = rng.standard_normal(shape)
        if rng.random() < 0.3:
            value.reshape(-1)[rng.integers(value.size)] = rng.choice([np.nan, np.inf, -np.inf])
        dtype = dtypes[0] if rng.random() < 0.5 else dtypes[rng.integers(len(dtypes))]
        with np.errstate(invalid="ignore"):
            return (value * 5).astype(dtype)
    if kind == "embedding":
        return {"<tok>": tensor((rank, width))}, kind
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from make_bad_adapters import KOHYA, PEFT
    if kind == "kohya":
        state = {f"{KOHYA}.lora_down.weight": tensor((rank, width)), f"{KOHYA}.lora_up.weight": tensor((width, rank))}
        if rng.random() < 0.7:
            alpha_type = dtypes[rng.integers(len(dtypes))] if rng.random() < 0.3 else np.float32
            with np.errstate(invalid="ignore"):
                state[f"{KOHYA}.alpha"] = np.asarray(rng.choice([0.0, 1.0, -2.0, np.nan, np.inf, 4.0]), alpha_type)
        return state, kind
    return {f"{PEFT}.lora_A.weight": tensor((rank, width)), f"{PEFT}.lora_B.weight": tensor((width, rank))}, kind


def test_fuzzed_adapters_and_embeddings_are_refused_or_finite_floats(tmp_path):
    """300 random states through the readers: each is refused with one CheckpointError naming the file
    and a tensor, or everything read back is floating and finite with an alpha >= 0."""
    from safetensors.numpy import save_file

    from ldm.convert.lora_formats import alpha_value, read_lora
    from ldm.errors import CheckpointError
    from ldm.models.textual_inversion import read_embedding_file
    rng = np.random.default_rng(28)
    verdicts = {"refused": 0, "accepted": 0}
    for index in range(FUZZ_CASES):
        state, kind = _fuzz_state(rng, index)
        path = str(tmp_path / f"f{index}.safetensors")
        save_file(state, path)
        try:
            if kind == "embedding":
                _, rows = read_embedding_file(path)
                values = [rows]
            else:
                lora = read_lora(path)
                values = [v for k, v in lora.arrays.items() if not k.endswith(".alpha")]
                alphas = [alpha_value(k, v, path, 1) for k, v in lora.arrays.items() if k.endswith(".alpha")]
                assert all(a >= 0 and np.isfinite(a) for a in alphas)
        except CheckpointError as exc:
            message = str(exc)
            assert path in message and "\n" not in message and ("tensor" in message or "alpha" in message), message
            verdicts["refused"] += 1
            continue
        assert all(v.dtype.kind == "f" and np.isfinite(v).all() for v in values), (index, state)
        verdicts["accepted"] += 1
    print(verdicts)
    assert verdicts["refused"] > 50 and verdicts["accepted"] > 50

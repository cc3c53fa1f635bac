"""Textual-inversion tokens: added to the tokenizer, embedded by a small Parameter of their own, saved
and read in MindONE's, diffusers' and A1111's file formats, and expanded in prompts.

The new rows live in ``TextEncoder.added_embeddings`` (one ``[num_vectors, width]`` Parameter named
``cond_stage_model.transformer.added_embeddings``), concatenated after the frozen vocabulary table at
lookup. Training therefore gives gradients and optimiser state to those rows only, and the frozen table
is never written (MindONE resizes the whole table, trains it and copies the old rows back every step).

Names follow MindONE's ``TextualInversionManager``: ``num_vectors`` tokens ``<tok>``, ``<tok>_1``, ...;
a prompt's ``<tok>`` becomes ``"<tok> <tok>_1 ..."`` unless that joined string is already in it. Adding
the tokens registers that rule with the model's tokenizer, so every prompt it encodes is expanded
(pipeline, text_to_image.py, validation images) while manifests keep the prompt as written.

Files (what :func:`read_embedding_file` accepts, sniffed by content):
- MindONE ``*_ti.ckpt``: ``cond_stage_model.transformer.embedding_table`` = the new rows
  ``[num_vectors, dim]``, append-dict ``placeholder_token`` (text) and ``num_vectors`` (int).
- diffusers ``learned_embeds.safetensors`` (or ``.bin``): ``{placeholder: [num_vectors, dim]}``
  (a 1-d vector is one row).
- A1111 ``.pt``: ``{"string_to_param": {"*": [n, dim]}, "name": ...}``; the token is ``name``
  (else the file name), as diffusers' ``load_textual_inversion`` reads it; A1111 ``.safetensors``
  ``{"emb_params": [n, dim]}`` take the file name.
"""
import functools
import logging
import os

import mindspore as ms
import numpy as np

from ldm.errors import CheckpointError, UserError
from ldm.io.tensor_checks import check_weight

_log = logging.getLogger("ldm.textual_inversion")

MINDONE_TABLE = "cond_stage_model.transformer.embedding_table"
ADDED_NAME = "cond_stage_model.transformer.added_embeddings"


MAX_VECTORS = 75     # a prompt holds 77 tokens, start and end included: no more vectors can ever be used


def placeholder_tokens(placeholder_token, num_vectors):
    """``[tok, tok_1, ..., tok_{n-1}]`` (MindONE's dummy tokens for multi-vector concepts)."""
    num_vectors = int(num_vectors)
    if num_vectors < 1:
        raise UserError(f"num_vectors must be >= 1, got {num_vectors}")
    if num_vectors > MAX_VECTORS:
        raise UserError(f"num_vectors {num_vectors}: at most {MAX_VECTORS} (a prompt holds 77 tokens with its start "
                        f"and end, so more vectors could never all be used)")
    if not placeholder_token or not str(placeholder_token).strip():
        raise UserError("placeholder_token is empty (e.g. --placeholder_token '<cat-toy>')")
    return [placeholder_token] + [f"{placeholder_token}_{i}" for i in range(1, num_vectors)]


def expand_prompt(prompt, placeholder_token, num_vectors, warn=True):
    """MindONE's ``manage_prompt``: replace every ``placeholder_token`` by the joined tokens unless
    the joined string is already present; a prompt without the token is returned as is (a warning
    with ``warn``)."""
    joined = " ".join(placeholder_tokens(placeholder_token, num_vectors))
    if joined in prompt:
        return prompt
    if placeholder_token in prompt:
        return prompt.replace(placeholder_token, joined)
    if warn:
        _log.warning("the placeholder token %s should be in the text prompt, but is not: %r",
                     placeholder_token, prompt)
    return prompt


def _encoder_parts(model):
    cond = getattr(model, "cond_stage_model", None)
    tower = getattr(cond, "transformer", None)
    if cond is None or not hasattr(cond, "tokenizer") or not hasattr(tower, "added_embeddings"):
        raise UserError("textual inversion needs a model whose cond_stage_model is the CLIP text encoder "
                        "(ldm.models.text_encoder.FrozenCLIPEmbedder)")
    return cond.tokenizer, tower


def token_embedding(model, token):
    """The frozen embedding row of ``token``, which must be one vocabulary token (MindONE's rule for
    initializer_token)."""
    tokenizer, tower = _encoder_parts(model)
    ids = tokenizer.encode(token)
    if len(ids) != 1:
        raise UserError(f"initializer_token {token!r} must be a single token, it is {len(ids)} tokens")
    return tower.embedding_table.asnumpy()[ids[0]]


def add_placeholder_tokens(model, placeholder_token, rows):
    """Add ``placeholder_token``'s ``len(rows)`` tokens to the tokenizer and their rows ``[n, width]``
    as the text encoder's trainable ``added_embeddings``. Returns the token strings."""
    tokenizer, tower = _encoder_parts(model)
    if tower.added_embeddings is not None:
        raise UserError("this model already holds textual-inversion tokens (one concept at a time)")
    rows = np.asarray(rows, dtype=np.float32)
    table = tower.embedding_table
    if rows.ndim != 2 or rows.shape[1] != table.shape[1]:
        raise UserError(f"textual-inversion embedding of shape {rows.shape} does not fit this text encoder "
                        f"(width {table.shape[1]}); was it trained for another model (SD 1.x vs 2.x)?")
    if table.shape[0] != tokenizer.vocab_size:
        raise UserError(f"the text encoder has {table.shape[0]} token rows but the tokenizer "
                        f"{tokenizer.vocab_size} tokens; cannot place new tokens after both")
    tokens = placeholder_tokens(placeholder_token, rows.shape[0])
    tokenizer.add_tokens(tokens)
    # every prompt the model tokenizes gets MindONE's expansion (pipeline, CLI, validation, training captions)
    tokenizer.prompt_filters.append(functools.partial(expand_prompt, placeholder_token=placeholder_token,
                                                      num_vectors=rows.shape[0], warn=False))
    tower.added_embeddings = ms.Parameter(ms.Tensor(rows), name=ADDED_NAME, requires_grad=False)
    return tokens


def added_embeddings(model):
    """The Parameter of the added rows (None when the model has none)."""
    return _encoder_parts(model)[1].added_embeddings


# ------------------------------------------------------------------ files
def save_mindone(path, rows, placeholder_token):
    """MindONE's ``*_ti.ckpt`` (what its text_to_image.py --ti_ckpt_path loads), written atomically."""
    from ldm.io.ms_checkpoint import atomic_save
    rows = np.asarray(rows, dtype=np.float32)
    append = dict(placeholder_token=str(placeholder_token), num_vectors=int(rows.shape[0]))
    return atomic_save([{"name": MINDONE_TABLE, "data": ms.Tensor(rows)}], path, append_dict=append)


def save_learned_embeds(path, rows, placeholder_token):
    """diffusers' ``learned_embeds.safetensors``: ``{placeholder_token: [num_vectors, dim]}``."""
    from ldm.convert.readers import write_safetensors
    write_safetensors({str(placeholder_token): np.asarray(rows, dtype=np.float32)}, path)
    return path


def _rows(value, path, name):
    """The embedding rows [n, dim] float32; a non-float or non-finite tensor is one CheckpointError
    naming the file and the tensor (a NaN embedding would draw black images)."""
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    check_weight(name, value, path, "textual-inversion embedding")
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise CheckpointError(f"{path}: textual-inversion embedding has shape {arr.shape}, expected [n, dim]")
    return arr


def read_embedding_file(path):
    """``(placeholder_token, rows [num_vectors, dim] float32)`` from a MindONE, diffusers or A1111 file."""
    from ldm.convert.readers import read_mindspore, read_safetensors, sniff_format
    from ldm.convert.torch_pickle import load_torch_file
    fmt = sniff_format(path)
    if fmt == "mindspore":
        entries = read_mindspore(path)
        if MINDONE_TABLE not in entries:
            raise CheckpointError(f"{path}: not a MindONE textual-inversion checkpoint (no {MINDONE_TABLE})")
        rows = _rows(entries[MINDONE_TABLE], path, MINDONE_TABLE)
        token = str(entries["placeholder_token"]) if "placeholder_token" in entries else ""
        if "num_vectors" in entries and int(entries["num_vectors"]) != rows.shape[0]:
            raise CheckpointError(f"{path}: num_vectors {int(entries['num_vectors'])} but {rows.shape[0]} rows")
        if not token:
            raise CheckpointError(f"{path}: no placeholder_token recorded in the checkpoint")
        return token, rows
    state = read_safetensors(path) if fmt == "safetensors" else load_torch_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: textual-inversion file holds no dict")
    if "string_to_param" in state:                          # A1111 / original textual_inversion repo
        params = state["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise CheckpointError(f"{path}: string_to_param must hold one embedding")
        name = state.get("name")
        token = name if isinstance(name, str) and name else os.path.splitext(os.path.basename(path))[0]
        key, value = next(iter(params.items()))
        return token, _rows(value, path, f"string_to_param[{key!r}]")
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    if len(arrays) != 1:
        raise CheckpointError(f"{path}: expected one embedding {{token: [n, dim]}}, found {len(arrays)} tensors")
    token, value = next(iter(arrays.items()))
    if token == "emb_params":                               # A1111 .safetensors: no name inside
        token = os.path.splitext(os.path.basename(path))[0]
    return str(token), _rows(value, path, str(token))


class TextualInversion:
    """A loaded concept: its placeholder and tokens. Returned by :func:`load_textual_inversion`;
    ``expand(prompt)`` is MindONE's ``manage_prompt`` (the model's tokenizer already applies it)."""

    def __init__(self, placeholder_token, num_vectors):
        self.placeholder_token = placeholder_token
        self.num_vectors = int(num_vectors)
        self.tokens = placeholder_tokens(placeholder_token, num_vectors)

    def expand(self, prompt):
        return expand_prompt(prompt, self.placeholder_token, self.num_vectors)


def load_textual_inversion(model, path, token=None):
    """Read ``path`` (any format of :func:`read_embedding_file`) into ``model``'s text encoder.
    ``token`` overrides the file's placeholder (as diffusers' ``token=``). Returns a TextualInversion."""
    placeholder, rows = read_embedding_file(path)
    placeholder = token or placeholder
    add_placeholder_tokens(model, placeholder, rows)
    _log.info("textual inversion %s: %d vector(s) from %s", placeholder, rows.shape[0], path)
    return TextualInversion(placeholder, rows.shape[0])

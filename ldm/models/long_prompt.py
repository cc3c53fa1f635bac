"""Prompts longer than the text encoder's 77 tokens, as MindONE's ``--support_long_prompts`` handles them.

Rule (MindONE ``utils/long_prompt.py``, read 2026-12-01): the prompt's BPE ids (no SOT/EOT, not cut)
are taken 75 at a time while at least 75 remain, each chunk becoming ``[SOT] + 75 ids + [EOT]``; what
is left (or the whole prompt, if it is shorter than 75 ids) becomes one last chunk ``[SOT] + ids +
[EOT]`` padded to 77. A prompt of exactly 75 or 150 ids therefore has 1 or 2 chunks, 76 ids make 2.
Every prompt of a batch, and its negative prompt, is padded to the batch's largest number of chunks
with the chunk of the empty prompt. Each chunk is encoded on its own (positions 0..76 every time) and
the chunk embeddings are concatenated along the sequence axis: (N, k * 77, D) for the UNet's
cross-attention, which takes any context length.

Padding inside a chunk uses the tokenizer's pad id (0 for SD 2.x, as MindONE; EOT for SD 1.x, where
MindONE writes 0 because its SD 1.x tokenizer pads with 0 too), so a short prompt gets exactly the
embedding of the ordinary 77-token path.
"""
import numpy as np


def prompt_chunks(tokenizer, text):
    """The 77-id rows of one prompt: list of ``tokenizer.context_length``-long lists."""
    length = tokenizer.context_length
    body = length - 2
    ids = tokenizer.encode(text)
    rows = []
    start = 0
    while len(ids) - start >= body:
        rows.append([tokenizer.sot_id] + ids[start:start + body] + [tokenizer.eot_id])
        start += body
    rest = ids[start:]
    if rest or not rows:
        row = [tokenizer.sot_id] + rest + [tokenizer.eot_id]
        rows.append(row + [tokenizer.pad_id] * (length - len(row)))
    return rows


def long_prompt_ids(tokenizer, prompts, negative_prompts=None):
    """int32 ids (N, k, 77) of ``prompts`` and, if given, of ``negative_prompts`` (same shape), where k
    is the largest chunk count among all of them; shorter ones end with empty-prompt chunks."""
    groups = [prompt_chunks(tokenizer, p) for p in prompts]
    negatives = None if negative_prompts is None else [prompt_chunks(tokenizer, p) for p in negative_prompts]
    k = max(len(g) for g in groups + (negatives or []))
    empty = prompt_chunks(tokenizer, "")[0]

    def pad(group_list):
        return np.asarray([g + [empty] * (k - len(g)) for g in group_list], dtype=np.int32)

    return pad(groups), (None if negatives is None else pad(negatives))


def encode_chunked(encode, ids):
    """Chunked ids (N, k, L) -> context (N, k * L, D): every chunk through ``encode`` ((M, L) -> (M, L, D))
    in one batch, then each prompt's chunks side by side along the sequence axis."""
    n, k, length = ids.shape
    out = encode(ids.reshape(n * k, length))
    return out.reshape(n, k * length, out.shape[-1])

"""CLIP byte-level BPE tokenizer (the one SD 1.x and 2.x use), written without torch/transformers.

Text is cleaned as OpenAI CLIP / OpenCLIP do: ``ftfy.fix_text`` (repairs mojibake), HTML entities
unescaped twice, runs of whitespace collapsed, lower-cased. Words are split with CLIP's regex, each
word's UTF-8 bytes are mapped to printable unicode characters and merged with the BPE ranks from
``bpe_simple_vocab_16e6.txt.gz``; the last symbol of a word carries ``</w>``.

Added tokens (textual inversion placeholders, :meth:`CLIPTokenizer.add_tokens`) take the ids after the
vocabulary, in order, and are matched whole in the cleaned text before BPE (longest first), so BPE
never splits them, as Hugging Face's added tokens behave. ``prompt_filters`` rewrite each prompt first
(ldm.models.textual_inversion registers its placeholder expansion there, so every caller gets it).

A prompt becomes ``[SOT] + ids + [EOT]`` cut to ``context_length`` (the EOT stays last) and padded
with EOT (SD 1.x, as transformers' CLIPTokenizer in SD1 pipelines) or 0 (SD 2.x, as open_clip).
"""
import functools
import gzip
import html
import logging
import os

import ftfy
import numpy as np
import regex

from ldm.errors import UserError

_log = logging.getLogger("ldm.tokenizer")

DEFAULT_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # CLIP uses the first 48894 merges of the file
WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


@functools.lru_cache()
def bytes_to_unicode():
    """Map every byte 0..255 to a printable unicode character (GPT-2 / CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clean_text(text):
    """ftfy repair, double HTML unescape, whitespace collapse, lower case (open_clip's 'lower')."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = regex.sub(r"\s+", " ", text).strip()
    return text.lower()


def _pairs(word):
    return {(a, b) for a, b in zip(word[:-1], word[1:])}


def resolve_pad_token(pad_token):
    """``"eot"`` / ``"<|endoftext|>"`` -> EOT id; an int (0 for SD 2.x) or ``"!"`` -> that id."""
    if isinstance(pad_token, str):
        key = pad_token.strip().lower()
        if key in ("eot", EOT_TOKEN):
            return "eot"
        if key == "!":
            return 0
        if key.isdigit():
            return int(key)
        raise UserError(f"pad_token must be 'eot' or an integer id, got {pad_token!r}")
    if isinstance(pad_token, (int, np.integer)) and not isinstance(pad_token, bool):
        return int(pad_token)
    raise UserError(f"pad_token must be 'eot' or an integer id, got {pad_token!r}")


class CLIPTokenizer:
    """Prompt strings -> int32 id arrays of shape (N, context_length).

    Args:
        pad_token: ``"eot"`` (SD 1.x) or an integer id (0 for SD 2.x).
        context_length: sequence length incl. SOT and EOT (77 for Stable Diffusion).
        vocab_path: the gzipped BPE merges file.
    """

    def __init__(self, pad_token="eot", context_length=77, vocab_path=DEFAULT_VOCAB):
        self.byte_encoder = bytes_to_unicode()
        merges = self._read_merges(vocab_path)
        symbols = list(self.byte_encoder.values())
        symbols += [s + "</w>" for s in symbols]
        symbols += ["".join(m) for m in merges]
        symbols += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {s: i for i, s in enumerate(symbols)}
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self.vocab_size = len(self.encoder)
        self.context_length = int(context_length)
        self.cut_noted = False          # one notice per tokenizer (per run) for prompts that are cut
        pad = resolve_pad_token(pad_token)
        self.pad_id = self.eot_id if pad == "eot" else pad
        self._cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}
        self.added_tokens = {}          # cleaned token text -> id (>= the BPE vocabulary size)
        self._added_pattern = None
        self.prompt_filters = []        # str -> str, applied to each prompt before cleaning (TI expansion)

    def add_tokens(self, tokens):
        """Give each of ``tokens`` (strings, matched after the same cleaning as prompts) the next free id.
        A token that is already a vocabulary symbol or an added token is an error. Returns the ids."""
        ids = []
        for token in tokens:
            key = clean_text(token)
            if not key or " " in key:
                raise UserError(f"added token {token!r} must be one word without spaces")
            if key in self.added_tokens or key in self.encoder or key + "</w>" in self.encoder:
                raise UserError(f"the tokenizer already contains the token {token!r}; choose another placeholder")
            new_id = len(self.encoder) + len(self.added_tokens)
            self.added_tokens[key] = new_id
            self.decoder[new_id] = "".join(self.byte_encoder[b] for b in key.encode("utf-8")) + "</w>"
            ids.append(new_id)
        longest_first = sorted(self.added_tokens, key=len, reverse=True)
        self._added_pattern = regex.compile("(" + "|".join(regex.escape(t) for t in longest_first) + ")")
        self.vocab_size = len(self.encoder) + len(self.added_tokens)
        return ids

    @staticmethod
    def _read_merges(path):
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except OSError as exc:
            raise UserError(f"cannot read the BPE vocabulary {path}: {exc}") from exc
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise UserError(f"{path} is not the CLIP BPE vocabulary (expected {NUM_MERGES} merges)")
        return merges

    def bpe(self, token):
        """Merge the characters of one word (already byte-mapped) into BPE symbols."""
        if token in self._cache:
            return self._cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        while pairs:
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        result = " ".join(word)
        self._cache[token] = result
        return result

    def encode(self, text):
        """Token ids of ``text`` without SOT/EOT and without truncation."""
        for rewrite in self.prompt_filters:
            text = rewrite(text)
        text = clean_text(text)
        if self._added_pattern is None:
            return self._encode_bpe(text)
        ids = []
        for k, piece in enumerate(self._added_pattern.split(text)):
            ids.extend([self.added_tokens[piece]] if k % 2 else self._encode_bpe(piece))
        return ids

    def _encode_bpe(self, text):
        ids = []
        for word in WORD_PATTERN.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(mapped).split(" "))
        return ids

    def decode(self, ids):
        """Ids -> text (word ends become spaces); SOT/EOT/pad are dropped."""
        symbols = "".join(self.decoder[int(i)] for i in ids if int(i) not in (self.sot_id, self.eot_id))
        raw = bytearray(self.byte_decoder[c] for c in symbols.replace("</w>", self.byte_encoder[ord(" ")]))
        return raw.decode("utf-8", errors="replace").strip()

    def _note_cut(self, text, count):
        if self.cut_noted:
            return
        self.cut_noted = True
        shown = text if len(text) <= 60 else text[:57] + "..."
        _log.warning("a prompt of %d tokens is cut to the text encoder's %d: %r (later cut prompts are not "
                     "reported; text_to_image.py --support_long_prompts encodes long prompts whole)",
                     count, self.context_length, shown)

    def __call__(self, texts):
        """List of prompts (or one string) -> int32 array (N, context_length); a prompt longer than that
        is cut (EOT kept last), with one notice per tokenizer."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise UserError(f"prompts must be strings, got {type(text).__name__}")
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > self.context_length:
                self._note_cut(text, len(ids))
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out

"""kohya-ss sd-scripts caption processing (prefix/suffix, caption dropout, tag shuffle and tag dropout).

Captions written for kohya ("1girl, solo, red hair, ...") are trained with its options, so a dataset
moved here behaves as it did there. The semantics follow kohya's ``BaseDataset.process_caption``; the
randomness differs on purpose: the dropout draw comes from the caller's per-sample stream and the
shuffle / tag dropout from a dedicated numpy Generator, so a sample's caption depends only on
``(seed, epoch, index)`` and not on batch size, ranks or resumption.
"""
from dataclasses import dataclass


@dataclass
class CaptionOptions:
    drop_text_prob: float = 0.0          # MindONE's caption dropout (kohya's caption_dropout_rate)
    shuffle_caption: bool = False
    keep_tokens: int = 0                 # leading tags kept in place, never shuffled nor dropped
    caption_separator: str = ","
    caption_tag_dropout_rate: float = 0.0
    caption_prefix: str = ""
    caption_suffix: str = ""
    caption_dropout_every_n_epochs: int = 0

    def active(self):
        """Whether any kohya option beyond MindONE's plain drop_text_prob is set."""
        return bool(self.shuffle_caption or self.caption_tag_dropout_rate > 0 or self.caption_prefix
                    or self.caption_suffix or self.caption_dropout_every_n_epochs > 0)


def process_caption(text, opts, epoch, drop_draw, rng):
    """``(caption, dropped)`` for one sample. ``epoch`` is 0-based (kohya counts from 1, so with
    ``caption_dropout_every_n_epochs = n`` the 0-based epochs n-1, 2n-1, ... drop); ``drop_draw`` is the
    caller's uniform [0, 1) draw for ``drop_text_prob``; ``rng`` is consumed only by shuffle/tag dropout."""
    if opts.caption_prefix:
        text = opts.caption_prefix + " " + text
    if opts.caption_suffix:
        text = text + " " + opts.caption_suffix
    every = opts.caption_dropout_every_n_epochs
    if drop_draw < opts.drop_text_prob or (every > 0 and (epoch + 1) % every == 0):
        return "", True
    text = text.split("\n")[0]
    rate = opts.caption_tag_dropout_rate
    if opts.shuffle_caption or rate > 0:
        tags = [t.strip() for t in text.strip().split(opts.caption_separator)]
        keep = max(0, int(opts.keep_tokens))
        fixed, flex = tags[:keep], tags[keep:]
        if opts.shuffle_caption:
            flex = [flex[i] for i in rng.permutation(len(flex))]
        if rate > 0:
            flex = [t for t in flex if rng.random() >= rate]
        text = ", ".join(fixed + flex)
    return text, False

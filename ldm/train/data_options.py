"""Recipe options for the data people bring (kohya-ss names and meanings): caption files and
metadata.jsonl, caption processing, aspect-ratio buckets, a held-out validation set, TensorBoard.

The tables are merged into the trainers' option tables (ldm.train.config and the DreamBooth / textual
inversion tables drop what does not apply to them); the builders turn a parsed recipe into the data
layer's settings; :func:`check_data_options` refuses out-of-domain values before anything is built.
"""
import os

from ldm.errors import UserError


def _str2bool(value):
    from ldm.train.config import str2bool
    return str2bool(value)


def _optional_bool(value):
    from ldm.train.config import optional_bool
    return optional_bool(value)


def _integer(value):
    from ldm.train.config import integer
    return integer(value)


# text-to-image only: where captions come from and how they are processed, the held-out set
CAPTION_OPTIONS = {
    "caption_extension": (str, ".txt", "caption-file extension of image + caption folders (kohya: img.png + "
                                       "img.txt; .caption is also common)"),
    "caption_column": (str, "", "metadata.jsonl column holding the caption (default: text, else caption)"),
    "require_captions": (_str2bool, False, "an image without a caption file is an error (default: one warning "
                                           "counts them, they train with an empty caption)"),
    "shuffle_caption": (_str2bool, False, "kohya: shuffle the caption's tags (split at caption_separator) each time"),
    "keep_tokens": (_integer, 0, "kohya: the first N tags stay in place (never shuffled or dropped)"),
    "caption_separator": (str, ",", "kohya: the tag separator of shuffle_caption / caption_tag_dropout_rate"),
    "caption_tag_dropout_rate": (float, 0.0, "kohya: drop each tag (after keep_tokens) with this probability"),
    "caption_prefix": (str, "", "kohya: text put before every caption (with a space)"),
    "caption_suffix": (str, "", "kohya: text put after every caption (with a space)"),
    "caption_dropout_every_n_epochs": (_integer, 0, "kohya: empty caption for every sample of every N-th epoch "
                                                    "(0 = off); drop_text_prob stays the per-sample dropout rate"),
    "validation_split": (float, 0.0, "hold out this fraction of the images (by seed) for the validation loss"),
    "validation_data_path": (str, "", "a separate folder (any data layout) for the validation loss"),
}

# all three trainers
BUCKET_OPTIONS = {
    "enable_bucket": (_str2bool, False, "kohya: aspect-ratio buckets of about image_size^2 pixels instead of "
                                        "square crops; every batch from one bucket"),
    "min_bucket_reso": (_integer, 256, "kohya: smallest bucket side"),
    "max_bucket_reso": (_integer, 1024, "kohya: largest bucket side"),
    "bucket_reso_steps": (_integer, 0, "kohya: bucket sides are multiples of this (0 = the model's size "
                                       "multiple, 64 for SD; must be a multiple of it)"),
    "bucket_no_upscale": (_str2bool, False, "kohya: never enlarge: each image's bucket is its own size (scaled "
                                            "down to the area) cut to whole steps"),
    "bucket_dynamic_shape": (_optional_bool, None, "compile the train step once for every bucket size (dynamic "
                                                    "height/width) instead of once per bucket; unset = when the "
                                                    "attention takes one path at every size (standard attention)"),
    "log_with": (str, "none", "none | tensorboard: also write TensorBoard event files to output_path/tensorboard "
                              "(losses, lr, loss scale, validation loss and images)"),
}

CHOICES = {"log_with": ("none", "tensorboard")}

def check_data_options(cfg, model_config=None):
    """Combinations of the options above that are present in ``cfg`` (one line each; their numeric
    domains are ldm.train.checks.check_domains'); with ``model_config`` also the bucket settings against
    the model's size multiple."""
    if getattr(cfg, "caption_separator", ",") == "":
        raise UserError("caption_separator is empty: give the tag separator (kohya's default is ',')")
    if getattr(cfg, "caption_extension", ".txt") in ("", "."):
        raise UserError("caption_extension is empty: give the caption files' extension, e.g. .txt or .caption")
    if getattr(cfg, "validation_split", 0) and getattr(cfg, "validation_data_path", ""):
        raise UserError("set validation_split or validation_data_path, not both")
    path = getattr(cfg, "validation_data_path", "")
    if path and not os.path.isdir(path):
        raise UserError(f"validation_data_path {'is not a folder' if os.path.exists(path) else 'not found'}: {path}")
    if getattr(cfg, "enable_bucket", False) and model_config is not None:
        from ldm.data.buckets import check_settings
        check_settings(bucket_settings(cfg, model_config), _multiple(model_config))


def _multiple(model_config):
    from ldm.train.checks import size_multiple
    return size_multiple(model_config) or 8


def bucket_settings(cfg, model_config):
    """ldm.data.buckets.BucketSettings of the recipe, or None without enable_bucket."""
    if not getattr(cfg, "enable_bucket", False):
        return None
    from ldm.data.buckets import BucketSettings
    steps = cfg.bucket_reso_steps or _multiple(model_config)
    return BucketSettings(cfg.image_size, cfg.min_bucket_reso, cfg.max_bucket_reso, steps, cfg.bucket_no_upscale)


def source_options(cfg):
    from ldm.data.sources import SourceOptions
    return SourceOptions(cfg.caption_extension, cfg.caption_column, cfg.require_captions)


def caption_options(cfg, for_validation=False):
    """CaptionOptions of the recipe; for the validation set only the prefix/suffix (no randomness)."""
    from ldm.data.captions import CaptionOptions
    if for_validation:
        return CaptionOptions(caption_prefix=cfg.caption_prefix, caption_suffix=cfg.caption_suffix)
    return CaptionOptions(cfg.drop_text_prob, cfg.shuffle_caption, cfg.keep_tokens, cfg.caption_separator,
                          cfg.caption_tag_dropout_rate, cfg.caption_prefix, cfg.caption_suffix,
                          cfg.caption_dropout_every_n_epochs)

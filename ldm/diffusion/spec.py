"""The diffusion process a model was trained for, as one value that travels with the model.

A :class:`DiffusionSpec` holds everything that training and sampling must agree on: the beta schedule
and its parameters, the number of training timesteps, the zero-terminal-SNR rescale, what the UNet
predicts and the VAE latent scale. It is built once, by :func:`resolve_spec`, with one precedence
rule::

    explicit overrides (not None)  >  the model YAML  >  Stable Diffusion's defaults

The model owns the result (``LatentDiffusion.spec``); training's noising and target, every sampler,
validation and img2img read it from there, and training records it in every checkpoint it writes
(:data:`SPEC_KEY`) and in the ``model_config.yaml`` beside them, so inference uses what training did.

YAML spelling (LDM/MindONE ``model.params``): ``linear_start``, ``linear_end``, ``timesteps``,
``beta_schedule``, ``rescale_zero_snr``, ``scale_factor``; the prediction type as
``model.prediction_type`` or MindONE's ``params.parameterization``.
"""
import dataclasses
import functools
import json

from ldm.diffusion.prediction import normalize_prediction_type
from ldm.diffusion.schedule import BETA_SCHEDULES, NoiseSchedule
from ldm.errors import UserError

SPEC_KEY = "diffusion_spec"          # the checkpoint entry holding the spec as JSON
# the fields a checkpoint's recorded spec and a config must agree on (they change what the UNet means)
CHECKED_FIELDS = ("prediction_type", "rescale_zero_snr", "beta_schedule")
# YAML key in model.params -> spec field
YAML_KEYS = {"linear_start": "linear_start", "linear_end": "linear_end", "timesteps": "num_train_timesteps",
             "beta_schedule": "beta_schedule", "rescale_zero_snr": "rescale_zero_snr",
             "scale_factor": "scale_factor"}
# other spellings of beta schedules. LDM's YAML "linear" (with linear_start/linear_end) is linear in
# sqrt(beta), i.e. diffusers' scaled_linear; see spec_from_yaml.
SCHEDULE_ALIASES = {"squaredcos": "squaredcos_cap_v2", "cosine": "squaredcos_cap_v2"}


@dataclasses.dataclass(frozen=True)
class DiffusionSpec:
    prediction_type: str = "eps"
    beta_schedule: str = "scaled_linear"
    linear_start: float = 0.00085
    linear_end: float = 0.012
    num_train_timesteps: int = 1000
    rescale_zero_snr: bool = False
    scale_factor: float = 0.18215

    def __post_init__(self):
        fix = functools.partial(object.__setattr__, self)
        try:
            fix("prediction_type", normalize_prediction_type(self.prediction_type))
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        schedule = SCHEDULE_ALIASES.get(str(self.beta_schedule), str(self.beta_schedule))
        if schedule not in BETA_SCHEDULES:
            raise UserError(f"unknown beta_schedule {self.beta_schedule!r}; choose one of "
                            f"{', '.join(BETA_SCHEDULES)}")
        fix("beta_schedule", schedule)
        fix("linear_start", float(self.linear_start))
        fix("linear_end", float(self.linear_end))
        fix("num_train_timesteps", int(self.num_train_timesteps))
        fix("rescale_zero_snr", _as_bool(self.rescale_zero_snr, "rescale_zero_snr"))
        fix("scale_factor", float(self.scale_factor))

    # ---- derived
    @property
    def schedule(self):
        """The :class:`NoiseSchedule` (float64 arrays), computed once per distinct spec."""
        return _schedule(self.beta_schedule, self.linear_start, self.linear_end, self.num_train_timesteps,
                         self.rescale_zero_snr)

    def sampling_defaults(self):
        """What sampling should use unless told otherwise: zero terminal SNR goes with trailing
        timesteps and guidance rescale 0.7 (Lin et al. 2023, sec. 3.3-3.4)."""
        if self.rescale_zero_snr:
            return {"timestep_spacing": "trailing", "guidance_rescale": 0.7}
        return {"timestep_spacing": None, "guidance_rescale": 0.0}

    # ---- (de)serialisation
    def replace(self, **overrides):
        """A copy with every override that is not None applied."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in fields})
        except (ValueError, TypeError) as exc:
            raise UserError(f"unreadable {SPEC_KEY} record: {exc}") from exc

    def yaml_params(self):
        """The ``model.params`` keys (LDM spelling) that reproduce this spec."""
        return {key: getattr(self, field) for key, field in YAML_KEYS.items()}

    def describe(self, fields=CHECKED_FIELDS):
        return ", ".join(f"{f}={getattr(self, f)}" for f in fields)


@functools.lru_cache(maxsize=32)
def _schedule(beta_schedule, linear_start, linear_end, num_train_timesteps, rescale_zero_snr):
    return NoiseSchedule(beta_schedule, linear_start, linear_end, num_train_timesteps,
                         rescale_zero_snr=rescale_zero_snr)


def _as_bool(value, name):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "none", ""):
        return False
    raise UserError(f"{name} must be true or false, got {value!r}")


def spec_from_yaml(section):
    """The spec a model YAML's ``model`` section describes (no overrides)."""
    params = section.get("params") or {}
    values = {field: params[key] for key, field in YAML_KEYS.items() if key in params}
    if values.get("beta_schedule") == "linear" and "linear_start" in params:
        values["beta_schedule"] = "scaled_linear"     # LDM's "linear" with its own start/end
    prediction = section.get("prediction_type", params.get("parameterization", params.get("prediction_type")))
    if prediction is not None:
        values["prediction_type"] = prediction
    return DiffusionSpec(**values)


def resolve_spec(config=None, **overrides):
    """THE way a spec is made: overrides that are not None > the model YAML > defaults.

    config: a model config (path, whole dict or its ``model`` section), or None for the defaults.
    overrides: spec fields, e.g. ``prediction_type="v", rescale_zero_snr=True`` (None = not given).
    """
    from ldm.util import model_section
    base = spec_from_yaml(model_section(config)) if config is not None else DiffusionSpec()
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(DiffusionSpec)})
    if unknown:
        raise UserError(f"unknown diffusion setting(s) {', '.join(unknown)}")
    return base.replace(**overrides)


def with_spec(config, spec):
    """A copy of a model config whose ``model`` section states ``spec`` (what training writes as
    model_config.yaml); every other key is kept."""
    import copy
    from ldm.util import model_section
    config = copy.deepcopy(config)
    section = model_section(config)
    params = section.setdefault("params", {})
    params.pop("parameterization", None)
    params.update(spec.yaml_params())
    section["prediction_type"] = spec.prediction_type
    return config


def recorded_spec(state):
    """The DiffusionSpec a checkpoint records (its :data:`SPEC_KEY` entry, a JSON string), or None for
    checkpoints that carry none (MindONE, Stability, diffusers files)."""
    value = state.get(SPEC_KEY)
    if value is None:
        return None
    return DiffusionSpec.from_json(value.item() if hasattr(value, "item") else str(value))


def spec_record(spec):
    """The ``append_dict`` entry that records ``spec`` in a MindSpore checkpoint."""
    return {SPEC_KEY: spec.to_json()}


def check_recorded_spec(config_spec, recorded, config_name, ckpt_name):
    """An explicit config must mean what the checkpoint was trained for: one UserError if not."""
    if recorded is None:
        return
    differ = [f for f in CHECKED_FIELDS if getattr(config_spec, f) != getattr(recorded, f)]
    if differ:
        raise UserError(f"{ckpt_name} was trained with {recorded.describe(differ)} but {config_name} says "
                        f"{config_spec.describe(differ)}: leave out --config to use the model_config.yaml "
                        "saved beside the checkpoint, or pass a config that matches")

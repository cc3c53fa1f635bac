"""Config helpers: a config key the class does not take is one clear UserError, not a traceback."""
import pytest

from ldm.errors import UserError
from ldm.util import instantiate_from_config


def test_unknown_param_names_target_and_key():
    cfg = {"target": "ldm.models.text_encoder.FrozenCLIPEmbedder",
           "params": {"width": 32, "layers": 1, "heads": 2, "output_dim": 32, "version": "openai/clip"}}
    with pytest.raises(UserError, match="FrozenCLIPEmbedder.*version"):
        instantiate_from_config(cfg)


def test_mindone_alias_builds_our_class():
    cfg = {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
           "params": {"width": 32, "layers": 1, "heads": 2, "output_dim": 32, "use_quick_gelu": True}}
    model = instantiate_from_config(cfg)
    assert type(model).__module__ == "ldm.models.text_encoder"
    assert model.tokenize(["a red circle"]).shape == (1, 77)


def test_missing_target_and_bad_params():
    with pytest.raises(UserError, match="target"):
        instantiate_from_config({"params": {}})
    with pytest.raises(UserError, match="params"):
        instantiate_from_config({"target": "ldm.models.text_encoder.FrozenCLIPEmbedder", "params": [1]})

"""GradiendConfig: strict validation, derived values, JSON round trip."""

import json

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from gradiend_hf import GradiendConfig, GradiendConfigError


def _config(**overrides):
    values = dict(
        base_model_name_or_path="tiny",
        param_names=["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"],
        param_shapes=[[4, 8], [4, 8]],
        feature_name="gender",
        feature_classes=["female", "male"],
        feature_targets={"female": ["she"], "male": ["he"]},
    )
    values.update(overrides)
    return GradiendConfig(**values)


def test_defaults_and_derived_values():
    config = _config()
    assert config.model_type == "gradiend"
    assert config.num_selected == 64
    assert config.positive_class == "female" and config.negative_class == "male"
    assert config.source == "factual" and config.activation == "tanh" and config.latent_size == 1
    assert config.gradiend_hf_version


def test_json_round_trip(tmp_path):
    config = _config(source="diff", training={"steps": 3})
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["param_shapes"] == [[4, 8], [4, 8]] and raw["model_type"] == "gradiend"
    loaded = GradiendConfig.from_pretrained(tmp_path)
    for key in ("param_names", "param_shapes", "feature_classes", "feature_targets", "source", "training"):
        assert getattr(loaded, key) == getattr(config, key)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(param_shapes=[[4, 8]]), "has 2 entries but `param_shapes` has 1"),
        (dict(param_shapes=[[4, 8], [4, 0]]), "positive integers"),
        (dict(param_names=["a", "a"]), "lists `a` twice"),
        (dict(feature_classes=["female"]), "exactly two distinct classes"),
        (dict(feature_classes=["x", "x"]), "exactly two distinct classes"),
        (dict(positive_class="other"), "`positive_class` must be one of"),
        (dict(feature_targets={"robot": ["it"]}), "unknown classes"),
        (dict(latent_size=0), "at least 1"),
    ],
)
def test_inconsistent_fields_are_refused(overrides, match):
    # @strict wraps the validator's error; the cause is ours and the message keeps our explanation.
    with pytest.raises(StrictDataclassClassValidationError, match=match) as info:
        _config(**overrides)
    assert isinstance(info.value.__cause__, GradiendConfigError)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(source="both"), "source"),
        (dict(activation="relu"), "activation"),
        (dict(lm_kind="seq2seq"), "lm_kind"),
        (dict(latent_size="1"), "latent_size"),
        (dict(param_names="a"), "param_names"),
    ],
)
def test_wrong_types_and_unknown_choices_are_refused(overrides, match):
    with pytest.raises(StrictDataclassFieldValidationError, match=match):
        _config(**overrides)


def test_misspelt_key_is_refused_with_a_suggestion():
    with pytest.raises(GradiendConfigError, match="Did you mean `source`"):
        _config(sourc="diff")

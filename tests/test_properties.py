"""Property-based tests (hypothesis): configs, adapter configs, feature records and command lines built from random
input end in a value or in one of the package's documented errors, never in a crash.

Each property runs 100 examples by default and 1,000 in the `slow` run (`pytest -m slow`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradiend_hf import GradiendConfig
from gradiend_hf.adapters import DeltaAdapterConfig
from gradiend_hf.cli import main
from gradiend_hf.errors import (
    AdapterLoadError,
    FeatureDataError,
    GradiendConfigError,
    GradiendError,
    GradiendLoadError,
)
from gradiend_hf.features import FeatureDataset
from gradiend_hf.gradiend_files import verify_checkpoint

# The default run is derandomized (the same 100 examples every time, so it cannot flake); the slow run explores.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
                derandomize=True)
SLOW = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# -- strategies -------------------------------------------------------------------------------------------------------
names = st.sampled_from(["model.layers.0.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight", "w", "",
                         "a.b", "model.layers.1.self_attn.q_proj.bias"]) | st.text(max_size=12)
json_scalars = (st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
shapes = st.lists(st.integers(-2, 70) | st.booleans() | st.text(max_size=2), min_size=0, max_size=3)
modules = st.dictionaries(names, st.fixed_dictionaries(
    {"module": st.sampled_from(["model.layers.0.mlp.down_proj", "model.norm", "lm_head", ""]) | st.text(max_size=5),
     "param": st.sampled_from(["weight", "bias"]) | st.text(max_size=4)},
    optional={"type": st.sampled_from(["Linear", "LlamaRMSNorm"]), "bias": st.booleans()}), max_size=3)


def _maybe(strategy):
    return st.none() | strategy


gradiend_fields = st.fixed_dictionaries({}, optional={
    "param_names": st.lists(names, max_size=3) | json_values,
    "param_shapes": st.lists(shapes, max_size=3) | json_values,
    "param_modules": _maybe(modules) | json_values,
    "feature_name": st.text(max_size=8) | json_values,
    "feature_classes": _maybe(st.lists(st.sampled_from(["female", "male", "x"]) | st.text(max_size=4), max_size=3)),
    "positive_class": _maybe(st.sampled_from(["female", "male", "other"])),
    "feature_targets": _maybe(st.dictionaries(st.sampled_from(["female", "male", "robot"]),
                                              st.lists(st.text(max_size=4), max_size=2), max_size=2)) | json_values,
    "source": st.sampled_from(["factual", "counterfactual", "diff", "both"]) | json_values,
    "activation": st.sampled_from(["tanh", "hardtanh", "identity", "relu"]),
    "latent_size": st.integers(-2, 4) | json_values,
    "lm_kind": st.sampled_from(["masked", "causal", "seq2seq"]),
    "training": _maybe(st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)),
    "sourc": st.just("diff"), "auto_map": st.just({"AutoModel": "evil.Model"}),
})

adapter_fields = st.fixed_dictionaries({}, optional={
    "param_names": st.lists(names, max_size=3) | json_values,
    "param_shapes": st.lists(shapes, max_size=3) | json_values,
    "dial": st.booleans() | json_values,
    "h": _maybe(st.floats() | st.lists(st.floats() | st.text(max_size=3), max_size=3) | json_values),
    "alpha": _maybe(st.floats() | st.text(max_size=3) | json_values),
    "latent_size": st.integers(-1, 3) | json_values,
    "modules": _maybe(modules) | json_values,
    "feature": _maybe(st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)) | json_values,
    "description": _maybe(st.text(max_size=10)) | json_values,
    "adapter_type": st.sampled_from(["gradiend_delta", "lora"]),
    "alpah": st.floats(),
})

records = st.lists(st.fixed_dictionaries(
    {"text": st.sampled_from(["Mary said that [MASK] came.", "no slot here", "[MASK] and [MASK]", ""])
     | st.text(max_size=20) | json_scalars,
     "factual": st.sampled_from(["she", "he", ""]) | json_scalars,
     "counterfactual": st.sampled_from(["he", "she"]) | json_scalars,
     "label": st.sampled_from(["female", "male", "other"]) | json_scalars},
    optional={"split": st.sampled_from(["train", "validation", "test", "dev", "holdout"]) | json_scalars,
              "meta": json_values, "extra": json_scalars}), max_size=12)

cli_argv = st.one_of(
    st.tuples(st.just("export"), st.just("/nonexistent/gradiend"),
              st.lists(st.sampled_from(["--h", "--alpha", "--lora", "--shira", "--out", "--dial", "--pure"])
                       | st.text(max_size=6) | st.floats().map(repr), max_size=8)),
    st.tuples(st.sampled_from(["search", "evaluate", "info", "encode", "merge", "apply"]), st.text(max_size=12),
              st.lists(st.sampled_from(["--h", "--alpha", "--out", "--weights", "--method", "--split", "±0.1", "-1",
                                        "--max-texts", "--scale", "nan", "--feature", "race:x,y"])
                       | st.text(max_size=6), max_size=8)),
    st.tuples(st.just("train"), st.just("--model=/nonexistent/model"),
              st.lists(st.sampled_from(["--feature", "--steps", "--batch-size", "--lr", "--source", "--layers",
                                        "gender", "race:white,black", "religion:a", "0", "-3", "1e-3", "0-2,x"])
                       | st.text(max_size=6), max_size=8)),
).map(lambda parts: [parts[0], parts[1], *parts[2]])


# -- properties -------------------------------------------------------------------------------------------------------
def _gradiend_config(fields):
    try:
        config = GradiendConfig(**fields)
    except (GradiendConfigError, StrictDataclassError):
        return  # documented: a misspelt key, a wrong type or value, fields that disagree
    again = GradiendConfig.from_dict(config.to_dict())  # what was accepted also loads back
    assert again.param_names == config.param_names and again.num_selected == config.num_selected


def _gradiend_folder(fields, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gradiend", **fields}, default=str))
    with pytest.raises(GradiendLoadError):  # never anything else: no weights, or a config that does not validate
        verify_checkpoint(folder)


def _adapter_config(fields, folder: Path):
    try:
        config = DeltaAdapterConfig.from_dict(fields)
    except GradiendConfigError:
        pass
    else:
        assert DeltaAdapterConfig.from_dict(json.loads(config.to_json_string())).to_dict() == config.to_dict()
        assert config.num_entries >= 0 and all(math.isfinite(v) for v in config.h or [])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"adapter_type": "gradiend_delta", **fields}, default=str))
    try:
        DeltaAdapterConfig.from_folder(folder)
    except AdapterLoadError:
        pass


def _feature_records(rows):
    try:
        dataset = FeatureDataset.from_records(rows, name="fuzz", classes=None)
    except FeatureDataError:
        return
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == len(rows)


@contextlib.contextmanager
def _working_directory(folder: Path):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _command_line(argv, folder: Path):
    stderr = io.StringIO()
    with _working_directory(folder), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: a usage error (2), or --help (an abbreviation of it) (0)
            assert exit_.code in (0, 2), argv
            return
    assert code in (0, 2), f"{argv}: {stderr.getvalue()[-500:]}"  # 1 means an unexpected error
    if code == 2:  # one printed line (the user's own input may hold a \r, echoed as given)
        assert stderr.getvalue().startswith("error: ") and stderr.getvalue().count("\n") == 1


PROPERTIES = {
    "gradiend_config": (gradiend_fields, lambda value, folder: _gradiend_config(value)),
    "gradiend_config_on_disk": (gradiend_fields, _gradiend_folder),
    "adapter_config": (adapter_fields, _adapter_config),
    "feature_records": (records, lambda value, folder: _feature_records(value)),
    "command_line": (cli_argv, _command_line),
}


def _run(name, profile, tmp_path_factory):
    strategy, check = PROPERTIES[name]
    folder = tmp_path_factory.mktemp(name)

    @profile
    @given(strategy)
    def prop(value):
        check(value, folder)

    prop()


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_random_input_ends_in_a_documented_error(name, tmp_path_factory):
    _run(name, FAST, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROPERTIES))
def test_random_input_ends_in_a_documented_error_1000_examples(name, tmp_path_factory):
    _run(name, SLOW, tmp_path_factory)


def test_the_documented_errors_are_ours():
    assert issubclass(GradiendConfigError, GradiendError) and issubclass(GradiendConfigError, ValueError)

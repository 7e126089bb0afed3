"""GradiendModel: encode/decode against a hand computation, initialisation, save/load round trips, bad checkpoints."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

import gradiend_hf as gh
from gradiend_hf import GradiendConfig, GradiendLoadError, GradiendModel, ParameterSelectionError

FEATURE = {"name": "gender", "classes": ["female", "male"], "targets": {"female": ["she"], "male": ["he"]}}


def _small_model(latent_size=1, activation="tanh", seed=0):
    config = GradiendConfig(param_names=["w", "b"], param_shapes=[[3, 4], [5]], latent_size=latent_size,
                            activation=activation, feature_classes=["female", "male"])
    torch.manual_seed(seed)
    return GradiendModel(config)


def test_encode_decode_match_hand_computation():
    model = _small_model()
    g = {"w": torch.randn(3, 4), "b": torch.randn(5)}
    flat_w = torch.cat([model.encoder.weights[0].flatten(), model.encoder.weights[1].flatten()])
    flat_g = torch.cat([g["w"].flatten(), g["b"].flatten()])
    expected_h = torch.tanh(flat_w @ flat_g + model.encoder.bias)
    h = model.encode(g)
    assert h.shape == (1,)
    torch.testing.assert_close(h, expected_h)
    # tensors in config order give the same result as a dict
    torch.testing.assert_close(model.encode([g["w"], g["b"]]), h)

    update = model.decode(0.7)
    assert set(update) == {"w", "b"} and update["w"].shape == (3, 4) and update["b"].shape == (5,)
    torch.testing.assert_close(update["w"], 0.7 * model.decoder.weights[0][0] + model.decoder.biases[0])
    torch.testing.assert_close(update["b"], 0.7 * model.decoder.weights[1][0] + model.decoder.biases[1])


def test_batched_encode_decode_and_latent_size():
    model = _small_model(latent_size=2, activation="identity")
    g = {"w": torch.randn(6, 3, 4), "b": torch.randn(6, 5)}
    h = model.encode(g)
    assert h.shape == (6, 2)
    for i in range(6):
        torch.testing.assert_close(h[i], model.encode({"w": g["w"][i], "b": g["b"][i]}))
    update = model.decode(h)
    assert update["w"].shape == (6, 3, 4)
    expected = torch.einsum("k,kij->ij", h[2], model.decoder.weights[0]) + model.decoder.biases[0]
    torch.testing.assert_close(update["w"][2], expected)


def test_forward_loss_is_mean_squared_error_over_all_entries():
    model = _small_model()
    g = {"w": torch.randn(3, 4), "b": torch.randn(5)}
    target = {"w": torch.randn(3, 4), "b": torch.randn(5)}
    out = model(g, target)
    decoded = model.decode(model.encode(g))
    expected = torch.cat([(decoded[k] - target[k]).flatten() for k in ("w", "b")]).pow(2).mean()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_gradient_input_is_refused():
    model = _small_model()
    with pytest.raises(ParameterSelectionError, match="lacks 1 of the 2"):
        model.encode({"w": torch.randn(3, 4)})
    with pytest.raises(ParameterSelectionError, match="expected \\(3, 4\\)"):
        model.encode({"w": torch.randn(4, 3), "b": torch.randn(5)})
    with pytest.raises(ValueError, match="latent size 1"):
        model.decode(torch.ones(3))


def test_initialisation_follows_the_paper():
    config = GradiendConfig(param_names=["w"], param_shapes=[[200, 50]])
    model = GradiendModel(config)
    n = 10_000
    bound = 1 / math.sqrt(n)
    w_e = model.encoder.weights[0]
    assert w_e.abs().max() <= bound and w_e.abs().max() > 0.95 * bound  # U(-1/sqrt(n), 1/sqrt(n))
    assert model.encoder.bias.abs().max() <= bound
    m = w_e.detach().abs().max()
    for tensor in (model.decoder.weights[0], model.decoder.biases[0]):
        assert tensor.abs().max() <= m and tensor.abs().max() > 0.95 * m  # U(-m, m), m = max|W_e|
        assert abs(float(tensor.detach().mean())) < 0.05 * float(m)
    # reset_parameters with a seed is reproducible
    model.reset_parameters(3)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_parameters(3)
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_for_base_model_selects_parameters_and_records_provenance(llama):
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.down_proj.weight"], feature=FEATURE,
                                         base_model_name_or_path="tiny-llama", source="diff")
    config = model.config
    assert config.param_names == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert config.param_shapes == [[32, 64], [32, 64]]
    assert config.lm_kind == "causal" and config.base_model_type == "llama"
    assert config.feature_classes == ["female", "male"] and config.positive_class == "female"
    assert config.feature_targets == {"female": ["she"], "male": ["he"]} and config.source == "diff"
    with pytest.raises(ParameterSelectionError, match="matches no parameter"):
        GradiendModel.for_base_model(llama, params=["model.layers.*.nonexistent"])


def test_for_base_model_masked_lm(bert):
    model = GradiendModel.for_base_model(bert, layers=[1])
    assert model.config.lm_kind == "masked"
    assert model.param_names and all(".layer.1." in n for n in model.param_names)


def test_flip_sign_negates_h_and_keeps_every_decoded_update():
    model = _small_model()
    g = {"w": torch.randn(3, 4), "b": torch.randn(5)}
    h = model.encode(g)
    update = model.decode(0.3)
    model.flip_sign()
    torch.testing.assert_close(model.encode(g), -h)
    flipped = model.decode(-0.3)
    for name in update:
        torch.testing.assert_close(flipped[name], update[name])


def test_check_base_model_names_the_missing_parameter(llama, gpt2):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.mlp.*"])
    assert set(model.check_base_model(llama)) == set(model.param_names)
    with pytest.raises(ParameterSelectionError, match="has no parameter `model.layers.0.mlp.gate_proj.weight`"):
        model.check_base_model(gpt2)


# -- save / load -----------------------------------------------------------------------------------------------------
def _assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sharded_round_trip_is_bit_exact(llama, tmp_path, dtype):
    model = GradiendModel.for_base_model(llama, feature=FEATURE).to(dtype)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3
    for shard in shards:  # max_shard_size honoured (a tensor is never split; ours are all below the limit)
        assert (tmp_path / shard).stat().st_size < 20_000 + 2_000
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors.index.json", "README.md",
                                                     *shards}
    loaded = GradiendModel.from_pretrained(tmp_path, dtype=dtype)
    _assert_same_tensors(model, loaded)
    assert loaded.config.param_names == model.config.param_names


def test_auto_classes_are_registered(llama, tmp_path):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.*"], feature=FEATURE)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GradiendConfig)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is GradiendModel
    _assert_same_tensors(model, loaded)


def test_save_keeps_an_existing_readme(llama, tmp_path):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.*"], feature=FEATURE)
    (tmp_path / "README.md").write_text("my own notes")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my own notes"


@pytest.fixture
def saved(llama, tmp_path):
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=FEATURE)
    folder = tmp_path / "saved"
    model.save_pretrained(folder, max_shard_size="30KB")
    return model, folder


def test_folder_without_a_model_fails_clearly(tmp_path):
    with pytest.raises(GradiendLoadError, match="holds no GRADIEND model: `config.json` is missing"):
        GradiendModel.from_pretrained(tmp_path)


def test_folder_with_another_model_type_fails_clearly(llama, tmp_path):
    llama.save_pretrained(tmp_path)
    with pytest.raises(GradiendLoadError, match="holds a `llama` model, not a GRADIEND model"):
        GradiendModel.from_pretrained(tmp_path)


def test_truncated_shard_fails_naming_the_file(saved):
    _, folder = saved
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(GradiendLoadError, match=f"{shard.name}` is truncated or corrupt"):
        AutoModel.from_pretrained(folder)


def test_corrupt_header_fails_naming_the_file(saved):
    _, folder = saved
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[10:20] = b"\xff" * 10
    shard.write_bytes(bytes(data))
    with pytest.raises(GradiendLoadError, match=shard.name):
        GradiendModel.from_pretrained(folder)


def test_missing_shard_fails_naming_it(saved):
    _, folder = saved
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(GradiendLoadError, match=f"Shard `{shard.name}`.*is missing"):
        GradiendModel.from_pretrained(folder)


def test_config_whose_shapes_disagree_with_the_weights(saved):
    _, folder = saved
    raw = json.loads((folder / "config.json").read_text())
    raw["param_shapes"][0] = [64, 64]
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(GradiendLoadError, match="for base parameter `model.layers.0.mlp.gate_proj.weight`.*"
                                                "has shape \\[1, 64, 32\\], but config.json says \\[1, 64, 64\\]"):
        GradiendModel.from_pretrained(folder)


def test_weights_missing_a_tensor(llama, tmp_path):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.mlp.*"], feature=FEATURE)
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["decoder.bias_1"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(GradiendLoadError, match="lacks 1 tensor.*decoder.bias_1.*model.layers.0.mlp.up_proj.weight"):
        GradiendModel.from_pretrained(tmp_path)


def test_pickled_weights_are_never_read(llama, tmp_path):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.mlp.*"], feature=FEATURE)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle, and never opened")
    with pytest.raises(GradiendLoadError, match="never pickled"):
        GradiendModel.from_pretrained(tmp_path)


def test_gradiend_model_is_exported():
    assert gh.GradiendModel is GradiendModel and "GradiendModel" in gh.__all__


def test_save_refreshes_our_own_card(llama, tmp_path):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.*"], feature=FEATURE)
    model.save_pretrained(tmp_path)
    model.config.training = {"best_step": 42}
    model.save_pretrained(tmp_path)
    assert "best_step | 42" in (tmp_path / "README.md").read_text()


def test_unknown_repo_or_path_fails_clearly(tmp_path):
    with pytest.raises(GradiendLoadError, match="neither a local folder nor a reachable Hub repository"):
        GradiendModel.from_pretrained(str(tmp_path / "no-such-folder"))

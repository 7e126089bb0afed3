"""RepresentationAdapter: the hook reaches the head and SEAT, off is exact, stacking, files, Hub, other bases."""

import json
import warnings

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download

import gradiend_hf as gh
from gradiend_hf.adapters import RepresentationAdapter, load_adapter
from gradiend_hf.benchmarks import sentence_embeddings
from gradiend_hf.errors import AdapterCompatibilityError, AdapterLoadError
from gradiend_hf.hub import CARD_MARKER
from tiny_models import tiny_gpt2, tiny_llama

TEXTS = ["Mary said that she would come home.", "John ran to the station."]


def _projection(d: int, rank: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, rank, generator=generator))
    return torch.eye(d) - basis @ basis.T


def _adapter(model, **fields) -> RepresentationAdapter:
    d = model.config.hidden_size
    bias = torch.linspace(-0.5, 0.5, d)
    return RepresentationAdapter.from_affine(_projection(d), bias, base_model=model, method="inlp", removed_rank=3,
                                             feature={"name": "gender", "classes": ["female", "male"]}, **fields)


def _logits(model, tokenizer):
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_the_map_reaches_the_lm_head_and_off_is_bit_identical(lm_and_tokenizer):
    _, model, tokenizer = lm_and_tokenizer
    adapter = _adapter(model)
    before = _logits(model, tokenizer)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model.base_model(**batch).last_hidden_state
        expected = model.get_output_embeddings()(
            model.cls.predictions.transform(adapter.transform(hidden)) if hasattr(model, "cls")
            else adapter.transform(hidden))
    with adapter.applied(model):
        assert adapter.is_applied(model)
        on = _logits(model, tokenizer)
    torch.testing.assert_close(on, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(on, before)
    assert torch.equal(_logits(model, tokenizer), before) and not adapter.is_applied(model)


def test_seat_embeddings_see_the_map(lm_and_tokenizer):
    _, model, tokenizer = lm_and_tokenizer
    adapter = _adapter(model)
    base = sentence_embeddings(model, tokenizer, TEXTS)
    with adapter.applied(model):
        on = sentence_embeddings(model, tokenizer, TEXTS)
    assert not torch.allclose(torch.from_numpy(on), torch.from_numpy(base))
    assert (sentence_embeddings(model, tokenizer, TEXTS) == base).all()


def test_exceptions_and_handles_leave_the_model_exact(llama, bpe):
    adapter = _adapter(llama)
    before = _logits(llama, bpe)
    with pytest.raises(RuntimeError, match="boom"), adapter.applied(llama):
        raise RuntimeError("boom")
    assert torch.equal(_logits(llama, bpe), before)
    first, second = adapter.enable(llama), adapter.enable(llama, scale=0.5)
    first.remove()
    first.remove()  # idempotent
    assert second.active and adapter.disable(llama) == 1 and not second.active
    assert torch.equal(_logits(llama, bpe), before)
    with adapter.applied(llama, scale=0.0):
        torch.testing.assert_close(_logits(llama, bpe), before, rtol=1e-5, atol=1e-5)


def test_stacks_with_a_delta_adapter_in_either_order(llama, bpe):
    rep = _adapter(llama)
    generator = torch.Generator().manual_seed(1)
    deltas = {"model.layers.0.mlp.down_proj.weight": 0.1 * torch.randn(32, 64, generator=generator)}
    delta = gh.DeltaAdapter.from_deltas(deltas, base_model=llama)
    before = _logits(llama, bpe)
    with delta.applied(llama), rep.applied(llama):
        first = _logits(llama, bpe)
    with rep.applied(llama), delta.applied(llama):
        second = _logits(llama, bpe)
    handle_rep, handle_delta = rep.enable(llama), delta.enable(llama)
    handle_rep.remove()  # off in the order they went on, not the reverse
    handle_delta.remove()
    assert torch.equal(first, second) and not torch.allclose(first, before)
    assert torch.equal(_logits(llama, bpe), before)


def test_another_hidden_size_is_refused_in_one_line(llama, bpe):
    adapter = _adapter(llama, base_model_name_or_path="tiny-llama")
    other = tiny_gpt2(len(bpe))
    other.config.n_embd = 48
    with pytest.raises(AdapterCompatibilityError) as error:
        adapter.enable(other)
    message = str(error.value)
    assert "size 32" in message and "hidden size 48" in message and "tiny-llama" in message and "\n" not in message


def test_other_weights_warn_and_a_missing_delta_warns(llama, bpe):
    adapter = _adapter(llama)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.enable(llama).remove()  # same weights: silent
    other = tiny_llama(len(bpe), seed=1)
    with pytest.warns(UserWarning, match="other weights"):
        adapter.enable(other).remove()
    deltas = {"model.norm.weight": torch.full((32,), 0.5)}
    delta = gh.DeltaAdapter.from_deltas(deltas, base_model=llama)
    with delta.applied(llama):
        refit = _adapter(llama)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            refit.enable(llama).remove()  # fitted with this delta on, applied with it on: silent
    assert refit.config.fitted_with and refit.config.fitted_with[0]["weights"].startswith("bf16-sha256:")
    with pytest.warns(UserWarning, match="fitted on the base with the delta adapter"):
        refit.enable(llama).remove()


def test_save_and_load_round_trip_with_the_expected_files(llama, bpe, tmp_path):
    adapter = _adapter(llama, description="Removes three directions.")
    folder = adapter.save_pretrained(tmp_path / "inlp")
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert not list(tmp_path.glob(".*"))  # the temporary folder was renamed into place
    loaded = RepresentationAdapter.from_pretrained(folder)
    assert loaded.config == adapter.config and loaded.name_or_path == str(folder)
    assert all(torch.equal(loaded.tensors[k], v) for k, v in adapter.tensors.items())
    assert isinstance(load_adapter(folder), RepresentationAdapter)
    with adapter.applied(llama):
        expected = _logits(llama, bpe)
    with loaded.applied(llama):
        assert torch.equal(_logits(llama, bpe), expected)
    card = (folder / "README.md").read_text()
    assert CARD_MARKER in card and "Removes three directions." in card and "`inlp`" in card
    data = json.loads((folder / "adapter_config.json").read_text())
    assert data["adapter_type"] == "gradiend_representation" and "GRADIEND_REPRESENTATION" in data["peft_type"]


def test_wrong_folders_are_refused_with_a_pointer(llama, tmp_path):
    adapter = _adapter(llama)
    adapter.save_pretrained(tmp_path / "rep")
    with pytest.raises(AdapterLoadError, match="gradiend_representation.*load_adapter"):
        gh.DeltaAdapter.from_pretrained(tmp_path / "rep")
    delta = gh.DeltaAdapter.from_deltas({"model.norm.weight": torch.ones(32)}, base_model=llama)
    delta.save_pretrained(tmp_path / "delta")
    with pytest.raises(AdapterLoadError, match="gradiend_delta.*DeltaAdapter.from_pretrained"):
        RepresentationAdapter.from_pretrained(tmp_path / "delta")
    (tmp_path / "rep" / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(AdapterLoadError, match="adapter_model.safetensors"):
        RepresentationAdapter.from_pretrained(tmp_path / "rep")
    with pytest.raises(AdapterCompatibilityError, match="NaN"):
        RepresentationAdapter.from_affine(torch.full((4, 4), float("nan")))


def test_push_and_load_back_through_the_hub(hub, llama, bpe):
    adapter = _adapter(llama, base_model_name_or_path="gemma-3-270m")
    repo_id = hub.new_repo_id("inlp")
    adapter.push_to_hub(repo_id)
    assert set(HfApi().list_repo_files(repo_id)) >= {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    loaded = load_adapter(repo_id)
    assert isinstance(loaded, RepresentationAdapter) and loaded.config == adapter.config
    assert all(torch.equal(loaded.tensors[k], v) for k, v in adapter.tensors.items())
    card = ModelCard.load(hf_hub_download(repo_id, "README.md"))
    assert card.data.to_dict()["base_model"] == "google/gemma-3-270m"
    assert {"representation-adapter", "method:inlp", "feature:gender"} <= set(card.data.to_dict()["tags"])
    before = _logits(llama, bpe)
    with loaded.applied(llama):
        pass
    assert torch.equal(_logits(llama, bpe), before)

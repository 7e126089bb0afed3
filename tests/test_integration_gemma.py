"""The real embedded model (Gemma 3 270M): exact gradients and a short training run that separates gender.

Random tiny models cannot show that the encoder learns a real feature; these tests use the embedded model
(converted once from its GGUF package, then loaded from the verified cache in seconds).
"""

import pytest
import torch

import gradiend_hf as gh
from gradiend_hf.evaluation import pearson
from reference_gradients import plain_backward_gradients

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gemma():
    return gh.load_base_model("gemma-3-270m")


@pytest.fixture(scope="module")
def gender():
    return gh.features.gender()


def test_engine_gradient_equals_plain_backward_on_gemma(gemma, gender):
    # In float32 the two computations differ by ~1e-4 on Gemma (different kernels and sequence lengths, and a
    # numerically sensitive model); in float64 they agree to round-off, which shows the maths is the same.
    model, tokenizer = gemma
    model.double()
    try:
        _compare_with_plain_backward(model, tokenizer, gender, tolerance=1e-10)
    finally:
        model.float()  # float32 -> float64 -> float32 is exact: the shared model is unchanged
    _compare_with_plain_backward(model, tokenizer, gender, tolerance=1e-3)


def _compare_with_plain_backward(model, tokenizer, gender, tolerance):
    names = ["model.layers.5.mlp.down_proj.weight", "model.layers.17.self_attn.o_proj.weight"]
    examples = [gender.train[0], gender.train[-1]]
    pair = gh.GradientEngine(model, tokenizer, names).gradients(examples, source="factual")
    reference = plain_backward_gradients(model, tokenizer, examples, "factual", names, masked=False)
    for name in names:
        expected = reference[name].to(pair.source[name].dtype)
        error = (pair.source[name] - expected).norm() / expected.norm()
        assert float(error) <= tolerance, (name, float(error))


def test_short_training_separates_gender_on_held_out_names(gemma, gender, tmp_path):
    model, tokenizer = gemma
    gradiend = gh.GradiendModel.for_base_model(model, params=["model.layers.*.mlp.down_proj.weight"],
                                               feature=gender)
    args = gh.TrainingArguments(output_dir=str(tmp_path), max_steps=30, eval_steps=15, eval_max_examples=32,
                                progress_bar=False)
    result = gh.GradiendTrainer(gradiend, model, tokenizer, gender, args).train()
    assert result.best_correlation > 0.85
    by_class = gender.by_class("test")
    test = by_class["female"][::12][:16] + by_class["male"][::12][:16]  # 32 held-out texts, both classes
    engine = gh.GradientEngine(model, tokenizer, gradiend.config.param_names)
    h = gradiend.encode_examples(engine, test)[:, 0]
    labels = torch.tensor([gender.label_value(e.label) for e in test])
    assert pearson(h, labels) > 0.85  # held-out names in held-out templates; female encodes positive
    assert float(h[labels > 0].mean()) > 0 > float(h[labels < 0].mean())
    loaded = gh.GradiendModel.from_pretrained(tmp_path)
    assert loaded.config.base_model_name_or_path == "gemma-3-270m"


def test_delta_adapter_on_gemma_toggles_exactly_and_exports_an_exact_lora(gemma, tmp_path):
    import copy

    from peft import PeftModel

    model, tokenizer = gemma
    gradiend = gh.GradiendModel.for_base_model(model, params=["model.layers.1[0-1].mlp.down_proj.weight"], seed=0)
    adapter = gradiend.to_adapter(h=1.0, alpha=0.5)
    names = adapter.param_names
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    ids = tokenizer("John explained the vision as best", return_tensors="pt").input_ids
    base_logits = model(ids).logits
    with adapter.applied(model):
        on_logits = model(ids).logits
        merged = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    assert not torch.equal(on_logits, base_logits)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in names)
    assert torch.equal(model(ids).logits, base_logits)
    report = adapter.export_lora(tmp_path / "lora", rank="exact", base_model=model)
    assert report.total_relative_error == 0.0
    small = copy.deepcopy(model)
    peft_merged = dict(PeftModel.from_pretrained(small, str(tmp_path / "lora")).merge_and_unload().named_parameters())
    for name in names:
        assert torch.equal(peft_merged[name], merged[name]), name

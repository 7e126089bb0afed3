"""The real embedded model (Gemma 3 270M): exact gradients and a short training run that separates gender.

Random tiny models cannot show that the encoder learns a real feature; these tests use the embedded model
(converted once from its GGUF package, then loaded from the verified cache in seconds).
"""

import pytest
import torch

import gradiend_hf as gh
from gradiend_hf.training import pearson

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gemma():
    return gh.load_base_model("gemma-3-270m")


@pytest.fixture(scope="module")
def gender():
    return gh.features.gender()


def test_engine_gradient_equals_plain_backward_on_gemma(gemma, gender):
    model, tokenizer = gemma
    names = ["model.layers.5.mlp.down_proj.weight", "model.layers.17.self_attn.o_proj.weight"]
    examples = [gender.train[0], gender.train[-1]]
    pair = gh.GradientEngine(model, tokenizer, names).gradients(examples, source="factual")
    rows, targets = [], []
    for example in examples:
        context = example.prefix.rstrip()
        target = tokenizer(context + " " + example.factual, add_special_tokens=False)["input_ids"][-1]
        rows.append(tokenizer(context)["input_ids"] + [target])
    width = max(map(len, rows))
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, len(ids) - 1] = ids[-1]
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        params[name].requires_grad_(True)
    try:
        model(input_ids=input_ids, attention_mask=attention, labels=labels).loss.backward()
        for name in names:
            error = (pair.source[name] - params[name].grad).norm() / params[name].grad.norm()
            assert float(error) <= 1e-5, (name, float(error))
    finally:
        for name in names:
            params[name].grad = None


def test_short_training_separates_gender_on_held_out_names(gemma, gender, tmp_path):
    model, tokenizer = gemma
    gradiend = gh.GradiendModel.for_base_model(model, params=["model.layers.*.mlp.down_proj.weight"],
                                               feature=gender)
    args = gh.TrainingArguments(output_dir=str(tmp_path), max_steps=30, eval_steps=15, eval_max_examples=32,
                                progress_bar=False)
    result = gh.GradiendTrainer(gradiend, model, tokenizer, gender, args).train()
    assert result.best_correlation > 0.85
    test = gender.test[:: max(1, len(gender.test) // 32)]
    engine = gh.GradientEngine(model, tokenizer, gradiend.config.param_names)
    h = gradiend.encode_examples(engine, test)[:, 0]
    labels = torch.tensor([gender.label_value(e.label) for e in test])
    assert pearson(h, labels) > 0.85  # held-out names in held-out templates; female encodes positive
    assert float(h[labels > 0].mean()) > 0 > float(h[labels < 0].mean())
    loaded = gh.GradiendModel.from_pretrained(tmp_path)
    assert loaded.config.base_model_name_or_path == "gemma-3-270m"

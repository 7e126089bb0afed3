"""SelfDebias for a bias type: built for causal and masked LMs, refused where there is no usable prompt format."""

import pytest
import torch
from transformers import LlamaModel

from gradiend_hf.debiasers import DEBIASING_PREFIXES, self_debias
from gradiend_hf.errors import AdapterCompatibilityError
from tiny_models import tiny_gpt2


def test_builds_for_causal_and_masked_lms(lm_and_tokenizer):
    kind, model, tokenizer = lm_and_tokenizer
    adapter = self_debias(model, tokenizer, "gender")
    assert adapter.config.lm_kind == ("masked" if kind == "bert" else "causal")
    assert adapter.config.prefixes == [DEBIASING_PREFIXES["gender"]]
    assert adapter.config.leading_token_id == tokenizer("a")["input_ids"][0]
    batch = tokenizer(["The nurse said that she was tired."], return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
        with adapter.applied(model):
            on = model(**batch).logits
        assert torch.equal(model(**batch).logits, before) and not torch.allclose(on, before)


def test_models_without_a_usable_prompt_format_are_refused_in_one_line(llama, bpe, wordpiece):
    body = LlamaModel(llama.config)
    short = tiny_gpt2(len(bpe))
    short.config.n_positions = 20
    cases = [
        (lambda: self_debias(body, bpe), "causal or masked LM"),
        (lambda: self_debias(short, bpe), "positions"),
        (lambda: self_debias(llama, bpe, "age"), "prefixes for"),
        (lambda: self_debias(llama, wordpiece, prefixes=["Ω≈ç√∫˜µ≤≥÷"]), "cannot spell"),
    ]
    for call, message in cases:
        with pytest.raises(AdapterCompatibilityError, match=message) as error:
            call()
        assert "\n" not in str(error.value)

"""SelfDebiasAdapter: the rescaling against hand-computed numbers, the hook, SEAT refused, files, Hub, bad input."""

import math

import pytest
import torch
from huggingface_hub import HfApi

from gradiend_hf.adapters import SelfDebiasAdapter, SelfDebiasConfig, load_adapter, self_debias_log_probs
from gradiend_hf.benchmarks import sentence_embeddings
from gradiend_hf.errors import AdapterCompatibilityError

TEXTS = ["Mary said that she would come home.", "John ran."]


def test_rescaling_matches_a_hand_computed_distribution():
    regular = torch.tensor([0.5, 0.3, 0.2]).log()
    prefixed = [torch.tensor([0.3, 0.5, 0.2]).log(), torch.tensor([0.45, 0.35, 0.2]).log()]
    # Δ = p − max over prefixes = [0.5 − 0.45, 0.3 − 0.5, 0.2 − 0.2] = [0.05, −0.2, 0]; only token 1 is damped.
    got = self_debias_log_probs(regular, prefixed, decay_constant=5.0, epsilon=0.01).exp()
    damped = 0.3 * math.exp(-1.0)
    expected = torch.tensor([0.5, damped, 0.2]) / (0.7 + damped)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # λ = 50: exp(−10) < ε, so the floor ε = 0.01 applies
    got = self_debias_log_probs(regular, prefixed, decay_constant=50.0, epsilon=0.01).exp()
    torch.testing.assert_close(got, torch.tensor([0.5, 0.003, 0.2]) / 0.703, rtol=1e-6, atol=1e-7)
    # no prefix raises any probability: nothing changes
    torch.testing.assert_close(self_debias_log_probs(regular, [regular]), regular, rtol=1e-6, atol=1e-7)


def _adapter(model, tokenizer, prefixes=("The following text is biased:", "Stereotypes follow:"), **fields):
    kind = "masked" if tokenizer.mask_token_id is not None else "causal"
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    lead = tokenizer("a")["input_ids"][0]
    config = SelfDebiasConfig(prefixes=list(prefixes), prefix_ids=ids, lm_kind=kind, leading_token_id=lead,
                              vocab_size=model.get_output_embeddings().weight.shape[0], bias_type="gender", **fields)
    return SelfDebiasAdapter(config)


def _reference(model, tokenizer, adapter, text):
    """The debiased log-probs of one unpadded text, computed by hand from separate forward passes."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    config = adapter.config
    with torch.no_grad():
        regular = model(input_ids=ids).logits[0]
        biased = []
        for prefix in config.prefix_ids:
            joined = torch.cat([ids[:, :1], torch.tensor([prefix]), ids[:, 1:]], dim=1)
            logits = model(input_ids=joined).logits[0]
            width = len(prefix)
            rows = [0 if (j == 0 and config.lm_kind == "masked") else j + width for j in range(ids.shape[1])]
            biased.append(logits[rows])
    return self_debias_log_probs(regular, biased, decay_constant=config.decay_constant, epsilon=config.epsilon)


def test_the_hook_rescales_every_real_position_of_a_padded_batch(lm_and_tokenizer):
    _, model, tokenizer = lm_and_tokenizer
    adapter = _adapter(model, tokenizer)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
        with adapter.applied(model):
            on = model(**batch).logits
        after = model(**batch).logits
    assert torch.equal(before, after)
    for row, text in enumerate(TEXTS):
        n = int(batch["attention_mask"][row].sum())
        torch.testing.assert_close(on[row, :n], _reference(model, tokenizer, adapter, text), rtol=1e-4, atol=1e-4)
        assert torch.equal(on[row, n:], before[row, n:])  # padded positions untouched
    assert torch.allclose(on.logsumexp(-1)[batch["attention_mask"].bool()], torch.zeros(1), atol=1e-4)


def test_seat_is_refused_while_on_and_works_after(llama, bpe):
    adapter = _adapter(llama, bpe)
    with adapter.applied(llama):
        with pytest.raises(AdapterCompatibilityError, match="leave SEAT out"):
            sentence_embeddings(llama, bpe, TEXTS)
        llama(**bpe(TEXTS[:1], return_tensors="pt"))  # the whole LM still runs
    sentence_embeddings(llama, bpe, TEXTS)


def test_bad_calls_are_refused_in_one_line(llama, bpe, bert, wordpiece):
    adapter = _adapter(llama, bpe)
    with adapter.applied(llama):
        ids = bpe(TEXTS[:1], return_tensors="pt")["input_ids"]
        with pytest.raises(AdapterCompatibilityError, match="loss from `output.logits`"):
            llama(input_ids=ids, labels=ids)
        left = torch.tensor([[0, 1, 5, 6], [1, 5, 6, 7]])
        with pytest.raises(AdapterCompatibilityError, match="right-padded"):
            llama(input_ids=left, attention_mask=(left != 0).long())
    with pytest.raises(AdapterCompatibilityError, match="vocabulary") as error:
        adapter.enable(bert)
    assert "\n" not in str(error.value)
    assert not adapter.is_applied(bert) and not adapter.is_applied(llama)


def test_save_load_and_hub_round_trip(hub, llama, bpe, tmp_path):
    adapter = _adapter(llama, bpe, base_model_name_or_path="gemma-3-270m", description="Damps gendered words.")
    folder = adapter.save_pretrained(tmp_path / "sd")
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "README.md"}
    loaded = load_adapter(folder)
    assert isinstance(loaded, SelfDebiasAdapter) and loaded.config == adapter.config
    assert "Damps gendered words." in (folder / "README.md").read_text()
    repo_id = hub.new_repo_id("self-debias")
    adapter.push_to_hub(repo_id)
    assert set(HfApi().list_repo_files(repo_id)) >= {"adapter_config.json", "README.md"}
    from_hub = SelfDebiasAdapter.from_pretrained(repo_id)
    assert from_hub.config == adapter.config
    batch = bpe(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        before = llama(**batch).logits
        with adapter.applied(llama):
            expected = llama(**batch).logits
        with from_hub.applied(llama):
            assert torch.equal(llama(**batch).logits, expected)
        assert torch.equal(llama(**batch).logits, before)

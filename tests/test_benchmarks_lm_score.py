"""Tests for gradiend_hf.benchmarks.lm_score and the batched scoring helpers in _scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, tiny_bert, tiny_gpt2, tiny_llama, wordpiece_tokenizer

from gradiend_hf.benchmarks import _scoring, default_lm_texts, lm_score
from gradiend_hf.errors import BenchmarkError

TEXTS = [
    "Mary said that she would come home before he left.",
    "The cat sat.",
    "They are people from the town, and the white wall is old.",
    "John ran to the station.",
]


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def llama(bpe):
    return tiny_llama(len(bpe))


@pytest.fixture(scope="module")
def wordpiece():
    return wordpiece_tokenizer()


@pytest.fixture(scope="module")
def bert(wordpiece):
    return tiny_bert(len(wordpiece))


def test_lm_kind_is_inferred_from_the_class(llama, bert, bpe) -> None:
    assert _scoring.infer_lm_kind(llama) == "causal"
    assert _scoring.infer_lm_kind(tiny_gpt2(len(bpe))) == "causal"
    assert _scoring.infer_lm_kind(bert) == "masked"
    assert _scoring.infer_lm_kind(bert, "causal") == "causal"
    with pytest.raises(BenchmarkError, match="lm_kind must be one of"):
        _scoring.infer_lm_kind(bert, "seq2seq")
    with pytest.raises(BenchmarkError, match="pass lm_kind="):
        _scoring.infer_lm_kind(torch.nn.Linear(2, 2))


def test_perplexity_matches_the_loss_of_labels(llama, bpe) -> None:
    # reference: per text, transformers' own shifted cross-entropy over every token after the first (BOS)
    total, count = 0.0, 0
    for text in TEXTS:
        ids = bpe(text, return_tensors="pt")["input_ids"]
        assert ids[0, 0].item() == bpe.bos_token_id
        with torch.no_grad():
            loss = llama(input_ids=ids, labels=ids).loss.item()
        total += loss * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    result = lm_score(llama, bpe, TEXTS, batch_size=3, bootstrap=0)
    assert result.kind == "perplexity"
    assert result.num_tokens == count == sum(result.per_text_tokens)
    assert result.score == pytest.approx(math.exp(total / count), rel=1e-5)
    assert result.mean_log_likelihood == pytest.approx(-total / count, rel=1e-5)
    assert result.ci is None
    # batching and padding do not change anything
    single = lm_score(llama, bpe, TEXTS, batch_size=1, bootstrap=0)
    assert np.allclose(single.per_text_log_likelihood, result.per_text_log_likelihood, atol=1e-4)


def test_without_bos_the_first_token_is_not_scored(bpe) -> None:
    gpt2 = tiny_gpt2(len(bpe))
    tokenizer = bpe_tokenizer()
    tokenizer._tokenizer.post_processor = None  # no <s>: like GPT-2's own tokenizer
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    assert all(row[0] != tokenizer.bos_token_id for row in ids)
    result = lm_score(gpt2, tokenizer, TEXTS, bootstrap=0)
    assert result.per_text_tokens == [len(row) - 1 for row in ids]
    reference = sum(gpt2(input_ids=torch.tensor([row]), labels=torch.tensor([row])).loss.item() * (len(row) - 1)
                    for row in ids)  # fmt: skip
    assert sum(result.per_text_log_likelihood) == pytest.approx(-reference, rel=1e-5)


def test_log_softmax_is_chunked_without_changing_values(monkeypatch) -> None:
    logits = torch.randn(37, 50)
    targets = torch.randint(0, 50, (37,))
    monkeypatch.setattr(_scoring, "CHUNK_BYTES", 5 * 50 * 4)  # 5 rows per chunk
    log_probs, hits = _scoring.gather_log_probs(logits, targets)
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(log_probs, expected, atol=1e-6)
    assert torch.equal(hits, logits.argmax(-1) == targets)


def test_batches_stay_within_the_logits_budget(monkeypatch) -> None:
    lengths = [10, 3, 7, 7, 2, 9, 1]
    monkeypatch.setattr(_scoring, "LOGITS_BUDGET_BYTES", 20 * 100 * 4)  # 20 positions of a 100-word vocab
    batches = _scoring.plan_batches(lengths, batch_size=4, vocab=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 20
        assert len(batch) <= 4
    assert batches[0][0] == 0  # longest first
    with pytest.raises(BenchmarkError, match="batch_size"):
        _scoring.plan_batches(lengths, batch_size=0, vocab=100)


class ConstantMaskedLM(torch.nn.Module):
    """Predicts the same distribution at every position: logit log(3) for token `favourite`, 0 elsewhere."""

    def __init__(self, vocab: int, favourite: int, mask_id: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"architectures": ["ConstantForMaskedLM"], "vocab_size": vocab})()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.favourite, self.mask_id = vocab, favourite, mask_id
        self.masked: list[tuple[int, int]] = []  # (sequence length, position) of every mask seen

    def forward(self, input_ids, attention_mask):
        for row, length in zip(input_ids, attention_mask.sum(1)):
            self.masked += [(int(length), int(p)) for p in (row == self.mask_id).nonzero().flatten()]
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = math.log(3.0)
        return type("Output", (), {"logits": logits})()


def test_masked_accuracy_by_hand(wordpiece) -> None:
    texts = ["the cat sat on the wall.", "the the sun"]
    favourite = wordpiece.convert_tokens_to_ids("the")
    model = ConstantMaskedLM(len(wordpiece), favourite, wordpiece.mask_token_id)
    result = lm_score(model, wordpiece, texts, bootstrap=0)
    ids = [wordpiece(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = sum(len(row) for row in ids)
    hits = sum(row.count(favourite) for row in ids)
    p_favourite, p_other = 3 / (len(wordpiece) + 2), 1 / (len(wordpiece) + 2)
    assert result.kind == "masked_accuracy" and result.num_tokens == n
    assert result.score == pytest.approx(hits / n)
    assert result.mean_log_likelihood == pytest.approx(
        (hits * math.log(p_favourite) + (n - hits) * math.log(p_other)) / n
    )
    # every non-special token is masked exactly once, and [CLS]/[SEP] never
    assert len(model.masked) == n == len(set(model.masked))
    assert all(0 < position < length - 1 for length, position in model.masked)


def test_masked_accuracy_on_tiny_bert_matches_a_plain_loop(bert, wordpiece) -> None:
    result = lm_score(bert, wordpiece, TEXTS[:2], bootstrap=0)
    hits, total, log_likelihood = 0, 0, 0.0
    for text in TEXTS[:2]:
        encoded = wordpiece(text, return_special_tokens_mask=True)
        ids = encoded["input_ids"]
        scored = [j for j, special in enumerate(encoded["special_tokens_mask"]) if not special]
        for offset in range(7):
            masked = list(ids)
            for j in scored[offset::7]:
                masked[j] = wordpiece.mask_token_id
            with torch.no_grad():
                logits = bert(input_ids=torch.tensor([masked])).logits[0]
            for j in scored[offset::7]:
                hits += int(logits[j].argmax() == ids[j])
                log_likelihood += torch.log_softmax(logits[j], -1)[ids[j]].item()
                total += 1
    assert result.num_tokens == total
    assert result.score == pytest.approx(hits / total)
    assert result.mean_log_likelihood == pytest.approx(log_likelihood / total, rel=1e-5)


def test_bootstrap_interval_holds_the_score_and_narrows(llama, bpe) -> None:
    texts = default_lm_texts()
    few = lm_score(llama, bpe, texts[:40], bootstrap=300, max_length=32)
    many = lm_score(llama, bpe, texts[:400], bootstrap=300, max_length=32)
    for result in (few, many):
        assert result.ci[0] <= result.score <= result.ci[1]
    assert many.ci[1] - many.ci[0] < few.ci[1] - few.ci[0]
    again = lm_score(llama, bpe, texts[:40], bootstrap=300, max_length=32)
    assert again.ci == few.ci  # seeded


def test_default_texts_are_shipped_and_not_the_search_text() -> None:
    from gradiend_hf.features import neutral_texts

    texts = default_lm_texts()
    assert len(texts) == 500 and all(8 <= len(t.split()) <= 40 for t in texts)
    assert not set(texts) & set(neutral_texts())
    subset = default_lm_texts(50)
    assert len(subset) == 50 and subset == default_lm_texts(50) and subset[1] == texts[10]


def test_bad_input_says_what_was_expected(llama, bpe) -> None:
    with pytest.raises(BenchmarkError, match="at least one text"):
        lm_score(llama, bpe, [])
    with pytest.raises(BenchmarkError, match="no mask token"):
        lm_score(llama, bpe, TEXTS, lm_kind="masked")
    with pytest.raises(BenchmarkError, match="bootstrap must be >= 0"):
        lm_score(llama, bpe, TEXTS, bootstrap=-1)
    with pytest.raises(BenchmarkError, match="positive number"):
        default_lm_texts(0)


def test_scoring_runs_in_eval_mode_and_restores_the_flag(bpe) -> None:
    model = tiny_llama(len(bpe))
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5  # dropout would make training-mode scores random
    reference = lm_score(model, bpe, TEXTS, bootstrap=0).per_text_log_likelihood
    model.train()
    assert lm_score(model, bpe, TEXTS, bootstrap=0).per_text_log_likelihood == reference
    assert model.training
    model.eval()

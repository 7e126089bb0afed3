"""Transfer scoring: the paper's indices on hand-computed values, class masses against a plain forward pass (causal
and masked), the LM policies, and a transfer search against a deep-copy reference."""

import copy
import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_gender_feature

from gradiend_hf import GradiendModel
from gradiend_hf.errors import SearchError, TargetTokenizationError
from gradiend_hf.evaluation import association, search_decoder, transfer_indices
from gradiend_hf.evaluation.search_result import paper_lm_score
from gradiend_hf.evaluation.transfer import TransferScorer
from gradiend_hf.features.transfer import TransferSet
from gradiend_hf.gradients import GradientEngine

NEUTRAL = ["The doctor thinks the answer to the question is right.", "They sat on the old wall in the sun."]
CAUSAL_TEXTS = [
    {"text": "The doctor said that [MASK] would come home.", "group": "female", "split": "validation"},
    {"text": "The nurse explained the vision as best [MASK] could.", "group": "male", "split": "validation"},
    {"text": "The cats smiled because [MASK] knew the answer.", "split": "validation"},
    {"text": "They ran to the station, but [MASK] missed the train.", "split": "test"},
]
# " she", " he", " the" are one token for the tiny BPE tokenizer; " Christian" is three: never counted
CAUSAL_WORDS = {"female": {"she": 1.0, "the": 0.25, "Christian": 1.0}, "male": {"he": 1.0, "the": 0.75}}
SEARCH_WORDS = {"female": {"she": 1.0, "the": 0.25}, "male": {"he": 1.0, "the": 0.75}}  # your own words: all one token
MASKED_TEXTS = [{"text": "[MASK] said that she would come home.", "group": "female", "split": "validation"},
                {"text": "[MASK] explained the vision as best he could.", "group": "male", "split": "validation"},
                {"text": "[MASK] ran to the station.", "split": "test"}]
MASKED_WORDS = {"female": ["mary", "anna", "emma"], "male": ["john", "peter", "james"]}


def test_bpi_fpi_mpi_by_hand():
    p = np.array([[0.2, 0.1], [0.05, 0.25], [0.3, 0.3]])  # columns: P(F), P(M)
    # APD = |P(M) − P(F)|: 0.1, 0.2, 0 -> BPI terms (1 − APD)(P(M) + P(F)) = 0.27, 0.24, 0.6
    # FPI terms (1 − P(M)) P(F) = 0.18, 0.0375, 0.21; MPI terms (1 − P(F)) P(M) = 0.08, 0.2375, 0.21
    indices = transfer_indices(p, ["female", "male"], "bpi")
    assert indices["balanced"] == pytest.approx((0.27 + 0.24 + 0.6) / 3)
    assert indices["female"] == pytest.approx((0.18 + 0.0375 + 0.21) / 3)
    assert indices["male"] == pytest.approx((0.08 + 0.2375 + 0.21) / 3)


def test_the_multi_group_index_by_hand():
    p = np.array([[0.1, 0.3, 0.2], [0.25, 0.25, 0.25]])
    # (1 − (max − min)) · min: (1 − 0.2)·0.1 = 0.08; 1·0.25
    indices = transfer_indices(p, ["a", "b", "c"], "min")
    assert indices["balanced"] == pytest.approx((0.08 + 0.25) / 2)
    # class a: (1 − max(others)) · p_a = (1 − 0.3)·0.1 = 0.07; (1 − 0.25)·0.25 = 0.1875
    assert indices["a"] == pytest.approx((0.07 + 0.1875) / 2)
    two = transfer_indices(p[:, :2], ["a", "b"], "min")  # for a pair: (1 − |pa − pb|)·min
    assert two["balanced"] == pytest.approx(((1 - 0.2) * 0.1 + 0.25) / 2)
    with pytest.raises(SearchError, match="BPI formula is for two classes"):
        transfer_indices(p, ["a", "b", "c"], "bpi")


def test_association_is_the_difference_of_mean_log_odds():
    p = np.array([[0.4, 0.1], [0.2, 0.2], [0.1, 0.3], [0.3, 0.3]])
    value = association(p, ["female", "female", "male", None], ["female", "male"])
    expected = (math.log(4) + math.log(1)) / 2 - math.log(1 / 3)
    assert value == pytest.approx(expected)
    assert association(p, [None, None, "male", None], ["female", "male"]) is None


def test_the_paper_lm_score():
    assert paper_lm_score(-3.0, None) == pytest.approx(0.25)  # 1 / (1 + NLL)
    assert paper_lm_score(-3.0, 0.4) == 0.4  # masked LMs: masked-token accuracy


def _reference_masses(model, tokenizer, kind, texts, words):
    """Per text, Σ weight·p(word) at the slot from a plain forward pass and a full softmax."""
    out = []
    for record in texts:
        prefix, suffix = record["text"].split("[MASK]")
        with torch.no_grad():
            if kind == "causal":
                ids = tokenizer(prefix.rstrip())["input_ids"]
                probs = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
            else:
                ids = tokenizer(prefix + tokenizer.mask_token + suffix)["input_ids"]
                probs = model(torch.tensor([ids])).logits[0, ids.index(tokenizer.mask_token_id)].softmax(-1)
        row = []
        for group in ("female", "male"):
            entries = words[group] if isinstance(words[group], dict) else dict.fromkeys(words[group], 1.0)
            total = 0.0
            for word, weight in entries.items():
                pieces = tokenizer(" " + word if kind == "causal" else word, add_special_tokens=False)["input_ids"]
                if len(pieces) == 1:
                    total += weight * float(probs[pieces[0]])
            row.append(total)
        out.append(row)
    return np.array(out)


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_masses_match_a_plain_forward_pass(kind, llama, bpe, bert, wordpiece):
    model, tokenizer, texts, words = ((llama, bpe, CAUSAL_TEXTS, CAUSAL_WORDS) if kind == "causal"
                                      else (bert, wordpiece, MASKED_TEXTS, MASKED_WORDS))
    transfer = TransferSet.from_records(texts, words=words)
    engine = GradientEngine(model, tokenizer, [next(iter(dict(model.named_parameters())))])
    scorer = TransferScorer(engine, transfer.validation + transfer.test, transfer.words, batch_size=2)
    expected = _reference_masses(model.eval(), tokenizer, kind, texts, words)
    assert np.allclose(scorer.masses(), expected, rtol=1e-5, atol=1e-9)
    assert scorer.groups == [t.get("group", "none") for t in texts]
    if kind == "causal":
        assert scorer.words_used == {"female": 2, "male": 2}  # " Christian" is not one token
        with pytest.raises(TargetTokenizationError, match="not one token for this tokenizer.*Christian"):
            TransferScorer(engine, transfer.validation, transfer.words, strict=True)


@pytest.fixture
def gradiend(llama):
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.down_proj.weight"], feature=feature,
                                         seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in [*model.decoder.weights, *model.decoder.biases]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 30.0 / math.sqrt(tensor.numel()))
    return model, feature


@pytest.mark.parametrize("policy", ["threshold", "product", "relative"])
def test_a_transfer_search_point_matches_a_deep_copy_reference(gradiend, llama, bpe, policy):
    model, feature = gradiend
    transfer = TransferSet.from_records(CAUSAL_TEXTS, words=SEARCH_WORDS)
    before = {n: p.detach().clone() for n, p in llama.named_parameters()}
    h, alpha = 0.6, 0.05
    result = search_decoder(model, llama, bpe, feature, on="transfer", transfer=transfer, lm_policy=policy,
                            h_values=[h], alphas=[alpha], prune=False, neutral_texts=NEUTRAL, progress=False)
    for name, p in llama.named_parameters():
        assert torch.equal(p, before[name])
    edited = copy.deepcopy(llama).eval()
    with torch.no_grad():
        update = model.decode(h)
        params = dict(edited.named_parameters())
        for name in model.config.param_names:
            params[name].add_(alpha * update[name])
    texts = CAUSAL_TEXTS[:3]
    base_p = _reference_masses(llama.eval(), bpe, "causal", texts, SEARCH_WORDS)
    edit_p = _reference_masses(edited, bpe, "causal", texts, SEARCH_WORDS)
    assert not np.allclose(base_p, edit_p)  # the edit matters
    point = result.points[0]
    for criterion, value in transfer_indices(edit_p, ["female", "male"], "bpi").items():
        assert point.indices[criterion] == pytest.approx(value, rel=1e-5, abs=1e-9)
    assert point.association == pytest.approx(association(edit_p, ["female", "male", None], ["female", "male"]))
    lm = point.lm_score
    assert lm == pytest.approx(1.0 / (1.0 - point.lm_mean_log_likelihood))
    base_lm = result.base.lm_score
    for criterion in result.criteria:
        index = point.indices[criterion]
        expected = {"product": index * lm, "relative": index * point.lm_factor,
                    "threshold": index if lm >= 0.99 * base_lm else None}[policy]
        assert point.score(criterion) == (pytest.approx(expected) if expected is not None else None)
    assert result.settings["on"] == "transfer" and result.settings["lm_policy"] == policy
    assert result.examples[0] == {"text": CAUSAL_TEXTS[0]["text"], "group": "female"}


def test_the_threshold_policy_never_picks_a_point_that_breaks_the_lm(gradiend, llama, bpe):
    model, feature = gradiend
    transfer = TransferSet.from_records(CAUSAL_TEXTS, words=SEARCH_WORDS)
    result = search_decoder(model, llama, bpe, feature, on="transfer", transfer=transfer, h_values=[-1.0, 1.0],
                            alphas=[-0.5, -0.05, 0.05, 0.5], prune=False, neutral_texts=NEUTRAL, progress=False)
    floor = 0.99 * result.base.lm_score
    for point in result.points:
        assert (point.score("balanced") is None) == (point.lm_score < floor)
    best = result.best("balanced")
    assert best.is_base or best.lm_score >= floor
    fallback = result.fallback("balanced")
    assert fallback is None or (fallback.lm_score >= floor and fallback.alpha != 0.0)


def test_transfer_options_are_checked(gradiend, llama, bpe):
    model, feature = gradiend
    with pytest.raises(SearchError, match="`on` must be one of"):
        search_decoder(model, llama, bpe, feature, on="benchmark")
    with pytest.raises(SearchError, match="`lm_policy` must be one of"):
        search_decoder(model, llama, bpe, feature, lm_policy="max")
    with pytest.raises(SearchError, match=r"`lm_threshold` must be a number in \(0, 1\]"):
        search_decoder(model, llama, bpe, feature, lm_threshold=1.5)
    other = TransferSet.from_records(CAUSAL_TEXTS, words={"a": ["she"], "b": ["he"]})
    with pytest.raises(SearchError, match=r"no words for class\(es\) \['female', 'male'\]"):
        search_decoder(model, llama, bpe, feature, transfer=other, progress=False)
    with pytest.raises(TargetTokenizationError, match="not one token for this tokenizer.*Christian"):
        search_decoder(model, llama, bpe, feature, transfer=TransferSet.from_records(CAUSAL_TEXTS, words=CAUSAL_WORDS),
                       progress=False, neutral_texts=NEUTRAL)
    # the built-in first names are no single tokens for the tiny tokenizer: one clear error, not a 0-mass search
    with pytest.raises(TargetTokenizationError, match="No word of class 'female' is one token"):
        search_decoder(model, llama, bpe, feature, progress=False, neutral_texts=NEUTRAL)

"""Decoder search: the base model is edited in place and restored bit for bit; scores match a plain reference."""

import copy
import csv
import json
import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_gender_feature

from gradiend_hf import GradiendModel
from gradiend_hf.cli import main
from gradiend_hf.errors import SearchError
from gradiend_hf.evaluation import DecoderSearchResult, SearchPoint, evaluate_point, search_decoder
from gradiend_hf.evaluation.slot_scores import FEATURE_FORMULAS, FeatureScorer
from gradiend_hf.features import FeatureDataset

NEUTRAL = [
    "The doctor thinks the answer to the question is right.",
    "They sat on the old wall in the sun before the train left.",
    "The white and black cats ran to the station again.",
    "People from the town wrote a letter to the garden.",
]
PARAMS = {"llama": ["model.layers.*.mlp.down_proj.weight"], "bert": ["bert.encoder.layer.*.output.dense.weight"]}


@pytest.fixture(scope="module")
def feature():
    return tiny_gender_feature()


def _gradiend(base, feature, kind, scale=30.0):
    """A GRADIEND model with a random decoder large enough that (h*, α) visibly change the tiny base model."""
    model = GradiendModel.for_base_model(base, params=PARAMS[kind], feature=feature, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in [*model.decoder.weights, *model.decoder.biases]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale / math.sqrt(tensor.numel()))
    return model


@pytest.fixture
def tiny(request, llama, bpe, bert, wordpiece, feature):
    kind = getattr(request, "param", "llama")
    base, tokenizer = (llama, bpe) if kind == "llama" else (bert, wordpiece)
    return kind, base, tokenizer, _gradiend(base, feature, kind)


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_identical(model, snapshot):
    for name, p in model.named_parameters():
        assert torch.equal(p, snapshot[name]), f"{name} changed"


def _search(model, base, tokenizer, feature, **options):
    options = {"on": "feature", "h_values": [-1.0, 1.0], "alphas": [-0.05, 0.05], "max_texts": 8,
               "neutral_texts": NEUTRAL, "progress": False, **options}
    return search_decoder(model, base, tokenizer, feature, **options)


# -- the base model is never changed ----------------------------------------------------------------------------------
def test_base_is_bit_identical_after_a_search(tiny, feature):
    _kind, base, tokenizer, model = tiny
    before = _snapshot(base)
    flags = {n: p.requires_grad for n, p in base.named_parameters()}
    base.train()
    result = _search(model, base, tokenizer, feature, prune=False)
    _assert_identical(base, before)
    assert base.training and flags == {n: p.requires_grad for n, p in base.named_parameters()}
    # the points did change the model while they were scored (otherwise the test above would prove nothing)
    assert any(p.indices != result.base.indices for p in result.points)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_base_is_restored_when_scoring_fails(tiny, feature, monkeypatch, error):
    _kind, base, tokenizer, model = tiny
    before = _snapshot(base)
    original = FeatureScorer.masses
    calls = []

    def failing(self):
        calls.append(1)
        if len(calls) == 3:  # the base, the 1st grid point, then the 2nd grid point fails mid-search
            raise error("scoring failed")
        return original(self)

    monkeypatch.setattr(FeatureScorer, "masses", failing)
    with pytest.raises(error, match="scoring failed"):
        _search(model, base, tokenizer, feature, prune=False)
    assert len(calls) == 3
    _assert_identical(base, before)


# -- scores against a straightforward reference ----------------------------------------------------------------------
def _slot_probabilities(model, tokenizer, kind, record):
    """p(factual), p(counterfactual) at the slot from a plain forward pass of one text and a full softmax."""
    prefix, suffix = record["text"].split("[MASK]")
    if kind == "llama":
        ids = tokenizer(prefix.rstrip())["input_ids"]
        probs = model(torch.tensor([ids])).logits[0, -1].softmax(-1)

        def target(word):
            (token,) = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            return token
    else:
        ids = tokenizer(prefix + tokenizer.mask_token + suffix)["input_ids"]
        probs = model(torch.tensor([ids])).logits[0, ids.index(tokenizer.mask_token_id)].softmax(-1)

        def target(word):
            (token,) = tokenizer(word, add_special_tokens=False)["input_ids"]
            return token
    return float(probs[target(record["factual"])]), float(probs[target(record["counterfactual"])])


def _mean_log_likelihood(model, tokenizer, kind, texts):
    """Causal: log p of every token after the first; masked: every word piece masked once (7 interleaved passes)."""
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        if kind == "llama":
            logprobs = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
            total += sum(float(logprobs[t - 1, ids[t]]) for t in range(1, len(ids)))
            count += len(ids) - 1
            continue
        scored = list(range(1, len(ids) - 1))  # not [CLS] / [SEP]
        for offset in range(7):
            chosen = scored[offset::7]
            if not chosen:
                continue
            masked = [tokenizer.mask_token_id if j in chosen else t for j, t in enumerate(ids)]
            logprobs = model(torch.tensor([masked])).logits[0].double().log_softmax(-1)
            total += sum(float(logprobs[j, ids[j]]) for j in chosen)
            count += len(chosen)
    return total / count


def _reference_indices(p_pos, p_neg, m0):
    mass = p_pos + p_neg
    keep = np.minimum(1.0, mass / m0)
    return {
        "balanced": float(np.mean((1 - np.abs(p_pos - p_neg) / mass) * keep)),
        "female": float(np.mean(p_pos / mass * keep)),
        "male": float(np.mean(p_neg / mass * keep)),
    }


@pytest.mark.parametrize("tiny", ["llama", "bert"], indirect=True)
def test_a_point_matches_a_deep_copy_reference(tiny, feature):
    kind, base, tokenizer, model = tiny
    h, alpha = 0.6, 0.05
    result = _search(model, base, tokenizer, feature, h_values=[h], alphas=[alpha], prune=False)
    point = result.points[0]
    assert len(result.examples) == 8 and sum(r["label"] == "female" for r in result.examples) == 4

    edited = copy.deepcopy(base).eval()
    with torch.no_grad():
        update = model.decode(h)
        params = dict(edited.named_parameters())
        for name in model.config.param_names:
            params[name].add_(alpha * update[name])
        probabilities = {}
        for label, lm in (("base", base.eval()), ("edited", edited)):
            pairs = np.array([_slot_probabilities(lm, tokenizer, kind, r) for r in result.examples])
            is_female = np.array([r["label"] == "female" for r in result.examples])
            p_pos = np.where(is_female, pairs[:, 0], pairs[:, 1])
            p_neg = np.where(is_female, pairs[:, 1], pairs[:, 0])
            probabilities[label] = (p_pos, p_neg, pairs[:, 0] - pairs[:, 1])
        ll_base = _mean_log_likelihood(base, tokenizer, kind, NEUTRAL)
        ll_edited = _mean_log_likelihood(edited, tokenizer, kind, NEUTRAL)

    base_pos, base_neg, _ = probabilities["base"]
    p_pos, p_neg, diff = probabilities["edited"]
    expected_base = _reference_indices(base_pos, base_neg, base_pos + base_neg)
    expected = _reference_indices(p_pos, p_neg, base_pos + base_neg)
    assert expected != pytest.approx(expected_base, abs=1e-4)  # the edit matters
    for criterion in result.criteria:
        assert result.base.indices[criterion] == pytest.approx(expected_base[criterion], abs=1e-5)
        assert point.indices[criterion] == pytest.approx(expected[criterion], abs=1e-5)
    assert point.bias == pytest.approx(float(diff.mean()), abs=1e-6)
    assert point.mean_p["female"]["female"] == pytest.approx(float(p_pos[:4].mean()), abs=1e-6)
    assert point.mean_p["male"]["female"] == pytest.approx(float(p_pos[4:].mean()), abs=1e-6)
    assert point.pair_mass == pytest.approx(float((p_pos + p_neg).mean()), abs=1e-6)
    assert result.base.lm_mean_log_likelihood == pytest.approx(ll_base, abs=1e-4)
    assert point.lm_mean_log_likelihood == pytest.approx(ll_edited, abs=1e-4)
    assert point.lm_factor == pytest.approx(min(1.0, math.exp(ll_edited - ll_base)), abs=1e-5)
    assert point.lm_perplexity == pytest.approx(math.exp(-ll_edited), rel=1e-4)
    for criterion in result.criteria:
        assert point.score(criterion) == pytest.approx(expected[criterion] * point.lm_factor, abs=1e-5)


def test_alpha_zero_is_the_base(tiny, feature):
    _kind, base, tokenizer, model = tiny
    result = _search(model, base, tokenizer, feature, h_values=[0.0, 1.0], alphas=[0.0], prune=False)
    assert result.base.lm_factor == 1.0 and result.base.mass_kept == 1.0
    for point in result.points:
        assert point.indices == result.base.indices
        assert point.lm_factor == 1.0 and point.bias == result.base.bias
        # ties go to the base model
    assert all(result.best(c).is_base for c in result.criteria)


# -- pruning ----------------------------------------------------------------------------------------------------------
def _counting(monkeypatch):
    """Count how often the feature texts are scored (once per point that is scored at all, and once for the base)."""
    calls = []
    original = FeatureScorer.masses
    monkeypatch.setattr(FeatureScorer, "masses", lambda self: calls.append(1) or original(self))
    return calls


def test_points_between_two_broken_points_are_not_scored(llama, bpe, feature, monkeypatch):
    # A random tiny LM predicts almost uniformly and hardly gets worse (its LM factor saturates near 0.98), so
    # "broken" is set at a threshold it does cross: the mechanics are the same as at the default 0.5.
    model = _gradiend(llama, feature, "llama", scale=3000.0)
    alphas = [0.0001, 0.001, 0.01, 0.1, 0.5]
    calls = _counting(monkeypatch)
    result = _search(model, llama, bpe, feature, h_values=[1.0], alphas=alphas, min_gain=None, stop_below=0.99)
    by_alpha = {p.alpha: p for p in result.points}
    # 0.5 first, then the middle of [base, 0.5] (0.001), then of [0.001, 0.5] (0.01): broken like 0.5, so 0.1
    # between them is not scored
    assert by_alpha[0.01].lm_factor < 0.99 and by_alpha[0.5].lm_factor < 0.99
    skipped = by_alpha[0.1]
    assert skipped.indices is None and skipped.lm_factor is None and skipped.seconds == 0.0
    assert skipped.pruned.startswith("pruned: between two broken points (alpha=0.01 and 0.5")
    assert skipped.score("balanced") is None
    scored = [p for p in result.points if p.indices is not None]
    assert len(scored) == 4 and all(p.lm_factor is not None and p.pruned is None for p in scored)
    assert len(calls) == 1 + len(scored)

    calls.clear()
    full = _search(model, llama, bpe, feature, h_values=[1.0], alphas=alphas, prune=False, stop_below=0.99)
    assert all(p.lm_factor is not None and p.pruned is None for p in full.points)
    assert len(calls) == 1 + len(alphas)
    assert full.points[3].lm_factor < 0.99  # the skipped point was indeed broken too
    assert full.points[2].indices == pytest.approx(by_alpha[0.01].indices)


def test_points_where_the_indices_change_linearly_are_not_scored(llama, bpe, feature, monkeypatch):
    model = _gradiend(llama, feature, "llama")
    alphas = [0.0001, 0.0002, 0.0005, 0.001, 0.002]
    calls = _counting(monkeypatch)
    result = _search(model, llama, bpe, feature, h_values=[1.0], alphas=alphas)
    # the largest |α| first, then the middle of [base, 0.002] (0.0002); the base, 0.0002 and 0.002 are collinear,
    # so nothing else needs scoring
    scored = {p.alpha for p in result.points if p.indices is not None}
    assert scored == {0.0002, 0.002} and len(calls) == 3
    for point in result.points:
        if point.alpha not in scored:
            assert point.indices is None and point.pruned.startswith("pruned: every index changes linearly")
    # what the rule assumed holds: fully scored, the points between lie on the line through the base and the ends
    high = result.points[-1]
    full = _search(model, llama, bpe, feature, h_values=[1.0], alphas=alphas, prune=False)
    for point in full.points[:-1]:
        for c in full.criteria:
            change = high.indices[c] - full.base.indices[c]
            expected = full.base.indices[c] + change * point.alpha / high.alpha
            assert point.indices[c] == pytest.approx(expected, abs=0.1 * abs(change) + 1e-6)
            assert point.score(c) <= result.best(c).score(c) + 1e-3


def test_lm_factor_is_skipped_for_points_that_cannot_win(tiny, feature):
    _kind, base, tokenizer, model = tiny
    result = _search(model, base, tokenizer, feature, min_gain=1.0)  # nothing can beat the best by more than 1
    assert all(p.indices is not None and p.lm_factor is None for p in result.points)
    assert all(p.pruned.startswith("LM not scored") for p in result.points)
    assert all(result.best(c).is_base for c in result.criteria)
    assert result.settings["points_with_lm"] == 0 and result.settings["points_scored"] == 4


# -- the result -------------------------------------------------------------------------------------------------------
def _point(h, alpha, balanced, female, male, lm):
    return SearchPoint(h=h, alpha=alpha, indices={"balanced": balanced, "female": female, "male": male},
                       lm_factor=lm)


def test_best_picks_the_highest_index_times_lm():
    base = SearchPoint(h=0.0, alpha=0.0, indices={"balanced": 0.2, "female": 0.5, "male": 0.5}, lm_factor=1.0,
                       is_base=True)
    points = [
        _point(-1.0, 0.01, 0.9, 0.5, 0.5, 0.5),   # balanced 0.45
        _point(-1.0, 0.1, 0.8, 0.4, 0.6, 0.9),    # balanced 0.72, male 0.54
        _point(1.0, 0.01, 0.99, 0.9, 0.1, None),  # LM not scored: never best
        _point(1.0, 0.1, 0.3, 0.9, 0.1, 0.8),     # female 0.72
    ]
    result = DecoderSearchResult(feature="gender", classes=("female", "male"), base=base, points=points)
    assert (result.best("balanced").h, result.best("balanced").alpha) == (-1.0, 0.1)
    assert (result.best("female").h, result.best("female").alpha) == (1.0, 0.1)
    assert result.best("male").alpha == 0.1 and result.best("male").score("male") == pytest.approx(0.54)
    assert result.best().score("balanced") == pytest.approx(0.72)
    with pytest.raises(SearchError, match=r"Unknown criterion 'other'; expected one of \['balanced', 'female'"):
        result.best("other")


def test_json_csv_round_trip_and_files(tiny, feature, tmp_path):
    _kind, base, tokenizer, model = tiny
    result = _search(model, base, tokenizer, feature, alphas=[-0.05, 0.0, 0.05])
    paths = result.save(tmp_path / "search")
    assert {p.name for p in (tmp_path / "search").iterdir()} == {"search.json", "search.csv", "search_heatmap.png"}
    assert paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    loaded = DecoderSearchResult.from_json(paths["json"])
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict()))
    for criterion in result.criteria:
        assert loaded.best(criterion) == result.best(criterion)
    assert loaded.formulas["indices"]["balanced_index"] == FEATURE_FORMULAS["balanced_index"]

    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    expected = result.rows()
    assert len(rows) == 1 + len(result.points) and rows[0]["row"] == "base"
    for row, want in zip(rows, expected):
        for key, value in want.items():
            if isinstance(value, float):
                assert float(row[key]) == value, key
            elif value is None:
                assert row[key] == "", key
            else:
                assert row[key] == str(value), key

    with pytest.raises(SearchError, match="Not a decoder-search result"):
        DecoderSearchResult.from_dict({"format": "other"})


def test_evaluate_point_scores_the_test_split(tiny, feature):
    _kind, base, tokenizer, model = tiny
    result = evaluate_point(model, base, tokenizer, feature, -1.0, 0.05, on="feature", max_texts=8,
                            neutral_texts=NEUTRAL)
    test_texts = {e.text for e in feature.test}
    assert result.settings["split"] == "test" and {r["text"] for r in result.examples} <= test_texts
    assert len(result.points) == 1 and result.points[0].lm_factor is not None


# -- validation -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"h_values": []}, "`h_values` is empty"),
    ({"alphas": [0.1, 0.1]}, "lists 0.1 more than once"),
    ({"alphas": [float("nan")]}, "finite numbers"),
    ({"h_values": ["one"]}, "must hold numbers, found 'one'"),
    ({"h_values": 1.0}, "must be a sequence of numbers"),
    ({"alphas": [True]}, "found the bool"),
    ({"split": "dev"}, "Unknown split 'dev'"),
    ({"max_texts": 1}, "`max_texts` must be an int of at least 2"),
    ({"max_neutral": 0}, "`max_neutral` must be an int of at least 1"),
    ({"neutral_texts": []}, "`neutral_texts` must be a non-empty list"),
    ({"stop_below": 2.0}, r"`stop_below` must lie in \[0, 1\]"),
    ({"min_gain": -0.1}, "`min_gain` must be a non-negative number or None"),
])
def test_bad_options_raise_clear_errors(llama, bpe, feature, options, message):
    model = _gradiend(llama, feature, "llama")
    with pytest.raises(SearchError, match=message):
        _search(model, llama, bpe, feature, **options)


def test_a_feature_with_other_classes_is_refused(llama, bpe, feature):
    model = _gradiend(llama, feature, "llama")
    records = [{**r, "label": {"female": "a", "male": "b"}[r["label"]]} for r in feature.to_records()]
    other = FeatureDataset.from_records(records, name="other", classes=("a", "b"))
    with pytest.raises(SearchError, match=r"has classes \['a', 'b'\], but the GRADIEND model was trained for"):
        _search(model, llama, bpe, other)


# -- command line -----------------------------------------------------------------------------------------------------
def test_cli_search_end_to_end(tmp_path, llama, bpe, feature, capsys):
    folder, data, run = tmp_path / "tiny-llama", tmp_path / "gender.jsonl", tmp_path / "run"
    llama.save_pretrained(folder)
    bpe.save_pretrained(folder)
    feature.save_jsonl(data)
    assert main(["train", "--model", str(folder), "--feature", str(data), "--out", str(run), "--params",
                 "model.layers.*.mlp.down_proj.weight", "--steps", "4", "--eval-steps", "2", "--batch-size", "4",
                 "--lr", "1e-3", "--test-examples", "0", "--quiet"]) == 0
    capsys.readouterr()
    before = (run / "model.safetensors").read_bytes()

    assert main(["search", str(run), "--feature", str(data), "--on", "feature", "--h", "-1", "0", "1", "--alpha", "±0.5", "0.01",
                 "--max-texts", "8", "--max-neutral", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert {"search.json", "search.csv", "search_heatmap.png"} <= {p.name for p in (run / "search").iterdir()}
    result = DecoderSearchResult.from_json(run / "search" / "search.json")
    assert len(result.points) == 9 and result.settings["h_values"] == [-1.0, 0.0, 1.0]
    assert result.settings["alphas"] == [-0.5, 0.01, 0.5]
    assert "Decoder search of" in out and "balanced" in out and "female" in out and "male" in out
    assert ("Test split" in out) != result.best("balanced").is_base
    assert (run / "model.safetensors").read_bytes() == before

    assert main(["search", str(run), "--feature", str(data), "--alpha", "abc", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --alpha takes numbers") and err.count("\n") == 1

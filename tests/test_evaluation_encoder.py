"""Encoder evaluation: metrics by hand, control slots, batched encoding vs one backward per text, report files."""

import json
import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_gender_feature

from gradiend_hf import EncoderReport, GradiendModel, GradientEngine, evaluate_encoder
from gradiend_hf.errors import FeatureDataError, TargetTokenizationError
from gradiend_hf.evaluation import (
    encode_texts,
    encoder_metrics,
    neutral_examples,
    non_feature_slot_examples,
    plot_h_distribution,
)
from gradiend_hf.evaluation.controls import NEUTRAL, NON_FEATURE_SLOT
from gradiend_hf.features import SLOT, FeatureDataset, FeatureExample, neutral_texts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENDER_WORDS = {"she", "he"}


# -- metrics against numpy ----------------------------------------------------------------------------------------
def test_metrics_match_hand_computation():
    h = {
        "female": [0.9, 0.5, -0.1],
        "male": [-0.8, -0.6, 0.2, -0.4],
        NEUTRAL: [0.1, -0.1, 0.0, 0.3],
        NON_FEATURE_SLOT: [0.05, 0.45],
    }
    m = encoder_metrics(h, positive_class="female", negative_class="male")
    label = {"female": 1.0, "male": -1.0, NEUTRAL: 0.0, NON_FEATURE_SLOT: 0.0}
    xs = np.array([v for g in h for v in h[g]])
    ys = np.array([label[g] for g in h for _ in h[g]])
    assert m.pearson_r == pytest.approx(np.corrcoef(xs, ys)[0, 1], abs=1e-12)
    classes = np.isin(np.array([g for g in h for _ in h[g]]), ["female", "male"])
    assert m.pearson_r_classes == pytest.approx(np.corrcoef(xs[classes], ys[classes])[0, 1], abs=1e-12)
    assert m.sign_accuracy == pytest.approx(5 / 7)  # -0.1 (female) and 0.2 (male) are on the wrong side
    for g, values in h.items():
        stats = m.groups[g]
        assert stats.count == len(values)
        assert stats.mean == pytest.approx(np.mean(values))
        assert stats.std == pytest.approx(np.std(values))  # population std
        assert stats.median == pytest.approx(np.median(values))
        assert (stats.min, stats.max) == (min(values), max(values))
    m_pos, m_neg = np.mean(h["female"]), np.mean(h["male"])  # 0.4333, -0.4
    for g in (NEUTRAL, NON_FEATURE_SLOT):
        p = m.positions[g]
        m_g = np.mean(h[g])
        assert p.distance_to_positive == pytest.approx(abs(m_g - m_pos))
        assert p.distance_to_negative == pytest.approx(abs(m_g - m_neg))
        assert p.normalised_position == pytest.approx((m_g - m_neg) / (m_pos - m_neg))
    # neutral mean 0.075 sits a little past midway: (0.075 + 0.4) / (0.4333 + 0.4) = 0.57
    assert m.positions[NEUTRAL].normalised_position == pytest.approx(0.57, abs=1e-9)
    assert set(m.positions) == {NEUTRAL, NON_FEATURE_SLOT}


def test_metrics_edge_cases():
    perfect = encoder_metrics({"a": [1.0, 1.0], "b": [-1.0, -1.0], NEUTRAL: [0.0]}, positive_class="a",
                              negative_class="b")
    assert perfect.pearson_r == pytest.approx(1.0) and perfect.pearson_r_classes == pytest.approx(1.0)
    assert perfect.sign_accuracy == 1.0 and perfect.positions[NEUTRAL].normalised_position == pytest.approx(0.5)
    blind = encoder_metrics({"a": [0.2, 0.2], "b": [0.2], NEUTRAL: []}, positive_class="a", negative_class="b")
    assert blind.pearson_r == pytest.approx(0.0, abs=1e-12) and blind.sign_accuracy == pytest.approx(2 / 3)  # h = 0.2 > 0 everywhere
    assert blind.groups[NEUTRAL].count == 0 and math.isnan(blind.groups[NEUTRAL].mean)
    assert math.isnan(blind.positions[NEUTRAL].normalised_position)
    zero = encoder_metrics({"a": [0.0], "b": [0.0]}, positive_class="a", negative_class="b")
    assert zero.sign_accuracy == 0.0  # h = 0 is on neither side
    with pytest.raises(FeatureDataError, match="no group for class 'b'"):
        encoder_metrics({"a": [0.1]}, positive_class="a", negative_class="b")


# -- control slots -------------------------------------------------------------------------------------------------
def _words_before(example: FeatureExample) -> int:
    return len(example.prefix.split())


def test_neutral_examples_slot_on_a_true_ordinary_word():
    texts = neutral_texts(300)
    examples, skipped = neutral_examples(texts, feature_words=GENDER_WORDS, limit=50, seed=3)
    assert len(examples) == 50 and skipped >= 0
    factuals = [e.factual for e in examples]
    for e in examples:
        assert e.text.count(SLOT) == 1 and e.label == NEUTRAL
        assert e.filled(e.factual) == e.meta["source_text"]  # the factual is the word really there
        assert e.factual.isalpha() and e.factual.islower() and e.factual not in GENDER_WORDS
        assert _words_before(e) >= 4
        assert not ({w.strip(".,;:!?\"'()").lower() for w in e.meta["source_text"].split()} & GENDER_WORDS)
        assert e.counterfactual != e.factual and e.counterfactual in factuals  # another text's slot word
    # the counterfactual rule: the next example's word that differs (wrapping around)
    for i, e in enumerate(examples):
        following = [examples[(i + k) % len(examples)].factual for k in range(1, len(examples))]
        assert e.counterfactual == next(w for w in following if w != e.factual)
    again, _ = neutral_examples(texts, feature_words=GENDER_WORDS, limit=50, seed=3)
    assert [(e.text, e.factual, e.counterfactual) for e in again] == [(e.text, e.factual, e.counterfactual)
                                                                      for e in examples]
    other, _ = neutral_examples(texts, feature_words=GENDER_WORDS, limit=50, seed=4)
    assert [e.text for e in other] != [e.text for e in examples]


def test_neutral_examples_skip_feature_words_and_unusable_texts():
    texts = [
        "The old bridge over the river was rebuilt in stone after the flood.",
        "After the war she moved to the coast with her family.",  # a feature word
        "Too short here.",  # no word with four words before it
        "A text that already has a [MASK] in the middle of it.",
        "The committee met twice in the spring to discuss the budget.",
    ]
    examples, skipped = neutral_examples(texts, feature_words=["She"], seed=0)
    assert {e.meta["source_text"] for e in examples} == {texts[0], texts[4]} and skipped == 3
    only_the, _ = neutral_examples(texts, feature_words=["she"], seed=0,
                                   accept=lambda prefix, word: word in ("the", "to"))
    assert {e.factual for e in only_the} <= {"the", "to"}
    # a text's slot does not depend on which other texts are sampled with it
    alone, _ = neutral_examples([texts[0], texts[4]], feature_words=["she"], seed=0)
    with_others, _ = neutral_examples(texts, feature_words=["she"], seed=0)
    assert {e.text for e in alone} == {e.text for e in with_others}


def test_non_feature_slot_examples_move_the_slot_off_the_feature_word():
    feature = tiny_gender_feature()
    examples, skipped = non_feature_slot_examples(feature.test, feature_words=GENDER_WORDS, seed=0)
    assert len(examples) + skipped == len(feature.test) and skipped == 0
    for source, e in zip(feature.test, examples):
        assert e.label == NON_FEATURE_SLOT and e.meta["class"] == source.label
        assert e.meta["source_text"] == source.text
        assert e.filled(e.factual) == source.filled(source.factual)  # the class word stays filled in
        assert e.factual not in GENDER_WORDS and _words_before(e) >= 4
        words = [w.strip(".,") for w in e.text.split()]
        assert source.factual in words  # the class word is in the text, outside the slot
    again, _ = non_feature_slot_examples(feature.test, feature_words=GENDER_WORDS, seed=0)
    assert [e.text for e in again] == [e.text for e in examples]


# -- batched encoding equals one backward pass per text ----------------------------------------------------------
def _amplified_model(base, feature, params, source):
    model = GradiendModel.for_base_model(base, params=params, feature=feature, source=source, seed=0)
    with torch.no_grad():  # spread h over tanh's range, so the comparison is not of numbers near 0
        for weight in model.encoder.weights:
            weight.mul_(3e3)
    return model


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_every_group_equals_encoding_each_gradient(kind, llama, bpe, bert, wordpiece):
    base, tokenizer = (llama, bpe) if kind == "llama" else (bert, wordpiece)
    params = ["model.layers.*.mlp.*"] if kind == "llama" else ["bert.encoder.layer.*.output.dense.weight"]
    source = "factual" if kind == "llama" else "diff"  # diff also exercises the counterfactual targets
    feature = tiny_gender_feature()
    model = _amplified_model(base, feature, params, source)
    report = evaluate_encoder(model, base, tokenizer, feature, max_per_group=6, batch_size=4,
                              neutral_texts=neutral_texts(200), max_length=100, progress=False)
    assert list(report.h) == ["female", "male", NEUTRAL, NON_FEATURE_SLOT]
    assert report.info["lm_kind"] == ("causal" if kind == "llama" else "masked")
    engine = GradientEngine(base, tokenizer, model.config.param_names, max_length=100)
    spread = []
    for group, examples in report.examples.items():
        assert len(examples) == len(report.h[group]) > 0, group
        slow = torch.stack([model.encode(engine.gradients([e], source=source).source)[0] for e in examples])
        torch.testing.assert_close(torch.tensor(report.h[group]), slow.detach().float(), rtol=1e-4, atol=1e-5)
        spread.extend(report.h[group])
    assert np.std(spread) > 0.05  # the amplified encoder gives h far from 0, so the check has teeth
    assert report.metrics.groups["female"].count == len(report.examples["female"])


def test_multi_token_targets_are_dropped_and_counted(llama, bpe):
    feature = tiny_gender_feature()
    extra = FeatureExample("Lucy smiled because [MASK] knew the answer.", "xylophonist", "he", "female")
    feature = FeatureDataset(feature.name, feature.classes, feature.train, feature.validation,
                             [*feature.test, extra])
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=feature, seed=0)
    report = evaluate_encoder(model, llama, bpe, feature, max_per_group=None, neutral_texts=neutral_texts(40),
                              progress=False)
    assert report.dropped["female"] == 1 and report.dropped["male"] == 0
    assert len(report.examples["female"]) == sum(e.label == "female" for e in feature.test) - 1
    assert all(e.factual != "xylophonist" for e in report.examples["female"])


def test_wrong_feature_is_refused(llama, bpe):
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=feature, seed=0)
    other = FeatureDataset.from_records(
        [{"text": f"{n} went to the [MASK] today.", "factual": w, "counterfactual": v, "label": c, "split": s}
         for n, (w, v, c) in zip("ABCD", [("church", "mosque", "christian"), ("mosque", "church", "muslim")] * 2)
         for s in ("train", "test")],
        name="religion", classes=("christian", "muslim"))
    with pytest.raises(FeatureDataError, match="trained on"):
        evaluate_encoder(model, llama, bpe, other, progress=False)


# -- report files --------------------------------------------------------------------------------------------------
def test_report_saves_png_and_json_that_round_trip(llama, bpe, tmp_path):
    feature = tiny_gender_feature()
    model = _amplified_model(llama, feature, ["model.layers.*.mlp.*"], "factual")
    report = evaluate_encoder(model, llama, bpe, feature, max_per_group=5, neutral_texts=neutral_texts(60),
                              progress=False)
    paths = report.save(tmp_path / "eval")
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {"encoder_report.json", "encoder_h_distribution.png"}
    png = tmp_path / "eval" / "encoder_h_distribution.png"
    assert png in paths and png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    data = json.loads((tmp_path / "eval" / "encoder_report.json").read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["groups"]["female"]["h"] == report.h["female"] and data["groups"][NEUTRAL]["label"] == 0.0
    assert data["metrics"]["pearson_r"] == pytest.approx(report.metrics.pearson_r)
    loaded = EncoderReport.load(tmp_path / "eval")
    assert loaded.to_dict() == report.to_dict()
    assert loaded.metrics == report.metrics and loaded.examples == report.examples
    assert "Pearson r" in report.summary() and NON_FEATURE_SLOT in report.summary()


def test_plot_from_plain_groups_with_empty_and_constant_groups(tmp_path):
    png = plot_h_distribution({"a": [0.5, 0.7, 0.9], "b": [-0.2], "c": [], "d": [0.1, 0.1]}, tmp_path / "h.png",
                              title="toy")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_json_has_no_nan(tmp_path, llama, bpe):
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=feature, seed=0)
    report = evaluate_encoder(model, llama, bpe, feature, max_per_group=3, neutral_texts=[], progress=False)
    assert report.h[NEUTRAL] == [] and any("'neutral' group is empty" in n for n in report.notes)
    text = json.dumps(report.to_dict(), allow_nan=False)  # raises on NaN
    assert json.loads(text)["metrics"]["groups"][NEUTRAL]["mean"] is None


# -- the probe ---------------------------------------------------------------------------------------------------
def test_encode_texts_picks_the_likeliest_feature_word(llama, bpe):
    feature = tiny_gender_feature()
    model = _amplified_model(llama, feature, ["model.layers.*.mlp.*"], "factual")
    texts = ["Mary said that [MASK] would come home.", "John explained the vision as best [MASK] could."]
    rows = encode_texts(model, llama, bpe, texts)
    engine = GradientEngine(llama, bpe, model.config.param_names)
    for text, row in zip(texts, rows):
        logp = {}
        for word in ("she", "he"):
            batch = engine.tokenize([FeatureExample(text, word, "she" if word == "he" else "he", "x")])
            with torch.no_grad():
                logp[word] = -float(engine.per_example_losses(batch, "factual")[0])
        best = max(logp, key=logp.get)
        assert row.chosen == "most likely" and row.target == best
        assert row.counterfactual == ({"she", "he"} - {best}).pop()
        assert row.target_probability == pytest.approx(math.exp(logp[best]), rel=1e-5)
        expected = model.encode(engine.gradients([FeatureExample(text, row.target, row.counterfactual, "x")]).source)
        assert row.h[0] == pytest.approx(float(expected[0].detach()), rel=1e-4, abs=1e-6)
    given = encode_texts(model, llama, bpe, texts[:1], target="the")  # no feature word: cf = positive's first
    assert given[0].chosen == "given" and given[0].target == "the" and given[0].counterfactual == "she"


def test_encode_texts_rejects_bad_texts(llama, bpe):
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=tiny_gender_feature())
    with pytest.raises(FeatureDataError, match="exactly once"):
        encode_texts(model, llama, bpe, ["no slot here"])
    with pytest.raises(FeatureDataError, match="wrap it in a list"):
        encode_texts(model, llama, bpe, "Mary said [MASK] came.")
    with pytest.raises(TargetTokenizationError, match="not exactly one token"):
        encode_texts(model, llama, bpe, ["Mary said that [MASK] would come."], target="xylophonist")

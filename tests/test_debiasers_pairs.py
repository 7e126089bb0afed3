"""Counterfactual pairs from feature data, pooled states, and the errors for too little or multi-token data."""

import pytest
import torch

from gradiend_hf.debiasers import counterfactual_pairs, fit_data, fit_inlp, pooled_states
from gradiend_hf.errors import FeatureDataError, TargetTokenizationError
from gradiend_hf.features import FeatureDataset
from tiny_models import tiny_gender_feature


def _feature(words=("she", "he"), per_class=6):
    records = []
    for label, (word, other) in (("female", words), ("male", words[::-1])):
        for i in range(per_class):
            records.append({"text": f"Person {i} said that [MASK] would come.", "factual": word,
                            "counterfactual": other, "label": label, "split": "train" if i else "test"})
    return FeatureDataset.from_records(records, name="toy", classes=("female", "male"))


def test_pairs_are_ordered_by_class_and_deduplicated(bpe):
    pairs = counterfactual_pairs(tiny_gender_feature(), bpe)
    assert len(pairs) == 40 and pairs.classes == ("female", "male") and pairs.dropped == 0
    first, second = pairs.texts[0]
    assert " she " in first and " he " in second and first.replace(" she ", " he ") == second
    same_context = counterfactual_pairs(_feature(per_class=6), bpe, min_pairs=1)
    assert len(same_context) == 5  # the female and the male example of a context give the same pair once


def test_too_few_pairs_and_multi_token_words_are_one_line_errors(bpe):
    with pytest.raises(FeatureDataError) as error:
        counterfactual_pairs(_feature(), bpe)
    assert "at least 8 counterfactual pairs" in str(error.value) and "found 5" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(TargetTokenizationError, match="single-token"):
        counterfactual_pairs(_feature(words=("zqxvkjw", "wkjvxqz"), per_class=12), bpe)


def test_nothing_is_written_when_the_data_is_refused(llama, bpe, tmp_path):
    with pytest.raises(FeatureDataError):
        fit_inlp(llama, bpe, _feature())
    assert not list(tmp_path.iterdir())


def test_pooled_states_are_masked_means_of_the_body_output(llama, bpe):
    texts = ["Mary said that she would come.", "John ran."]
    states = pooled_states(llama, bpe, texts, batch_size=2)
    for row, text in enumerate(texts):
        with torch.no_grad():
            hidden = llama.model(**bpe(text, return_tensors="pt")).last_hidden_state[0]
        torch.testing.assert_close(states[row], hidden.mean(0), rtol=1e-5, atol=1e-5)
    data = fit_data(llama, bpe, tiny_gender_feature(), neutral=5, max_pairs=10)
    x, y = data.classified(with_neutral=True)
    assert x.shape == (25, 32) and y.tolist() == [0] * 10 + [1] * 10 + [2] * 5

"""Two-sided counterfactual swapping for CDA on hand-written sentences."""

import pytest

from gradiend_hf.debiasers import GENDER_WORD_PAIRS, swap_words, two_sided, word_pairs_for
from gradiend_hf.errors import FeatureDataError


@pytest.mark.parametrize("text,swapped", [
    ("She told him that his book was hers.", "He told her that her book was his."),
    ("HE gave her own Bible to her.", "SHE gave his own Bible to him."),
    ("Mr. Smith and his wife met the Queen.", "Mrs. Smith and her husband met the King."),
    ("The actress thanked her brother, then her.", "The actor thanked his sister, then him."),
    ("My father's sons and my mother's daughters", "My mother's daughters and my father's sons"),
    ("Herbert sheltered the shepherd in the manor.", "Herbert sheltered the shepherd in the manor."),
])
def test_gender_swaps_on_hand_written_sentences(text, swapped):
    assert swap_words(text) == swapped


def test_two_sided_keeps_both_and_swaps_back():
    texts = ["She said he was late.", "The weather was mild."]
    assert two_sided(texts, GENDER_WORD_PAIRS) == ["She said he was late.", "He said she was late.",
                                                   "The weather was mild."]
    assert swap_words(swap_words("The king and his men.")) == "The king and his men."


def test_race_and_religion_use_the_feature_word_lists():
    race = word_pairs_for("race", ("white", "black"))
    assert swap_words("The black man went to Africa.", race) == "The white man went to Europe."
    religion = word_pairs_for("religion", ("christian", "muslim"))
    assert swap_words("A Muslim prayed in the mosque.", religion) == "A Christian prayed in the church."
    with pytest.raises(FeatureDataError, match="word_pairs"):
        word_pairs_for("age", ("young", "old"))

"""Feature data for GRADIEND: examples with one target slot, built-in gender/race/religion, and mining."""

from gradiend_hf.features.builtin import (
    GENDER_PRONOUNS,
    RACE_WORDS,
    RELIGION_WORDS,
    from_corpus,
    gender,
    load_feature,
    neutral_texts,
    race,
    religion,
)
from gradiend_hf.features.dataset import SLOT, SPLITS, FeatureDataset, FeatureExample
from gradiend_hf.features.mining import (
    Template,
    WordSlot,
    apply_case,
    case_of,
    clean_gutenberg,
    clean_wikitext,
    find_word_slots,
    match_case,
    mine_name_templates,
    mine_word_slots,
    split_sentences,
)

__all__ = [
    "GENDER_PRONOUNS",
    "RACE_WORDS",
    "RELIGION_WORDS",
    "SLOT",
    "SPLITS",
    "FeatureDataset",
    "FeatureExample",
    "Template",
    "WordSlot",
    "apply_case",
    "case_of",
    "clean_gutenberg",
    "clean_wikitext",
    "find_word_slots",
    "from_corpus",
    "gender",
    "load_feature",
    "match_case",
    "mine_name_templates",
    "mine_word_slots",
    "neutral_texts",
    "race",
    "religion",
    "split_sentences",
]

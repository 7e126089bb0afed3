"""Tests for gradiend_hf.features.mining: cleaning, sentence splitting, name templates and word slots."""

from __future__ import annotations

import pytest

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.dataset import SLOT
from gradiend_hf.features.mining import (
    Template,
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

NAMES = {"Mary": "female", "Anne": "female", "John": "male", "Tom": "male"}
PRONOUNS = {"female": "she", "male": "he"}


def _mine(*sentences: str, **options) -> list[Template]:
    return mine_name_templates(list(sentences), NAMES, PRONOUNS, source="book.txt", **options)


# -------------------------------------------------------------------------------------------------- cleaning


def test_clean_gutenberg_cuts_boilerplate_and_normalises() -> None:
    raw = (
        "\ufeffThe Project Gutenberg EBook of Test\r\n\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK TEST ***\r\n\r\nCHAPTER I\r\n\r\n"
        "\u201cWell,\u201d said Mary, \u2018it\u2019s _very_ blue-\r\neyed and\r\nlong--\r\n"
        "indeed.\u2019\r\n\r\n\r\nSecond paragraph.\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK TEST ***\r\nLicence text.\r\n"
    )
    assert clean_gutenberg(raw) == (
        "CHAPTER I\n\n\"Well,\" said Mary, 'it's very blue-eyed and long-- indeed.'\n\nSecond paragraph."
    )


def test_clean_gutenberg_without_header_keeps_text_and_cuts_old_footer() -> None:
    raw = "First line\nwrapped.\n\nEnd of the Project Gutenberg EBook of Little Men, by L. M. Alcott\n\nMore"
    assert clean_gutenberg(raw) == "First line wrapped."


def test_clean_wikitext() -> None:
    raw = (
        " = Robert Boulter = \r\n"
        " He had a guest @-@ starring role in 2 @,@ 000 ( or so ) episodes , "
        'at 3 @.@ 5 % of " Teddy \'s Story " . '
        "It did n't end . \r\n"
    )
    assert clean_wikitext(raw) == (
        "He had a guest-starring role in 2,000 (or so) episodes, at 3.5% of \"Teddy's Story\". It didn't end."
    )


def test_split_sentences_protects_abbreviations_and_initials() -> None:
    text = (
        "Mr. Bhaer and Mrs. Jo met Dr. Bangs at St. Paul's. L. Frank Baum wrote it, e.g. here! "
        '"Go away!" said he. "Why?" She left... Then she came.\n\nA new paragraph'
    )
    assert split_sentences(text) == [
        "Mr. Bhaer and Mrs. Jo met Dr. Bangs at St. Paul's.",
        "L. Frank Baum wrote it, e.g. here!",
        '"Go away!" said he.',
        '"Why?"',
        "She left...",
        "Then she came.",
        "A new paragraph",
    ]


def test_case_helpers() -> None:
    assert [case_of(w) for w in ("she", "She", "SHE", "sHe", "I")] == [
        "lower",
        "title",
        "upper",
        None,
        "title",
    ]
    assert [match_case("mosque", w) for w in ("church", "Church", "CHURCH", "cHurch")] == [
        "mosque", "Mosque", "MOSQUE", "mosque"
    ]  # fmt: skip
    assert apply_case("she", "title") == "She"
    with pytest.raises(FeatureDataError, match="Unknown case 'camel'"):
        apply_case("she", "camel")  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- name templates


def test_mine_name_templates_keeps_a_clean_sentence() -> None:
    [template] = _mine("When the rain stopped, Mary said that she would walk home alone.")
    assert template == Template(
        "When the rain stopped, [NAME] said that [PRONOUN] would walk home alone.",
        "book.txt",
        "lower",
        "Mary",
        "female",
    )
    assert (
        template.fill("John", SLOT) == "When the rain stopped, John said that [MASK] would walk home alone."
    )


def test_mine_name_templates_keeps_pronoun_case() -> None:
    [template] = _mine("John stood up; He was tired of waiting for the train.")
    assert template.pronoun_case == "title" and template.label == "male"


@pytest.mark.parametrize(
    "sentence",
    [
        "Mary told John that she would walk home alone today.",  # two names
        "Mary said that she would walk home with him today.",  # another gendered pronoun
        "Mary said that she would walk her dog home today.",  # a pronoun of the same gender, not the slot
        "Mary said that she thought he would walk home today.",  # two nominative pronouns
        "Mary waited for a long while until he finally came home.",  # pronoun of the other gender
        "She waited for a long while until Mary finally came home.",  # pronoun before the name
        "Then Mr. John came in and said he would walk home.",  # a surname after a title
        'Mary said, "she will walk home alone" and left us.',  # quotation marks
        "Mary said 'she would walk home' and then left us.",  # single quotes
        "Her mother Mary said that she would walk home alone.",  # "her" anywhere
        "Mary said that she would",  # too short
        "Mary said that she would walk home alone, and then",  # no end punctuation
        "The mother of Mary said that she would walk home alone.",  # banned word before the pronoun
        "Mary [said] that she would walk home alone today.",  # brackets clash with the placeholders
    ],
)
def test_mine_name_templates_rejects(sentence: str) -> None:
    assert _mine(sentence, banned_words=["mother"]) == []


def test_mine_name_templates_banned_words_only_before_pronoun_and_contractions() -> None:
    banned = ["mother", "don"]
    kept = _mine(
        "Mary said that she would walk home to her mother.",  # "her" forbidden anyway
        "Mary said that she would walk home to the mother.",  # banned word after the pronoun: kept
        "Mary don't know why she would walk home alone.",  # "don't" is not the title "don"
        banned_words=banned,
    )
    assert [t.template for t in kept] == [
        "[NAME] said that [PRONOUN] would walk home to the mother.",
        "[NAME] don't know why [PRONOUN] would walk home alone.",
    ]


def test_mine_name_templates_word_limits_and_errors() -> None:
    sentence = "Mary said that she would walk home alone."
    assert _mine(sentence, max_words=7) == [] and len(_mine(sentence, max_words=8)) == 1
    with pytest.raises(FeatureDataError, match=r"class\(es\) \['other'\] without a pronoun"):
        mine_name_templates([sentence], {"Mary": "other"}, PRONOUNS)
    with pytest.raises(FeatureDataError, match="have the same pronoun"):
        mine_name_templates([sentence], NAMES, {"female": "she", "male": "She"})


# ------------------------------------------------------------------------------------------------ word slots

RELIGION = {"christian": ["christian", "christians", "church"], "muslim": ["muslim", "muslims", "mosque"]}


def test_mine_word_slots_copies_capitalisation() -> None:
    examples = mine_word_slots(
        [
            "On Sunday morning they all walked to the church together.",
            "On Sunday morning they all walked to the Church together.",
            "ON SUNDAY MORNING THEY ALL WALKED TO THE MOSQUE TOGETHER.",
            "Many of the villagers there were Muslims by birth.",
        ],
        RELIGION,
        source="corpus.txt",
    )
    assert [(e.factual, e.counterfactual, e.label) for e in examples] == [
        ("church", "mosque", "christian"),
        ("Church", "Mosque", "christian"),
        ("MOSQUE", "CHURCH", "muslim"),
        ("Muslims", "Christians", "muslim"),
    ]
    assert examples[0].text == "On Sunday morning they all walked to the [MASK] together."
    assert examples[0].meta == {"source": "corpus.txt"}


@pytest.mark.parametrize(
    "sentence",
    [
        "On Sunday the church stood beside the old mosque there.",  # two class words
        "The church bells rang on Sunday morning for everyone.",  # fewer than 4 words before the word
        "On Sunday morning they all walked to the church-yard together.",  # part of a compound
        "On Sunday morning they all walked to the churches together.",  # not a listed form
        "On Sunday morning they all walked to the cHurch together.",  # mixed case
        "On Sunday morning they all walked to the church together, and",  # incomplete
    ],
)
def test_mine_word_slots_rejects(sentence: str) -> None:
    assert mine_word_slots([sentence], RELIGION) == []


def test_find_word_slots_options_and_duplicates_within_a_class() -> None:
    words = {"white": ["white", "europe", "european"], "asian": ["asian", "asia", "asian"]}
    sentences = [
        "In those days the old white man lived alone.",
        "In those days the old white house stood alone.",
        "In those days the traders sailed from Asia again.",
        "In those days the Asian traders sailed home again.",
        "In those days the Asian traders sailed to Europe again.",
        "In those days the traders of Asia ate tofu again.",
    ]
    slots = find_word_slots(
        sentences,
        words,
        exclude_words=["tofu"],
        keep=lambda prefix, word, suffix: word.lower() != "white" or suffix.startswith(" man"),
    )
    assert [(s.word, s.label, s.index) for s in slots] == [
        ("white", "white", 0),
        ("Asia", "asian", 1),
        ("Asian", "asian", 0),
    ]
    examples = mine_word_slots(sentences[3:4], words)
    assert examples[0].counterfactual == "White"  # the first position of "asian"


@pytest.mark.parametrize(
    ("class_words", "message"),
    [
        ({"a": ["x", "y"], "b": ["z"]}, r"equal lengths .* found lengths \{'a': 2, 'b': 1\}"),
        ({"a": ["x"], "b": ["y"], "c": ["z"]}, "takes exactly two classes, found 3"),
        ({"a": ["x"], "b": ["X"]}, "listed for class 'a' .* and class 'b'"),
        ({"a": ["x y"], "b": ["z"]}, "must be one word of letters"),
        ({"a": "xy", "b": "zw"}, "must be a list of words"),
        ({"a": [], "b": []}, "lists are empty"),
    ],
)
def test_mine_word_slots_validates_word_lists(class_words: dict, message: str) -> None:
    with pytest.raises(FeatureDataError, match=message):
        mine_word_slots(["Some sentence of words with x in it."], class_words)


def test_mine_name_templates_filters_are_the_reason_for_rejection() -> None:
    # Each sentence is rejected above only because of the filter that is switched off here.
    assert len(_mine("Then Mr. John came in and said he would walk home.", titles=())) == 1
    assert len(_mine("The mother of Mary said that she would walk home alone.")) == 1
    assert len(_mine("Mary said that she would walk home with him today.", other_pronouns=())) == 1
    assert len(_mine("Mary said that she would", min_words=4)) == 0  # still no end punctuation
    assert len(_mine("Mary said that she would go.", min_words=4)) == 1

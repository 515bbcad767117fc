"""Per-source text cleaning for the ten BabyLM 2023 sources (Baby Llama, Section 3).

Each BabyLM file is named after its source (`aochildes.train`, `qed.dev`, ...); `clean_text(stem, text)` picks
the cleaner registered for that stem, or the generic one (with a warning) for an unknown stem. Cleaners are pure
`str -> str` functions so they can be tested on hand-written snippets of each source's known defects.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_SPACES = re.compile(r"[ \t\u00A0]+")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t\u00A0]+([.,;:!?])")
_BLANK_RUNS = re.compile(r"\n{3,}")
# Tokenized contractions as in CBT and the PTB-style corpora: "queen 's", "do n't", "I 'm".
_SPLIT_CONTRACTION = re.compile(r"(\w) (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)
_WIKI_HEADING = re.compile(r"^\s*(=\s+)+(.+?)(\s+=)+\s*$", re.MULTILINE)
_WIKITEXT_AT = re.compile(r" @([-,.])@ ")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_SUBTITLE_CREDIT = re.compile(
    r"^.*(subtitle|subs by|synced|sync by|ripped by|opensubtitles|addic7ed|www\.|http).*$\n?",
    re.IGNORECASE | re.MULTILINE,
)
_ILLUSTRATION = re.compile(r"^\s*\[(illustration|picture|figure)[^\]]*\]\s*$\n?", re.IGNORECASE | re.MULTILINE)
_SENTENCE_SPLIT = re.compile(r"([.!?]\s*)")


def clean_extra_spaces(text: str) -> str:
    """Collapse runs of spaces/tabs, drop the space before punctuation and at line ends, squeeze blank lines."""
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text)


def clean_generic(text: str) -> str:
    """Cleaning applied to every source, and alone to sources bbl does not know."""
    return clean_extra_spaces(text)


def clean_aochildes(text: str) -> str:
    """CHILDES transcripts: tokenized punctuation (`hey .` -> `hey.`)."""
    return clean_generic(text)


def clean_bnc_spoken(text: str) -> str:
    """BNC spoken: extra spaces and spaces before punctuation."""
    return clean_generic(text)


def clean_cbt(text: str) -> str:
    """Children's Book Test: PTB-tokenized contractions (`queen 's`, `do n't`) and backtick quotes."""
    text = text.replace("``", '"').replace("''", '"').replace("`", "'")
    text = _SPLIT_CONTRACTION.sub(r"\1\2", text)
    return clean_generic(text)


def clean_children_stories(text: str) -> str:
    """Children's stories: already clean prose; only whitespace is normalised."""
    return clean_generic(text)


def clean_gutenberg(text: str) -> str:
    """Project Gutenberg: drop `[Illustration: ...]` placeholder lines."""
    return clean_generic(_ILLUSTRATION.sub("", text))


def clean_open_subtitles(text: str) -> str:
    """OpenSubtitles: drop subtitle credit lines ("Subtitles by ...", "Synced by ...", web addresses)."""
    return clean_generic(_SUBTITLE_CREDIT.sub("", text))


def _fix_ocr_uppercase_line(line: str) -> str:
    """An all-caps caption line: OCR read `I` as `l`; restore `I` and use sentence case."""
    body = re.sub(r"\(.*?\)|[^A-Za-z]", "", line)
    if not body or sum(c.isupper() for c in body) / len(body) < 0.5:
        return line
    parts = _SENTENCE_SPLIT.split(line.replace("l", "I"))
    line = "".join(part.capitalize() for part in parts)
    # capitalize() lowers the pronoun too; restore the standalone "I" forms.
    return re.sub(r"\bi\b", "I", line)


def clean_qed(text: str) -> str:
    """QED (educational subtitles): HTML entities and tags, and OCR'd all-uppercase lines (`l` read for `I`)."""
    text = _HTML_TAG.sub("", html.unescape(text))
    text = "\n".join(_fix_ocr_uppercase_line(line) for line in text.split("\n"))
    return clean_generic(text)


def clean_simple_wikipedia(text: str) -> str:
    """Simple Wikipedia: `= = = Heading = = =` markup reduced to the heading text."""
    return clean_generic(_WIKI_HEADING.sub(r"\2", text))


def clean_switchboard(text: str) -> str:
    """Switchboard dialogue: whitespace only (speaker turns are already one per line)."""
    return clean_generic(text)


def clean_wikipedia(text: str) -> str:
    """Wikipedia (WikiText style): heading markup and ` @-@ ` / ` @,@ ` / ` @.@ ` number/hyphen escapes."""
    text = _WIKITEXT_AT.sub(r"\1", text)
    text = _SPLIT_CONTRACTION.sub(r"\1\2", text)
    return clean_generic(_WIKI_HEADING.sub(r"\2", text))


CLEANERS: dict[str, Callable[[str], str]] = {
    "aochildes": clean_aochildes,
    "bnc_spoken": clean_bnc_spoken,
    "cbt": clean_cbt,
    "children_stories": clean_children_stories,
    "gutenberg": clean_gutenberg,
    "open_subtitles": clean_open_subtitles,
    "qed": clean_qed,
    "simple_wikipedia": clean_simple_wikipedia,
    "switchboard": clean_switchboard,
    "wikipedia": clean_wikipedia,
}


SOURCE_ALIASES = {"childes": "aochildes", "simple_wiki": "simple_wikipedia"}
"""2024 source names -> the 2023 cleaner of the same corpus (the 2024 README renames them, the text is the same kind)."""


def cleaner_of(source: str) -> str | None:
    """The `CLEANERS` key for a source name (through `SOURCE_ALIASES`), or None (generic cleaning)."""
    name = SOURCE_ALIASES.get(source, source)
    return name if name in CLEANERS else None


def clean_source(source: str, text: str, *, where=None, warn=print) -> str:
    """`text` cleaned by the cleaner of BabyLM source `source` (a file stem such as ``"qed"``, or a 2024 alias);
    what `bbl prepare` runs on every source.

    A source without a cleaner of its own gets `clean_generic`, and `warn` gets one line naming it (`where`: the
    file it came from) and the known sources.
    """
    cleaner = cleaner_of(source)
    if cleaner is None:
        warn(f"warning: {where or source}: unknown BabyLM source {source!r}; generic cleaning only (known: "
             f"{', '.join([*CLEANERS, *SOURCE_ALIASES])})")
    return CLEANERS.get(cleaner, clean_generic)(text)

"""Each source's cleaner on hand-written snippets of its known defects, through `clean_source`: the function
`bbl prepare` runs on every source (2024 aliases included)."""

import pytest

from bbl.data.cleaning import CLEANERS, SOURCE_ALIASES, clean_source, cleaner_of

BABYLM_2023_SOURCES = {"aochildes", "bnc_spoken", "cbt", "children_stories", "gutenberg", "open_subtitles", "qed",
                       "simple_wikipedia", "switchboard", "wikipedia"}


def test_every_babylm_2023_source_has_a_cleaner():
    assert set(CLEANERS) == BABYLM_2023_SOURCES


@pytest.mark.parametrize("source, raw, expected", [
    ("aochildes", "what's the matter ?\nhey   .\n", "what's the matter?\nhey.\n"),
    ("bnc_spoken", "Well , I  don't know .\t\n", "Well, I don't know.\n"),
    ("cbt", "the queen 's head , she do n't know . ` Yes , ' said he", "the queen's head, she don't know. ' Yes, ' said he"),
    ("children_stories", "Once upon a time  there was a king .", "Once upon a time there was a king."),
    ("gutenberg", "He went home.\n[Illustration: The house]\nIt was late.", "He went home.\nIt was late."),
    ("open_subtitles", "Where are you?\nSubtitles by DramaFever\nHere.\nSynced and corrected by someone\n",
     "Where are you?\nHere.\n"),
    ("qed", "WELL, l THlNK SO. lT lS BlG.\nnormal line &amp; more", "Well, I think so. It is big.\nnormal line & more"),
    ("qed", "<i>Hello there</i>", "Hello there"),
    ("simple_wikipedia", "= = = History = = =\nParis is a city .", "History\nParis is a city."),
    ("switchboard", "I ,  I 'm serious .", "I, I 'm serious."),
    ("wikipedia", " = = Career = = \nHe scored 1 @,@ 000 runs in a well @-@ known match .",
     "Career\nHe scored 1,000 runs in a well-known match."),
])
def test_cleaner_fixes_known_defects(source, raw, expected):
    warnings = []
    assert clean_source(source, raw, warn=warnings.append) == expected
    assert warnings == []  # a known source is cleaned silently


@pytest.mark.parametrize("alias, corpus, expected", [
    ("childes", "aochildes", "= = = History = = =\nwhat 's the matter?\n"),  # CHILDES has no wiki headings to strip
    ("simple_wiki", "simple_wikipedia", "History\nwhat 's the matter?\n"),
])
def test_2024_source_names_get_the_cleaner_of_their_2023_corpus(alias, corpus, expected):
    raw = "= = = History = = =\nwhat 's the matter ?\n"
    assert cleaner_of(alias) == corpus
    assert clean_source(alias, raw, warn=pytest.fail) == expected


def test_the_2024_aliases_are_the_two_renamed_sources():
    assert SOURCE_ALIASES == {"childes": "aochildes", "simple_wiki": "simple_wikipedia"}


def test_unknown_source_gets_generic_cleaning_and_a_warning_naming_the_file():
    warnings = []
    assert clean_source("mystery", "a  b .", where="x/mystery.train", warn=warnings.append) == "a b."
    assert len(warnings) == 1 and "x/mystery.train" in warnings[0] and "mystery" in warnings[0]


def test_qed_leaves_mixed_case_lines_alone():
    assert clean_source("qed", "Hello World, lovely day.") == "Hello World, lovely day."

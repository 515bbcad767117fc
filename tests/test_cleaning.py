"""Each source's cleaner on hand-written snippets of its known defects."""

import warnings

import pytest

from bbl.cleaning import CLEANERS, clean_text

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
    assert clean_text(source, raw) == expected


def test_unknown_source_gets_generic_cleaning_and_a_warning_naming_the_file():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert clean_text("mystery", "a  b .", filename="x/mystery.train") == "a b."
    assert any("x/mystery.train" in str(w.message) for w in caught)


def test_qed_leaves_mixed_case_lines_alone():
    assert clean_text("qed", "Hello World, lovely day.") == "Hello World, lovely day."

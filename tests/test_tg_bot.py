"""tg_bot.py against a Bot API server on loopback, and its parser and splitter on their own.

The CLI runs in-process (tg_bot.main) where speed matters, and as a real process
(python tg_bot.py) for --help, .env lookup, exit statuses, stderr lines and signals. The stand-in
(telegram_stand_in.py) reads markup as TDLib does and refuses what Telegram refuses, so it is the
judge of every part sent. Delays are module settings that the fast_pacing fixture sets to zero;
test_messages_to_one_chat_are_a_second_apart keeps the real ones.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram_stand_in import (
    BotApiStandIn,
    CannotParse,
    accept,
    check_entities,
    hang_up,
    never_answer,
    parse_html,
    parse_markdown_v2,
    proxy_error_page,
    redirect_to_itself,
    refuse,
    trim,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tg_bot.py is a script at the top level, not a package
import tg_bot  # noqa: E402

TOKEN = "7012345678:AAH3kx-Stand_In_Secret_Value_1234567"
BOT_ID = TOKEN.partition(":")[0]
SECRET = TOKEN.partition(":")[2]
SETTINGS = ("API_TOKEN", "USER_ID", "TELEGRAM_API_URL")
LIMIT = tg_bot.MESSAGE_LIMIT
CYRILLIC_REPORT = "Резервное копирование завершено: ошибок нет.\nПроверено томов: 12 ✅"  # noqa: RUF001
REAL_PACING = {
    name: getattr(tg_bot, name)
    for name in ("SECONDS_BETWEEN_MESSAGES", "FIRST_RETRY_DELAY", "FLOOD_WAIT_MARGIN")
}
ORACLES = {"html": parse_html, "markdown": parse_markdown_v2}
RESERVED = "is reserved and must be escaped with the preceding '\\'"


def paragraphs(count: int) -> str:
    """count paragraphs of 398 characters: 400 with the blank line that separates them."""
    sentence = "The backup finished at night and every check came back clean. "
    return "\n\n".join(f"{number:03d} {sentence * 7}"[:398] for number in range(count))


TWELVE_THOUSAND_CHARACTERS = paragraphs(30)  # 11,998: ten paragraphs fit in one message
# 60 links: 779 characters on screen, 4,499 with the tags.
LINK_REPORT = "\n".join(
    f'<a href="https://ci.example.com/pipelines/nightly/{number:02d}/log">'
    f"build {number:02d}</a>: ok"
    for number in range(60)
)


def assert_one_clean_line(stderr: str) -> None:
    assert len(stderr.splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert SECRET not in stderr


def split(text: str, parse_mode: str = "none", limit: int = LIMIT) -> list[tg_bot.FormattedText]:
    return tg_bot.split_text(tg_bot.PARSERS[parse_mode](text), limit)


def texts(parts: list[tg_bot.FormattedText]) -> list[str]:
    return [part.text for part in parts]


def wire_entities(part: tg_bot.FormattedText) -> list[dict[str, object]]:
    """A part's entities as they go to the Bot API (UTF-16 offsets)."""
    return [tg_bot._bot_api_entity(part.text, entity) for entity in part.entities]


def coverage(text: str, entities: list[dict[str, object]], start: int = 0) -> set[tuple]:
    """Which characters (code points, from start) each kind of formatting covers: equal for a
    text and its parts re-joined, however the parts cut and re-open the formatting."""
    units = [0]
    for char in text:
        units.append(units[-1] + (2 if ord(char) > 0xFFFF else 1))
    covered = set()
    for entity in entities:
        kind = tuple(sorted((k, v) for k, v in entity.items() if k not in ("offset", "length")))
        begin = units.index(entity["offset"])
        end = units.index(entity["offset"] + entity["length"])
        covered |= {(kind, start + index) for index in range(begin, end)}
    return covered


def assert_parts_rejoin(markup: str, parse_mode: str, parts: list[tg_bot.FormattedText]) -> None:
    """The parts, joined, are the text and formatting Telegram reads from the whole markup."""
    expected_text, expected_entities = (
        ORACLES[parse_mode](markup) if parse_mode in ORACLES else (markup, [])
    )
    assert "".join(texts(parts)) == expected_text
    rejoined, start = set(), 0
    for part in parts:
        entities = check_entities(part.text, json.dumps(wire_entities(part)))
        rejoined |= coverage(part.text, entities, start)
        start += len(part.text)
    assert rejoined == coverage(expected_text, expected_entities)


# --- Reading the markup as Telegram does ------------------------------------------------------


@pytest.mark.parametrize(
    ("parse_mode", "markup", "message"),
    [
        (
            "markdown",
            "Build *42* passed\nAll done.",
            "line 2, column 9: Character '.' is reserved and must be escaped with the "
            "preceding '\\'",
        ),
        ("markdown", "ok\n*bold never ends", "line 2, column 1: Can't find end of Bold entity"),
        ("markdown", "[docs](https://example.com", "line 1, column 8: Can't find end of a URL"),
        ("html", "load < 5", 'line 1, column 6: Unsupported start tag ""'),
        (
            "html",
            "<b>x</i>",
            'line 1, column 5: Unmatched end tag, expected "</b>", found "</i>"',
        ),
        (
            "html",
            "a\n<b>never closed",
            'line 2, column 1: Can\'t find end tag corresponding to start tag "b"',
        ),
    ],
    ids=[
        "markdown-reserved",
        "markdown-unclosed",
        "markdown-url",
        "html-bare-lt",
        "html-mismatch",
        "html-unclosed",
    ],
)
def test_invalid_markup_names_line_column_and_telegrams_rule(parse_mode, markup, message):
    mode = {"html": "HTML", "markdown": "MarkdownV2"}[parse_mode]
    with pytest.raises(tg_bot.MarkupError) as refused:
        tg_bot.PARSERS[parse_mode](markup)
    assert str(refused.value) == (
        f"the text is not valid {mode} at {message}; nothing was sent "
        "(fix the markup, or use --parse-mode none)"
    )


@pytest.mark.parametrize(
    ("parse", "markup", "reply"),
    [
        (parse_markdown_v2, "a.b", f"Character '.' {RESERVED}"),
        (parse_markdown_v2, "ok *bold", "Can't find end of Bold entity at byte offset 3"),
        (parse_markdown_v2, "x |y", f"Character '|' {RESERVED}"),
        (parse_markdown_v2, ">_a\nb_", "Can't find end of Italic entity at byte offset 1"),
        (parse_markdown_v2, "a > b", f"Character '>' {RESERVED}"),
        (parse_markdown_v2, "é *x", "Can't find end of Bold entity at byte offset 3"),
        (parse_html, "é <br>", 'Unsupported start tag "br" at byte offset 3'),
        (
            parse_html,
            "<b>x</i>",
            'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"',
        ),
        (parse_html, "x</b>", "Unexpected end tag at byte offset 1"),
        (
            parse_html,
            '<span class="x">s</span>',
            'Tag "span" must have class "tg-spoiler" at byte offset 0',
        ),
        (parse_html, "<a href=x/>", "Unexpected end of name token at byte offset 8"),
    ],
    ids=lambda value: "" if callable(value) else None,
)
def test_stand_in_refuses_markup_with_telegrams_texts(parse, markup, reply):
    with pytest.raises(CannotParse, match=f"^{re.escape(reply)}$"):
        parse(markup)


# Characters that matter to the parsers, and some that do not; small texts hit every rule.
markdown_alphabet = st.sampled_from(
    [*"_*[]()~`>|!\\.\n ab", "||", "__", "```", "```py\n", "**>", "](http://e.co)", "\U0001f600"]
)
html_alphabet = st.sampled_from([
    *"<>/&;\"' \nab", "<b>", "</b>", "<i>", "</i>", "&lt;", "&#128512;", "&amp", "<br>",
    '<a href="http://e.co">', "</a>", '<span class="tg-spoiler">', "</span>", "<pre>",
    '<code class="language-py">', "</code>", "</pre>", "<blockquote expandable>",
    "</blockquote>", "<tg-emoji emoji-id=5>", "</tg-emoji>", "\U0001f600",
])  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(data=st.data(), parse_mode=st.sampled_from(["html", "markdown"]))
def test_parser_accepts_and_reads_exactly_what_telegram_does(data, parse_mode):
    alphabet = html_alphabet if parse_mode == "html" else markdown_alphabet
    markup = "".join(data.draw(st.lists(alphabet, max_size=14)))
    try:
        expected = ORACLES[parse_mode](markup)
    except CannotParse:
        with pytest.raises(tg_bot.MarkupError):
            tg_bot.PARSERS[parse_mode](markup)
        return
    parsed = tg_bot.PARSERS[parse_mode](markup)
    assert parsed.text == expected[0]
    assert coverage(parsed.text, wire_entities(parsed)) == coverage(*expected)


# --- Splitting ------------------------------------------------------------------------------


def test_text_that_fits_is_one_untouched_part():
    text = "Backup done.\n\nAll 12 volumes verified.\n"
    assert texts(split(text)) == [text]


def test_long_text_splits_at_paragraph_boundaries():
    text = TWELVE_THOUSAND_CHARACTERS
    parts = split(text)
    assert len(parts) == 3
    assert all(len(part.text) <= LIMIT for part in parts)
    assert all(part.text.endswith("\n\n") for part in parts[:-1])
    assert "".join(texts(parts)) == text


def test_paragraph_longer_than_a_message_splits_at_line_breaks():
    text = "\n".join(f"line {number} " + "x" * 90 for number in range(60))
    parts = split(text)
    assert len(parts) == 2
    assert parts[0].text.endswith("\n")
    assert parts[1].text.startswith("line ")
    assert "".join(texts(parts)) == text


def test_short_heading_stays_with_the_start_of_its_long_paragraph():
    heading = "Nightly report\n\n"
    body = "\n".join(f"check {number:03d}: " + "ok " * 30 for number in range(60))
    text = f"{heading}{body}\n\nSummary: all green.\n"
    parts = split(text)
    assert len(parts) == 2
    assert parts[0].text.startswith(heading + "check 000")
    assert len(parts[0].text) > LIMIT / 2
    assert parts[0].text.endswith("\n")
    assert parts[1].text.startswith("check ")
    assert "".join(texts(parts)) == text


def test_cut_goes_right_after_the_line_break_so_indentation_opens_the_next_part():
    text = "\n".join("    indented line of the log " + "x" * 60 for _ in range(60))
    parts = split(text)
    assert len(parts) == 2
    assert parts[0].text.endswith("x\n")
    assert parts[1].text.startswith("    indented")


def test_line_longer_than_a_message_splits_between_words():
    text = " ".join(["word"] * 1200)
    parts = split(text)
    assert len(parts) == 2
    assert parts[0].text.endswith("word ")
    assert parts[1].text.startswith("word")
    assert "".join(texts(parts)) == text


def test_only_a_word_longer_than_a_message_is_cut_inside():
    long_word = "a" * 5000
    text = f"short words first {long_word} and after"
    assert texts(split(text)) == [
        "short words first ",
        "a" * LIMIT,
        "a" * (5000 - LIMIT) + " and after",
    ]


@pytest.mark.parametrize(
    "character",
    [
        "\u2764\ufe0f",
        "\U0001f44d\U0001f3fd",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "e\u0301",
        "\U0001f1fa\U0001f1e6",
        "\u1100\u1161\u11a8",
        "\u0e01\u0e33",
        "\u0e19\u0e34\u0e49",
        "\u0915\u094d\u0937",
        "\u0600\u0661",
    ],
    ids=[
        "variation-selector",
        "skin-tone",
        "zero-width-joiner",
        "combining-accent",
        "flag",
        "hangul-jamo",
        "thai-sara-am",
        "thai-vowel-and-tone",
        "devanagari-conjunct",
        "arabic-number-sign",
    ],
)
def test_cut_inside_a_word_keeps_each_user_perceived_character_whole(character):
    text = "x" * (LIMIT - 1) + character * 3
    assert texts(split(text)) == ["x" * (LIMIT - 1), character * 3]


def test_custom_emoji_are_never_cut():
    emoji = tg_bot.Entity("custom_emoji", 0, 2, custom_emoji_id="5368324170671202286")
    entities = tuple(replace(emoji, offset=offset) for offset in range(5, 600, 7))
    formatted = tg_bot.FormattedText("x" * 600, entities)
    for limit in (10, 11, 12, 13):
        parts = tg_bot.split_text(formatted, limit)
        assert "".join(texts(parts)) == formatted.text
        kept = [(e.type, e.length) for part in parts for e in part.entities]
        assert kept == [("custom_emoji", 2)] * len(entities)


def test_a_run_of_flags_is_cut_between_flags():
    flags = "\U0001f1fa\U0001f1e6\U0001f1e9\U0001f1ea" * 1500  # 6,000 code points, 3,000 flags
    parts = split(flags)
    assert [len(part.text) for part in parts] == [LIMIT, 6000 - LIMIT]


def test_five_thousand_emoji_split_by_code_points():
    assert [len(part.text) for part in split("\U0001f600" * 5000)] == [LIMIT, 5000 - LIMIT]


def test_whitespace_longer_than_a_message_makes_a_blank_part():
    text = "start" + " " * (2 * LIMIT) + "end"
    parts = split(text)
    assert [part.blank for part in parts] == [False, True, False]
    assert "".join(texts(parts)) == text


grapheme_alphabet = st.sampled_from([
    *"ab \n\r\t\u00e9\u0301\ufe0f\u200d\u200c\u0e01\u0e33\u0e34\u1100\u1161\u11a8\uac00\uac01",
    "\U0001f600", "\U0001f3fd", "\U0001f1fa", "\U0001f1e6", "\u0915", "\u0915\u094d", "\u0937",
    "\u093f", "\u0600", "\u00a9", "\x07",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(text=st.lists(grapheme_alphabet, max_size=60).map("".join))
def test_grapheme_boundaries_follow_uax_29(text):
    clusters = regex.findall(r"\X", text)
    expected = {sum(map(len, clusters[:index])) for index in range(len(clusters) + 1)}
    found = {
        position for position in range(len(text) + 1) if tg_bot.is_grapheme_boundary(text, position)
    }
    assert found == expected


@settings(max_examples=300, deadline=None)
@given(text=st.lists(grapheme_alphabet, max_size=300).map("".join), limit=st.integers(1, 40))
def test_plain_parts_fit_and_rejoin_for_any_text(text, limit):
    parts = split(text, limit=limit)
    assert all(0 < len(part.text) <= limit for part in parts)
    assert "".join(texts(parts)) == text


# Long runs of one character (words, emoji, spaces, newlines) make texts of tens of thousands
# of characters cheaply, with long words and long whitespace among them.
long_runs = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=6000),
        st.sampled_from(["w", "\U0001f600", "\u0301", " ", "\n"]),
        st.sampled_from(["", " ", "\n", "\n\n"]),
    ),
    min_size=1,
    max_size=12,
).map(lambda runs: "".join(char * count + separator for count, char, separator in runs))


@settings(max_examples=30, deadline=None)
@given(text=long_runs)
def test_plain_parts_fit_and_rejoin_at_telegrams_limit(text):
    parts = split(text)
    assert all(len(part.text) <= LIMIT for part in parts)
    assert "".join(texts(parts)) == text


def test_html_is_measured_after_parsing_so_a_link_report_is_one_message():
    report = LINK_REPORT
    assert len(report) > LIMIT
    [part] = split(report, "html")
    assert len(part.text) == len(parse_html(report)[0]) == 779
    assert [entity.type for entity in part.entities] == ["text_link"] * 60


def test_html_entities_count_as_the_one_character_they_show():
    parts = split("&amp;" * 5000, "html")
    assert texts(parts) == ["&" * LIMIT, "&" * (5000 - LIMIT)]


def test_html_reference_with_thousands_of_digits_is_plain_text():
    digits = "1" * 5000  # more than int() reads from decimal text
    markup = f"<b>&#{digits};</b> and &#65;"
    parsed = tg_bot.parse_html(markup)
    assert (parsed.text, [tg_bot._bot_api_entity(parsed.text, e) for e in parsed.entities]) == (
        parse_html(markup)
    )
    assert parsed.text == f"&#{digits}; and A"


def test_html_bold_continues_across_a_cut():
    text = "<b>" + "bold words " * 500 + "</b> plain end"
    parts = split(text, "html")
    assert len(parts) == 2
    assert [(e.type, e.offset, e.length) for e in parts[0].entities] == [
        ("bold", 0, len(parts[0].text))
    ]
    assert [(e.type, e.offset) for e in parts[1].entities] == [("bold", 0)]
    assert_parts_rejoin(text, "html", parts)


def test_html_code_block_continues_with_its_language():
    text = '<pre><code class="language-python">' + "print('x')\n" * 500 + "</code></pre>"
    parts = split(text, "html")
    assert len(parts) == 2
    assert {(e.type, e.language) for part in parts for e in part.entities} == {("pre", "python")}
    assert_parts_rejoin(text, "html", parts)


def test_html_expandable_quotation_continues_across_a_cut():
    text = "<blockquote expandable>" + "quoted log line\n" * 400 + "</blockquote>"
    parts = split(text, "html")
    assert len(parts) == 2
    assert [[e.type for e in part.entities] for part in parts] == [["expandable_blockquote"]] * 2


def test_markdown_bold_continues_across_a_cut():
    text = "*" + "loud words " * 500 + "* quiet end"
    parts = split(text, "markdown")
    assert len(parts) == 2
    assert [[e.type for e in part.entities] for part in parts] == [["bold"], ["bold"]]
    assert_parts_rejoin(text, "markdown", parts)


def test_markdown_link_continues_with_its_url():
    text = "[" + "link words " * 500 + "](https://example.com/report) after"
    parts = split(text, "markdown")
    assert [[(e.type, e.url) for e in part.entities] for part in parts] == [
        [("text_link", "https://example.com/report")]
    ] * 2
    assert_parts_rejoin(text, "markdown", parts)


def test_markdown_code_block_continues_with_its_language_and_indentation():
    text = "```python\n" + "    print('a line of code')\n" * 300 + "```"
    parts = split(text, "markdown")
    assert len(parts) == 3
    assert {(e.type, e.language, e.offset) for part in parts for e in part.entities} == {
        ("pre", "python", 0)
    }
    assert all(part.text.startswith("    print(") for part in parts)
    assert_parts_rejoin(text, "markdown", parts)


def test_markdown_expandable_quotation_of_600_lines_continues_across_cuts():
    log = "\n>".join(f"step {number:03d}: compiled and linked" for number in range(600))
    text = f"Build log:\n**>{log}||\nend"
    parts = split(text, "markdown")
    assert len(parts) == 5
    assert all("expandable_blockquote" in [e.type for e in part.entities] for part in parts)
    assert_parts_rejoin(text, "markdown", parts)


def test_markdown_spoiler_and_quotation_continue_across_a_cut():
    text = ">" + "\n>".join(["||secret quoted words||"] * 300) + "\nafter"
    parts = split(text, "markdown")
    assert len(parts) == 2
    assert [sorted({e.type for e in part.entities}) for part in parts] == [
        ["blockquote", "spoiler"]
    ] * 2
    assert_parts_rejoin(text, "markdown", parts)


def test_markdown_italic_inside_underline_continues_across_a_cut():
    text = "__underlined _" + "both " * 1000 + "_ underlined__"
    parts = split(text, "markdown")
    assert [sorted(e.type for e in part.entities) for part in parts] == [
        ["italic", "underline"]
    ] * 2
    assert_parts_rejoin(text, "markdown", parts)


def test_markdown_escapes_count_as_the_one_character_they_show():
    assert texts(split("\\." * 5000, "markdown")) == ["." * LIMIT, "." * (5000 - LIMIT)]


HTML_TAGS = [
    ("<b>", "</b>"),
    ("<i>", "</i>"),
    ('<a href="https://example.com/a?b=1&amp;c=2">', "</a>"),
    ('<span class="tg-spoiler">', "</span>"),
    ("<blockquote expandable>", "</blockquote>"),
    ('<pre><code class="language-sh">', "</code></pre>"),
]
html_words = st.sampled_from(["alpha", "beta", "&amp;", "&lt;", "\U0001f600", "x" * 12, "  ind"])
spaces = st.sampled_from([" ", "\n", "\n\n", ""])
html_run = st.lists(st.builds(str.__add__, html_words, spaces), max_size=6).map("".join)


def _wrapped(pair: tuple[str, str], inner: list[str]) -> str:
    return pair[0] + "".join(inner) + pair[1]


html_inner = html_run | st.builds(
    _wrapped, st.sampled_from(HTML_TAGS[:4]), st.lists(html_run, max_size=3)
)
html_document = st.lists(
    html_run | st.builds(_wrapped, st.sampled_from(HTML_TAGS), st.lists(html_inner, max_size=4)),
    max_size=8,
).map("".join)

markdown_words = st.sampled_from(["alpha", "beta", "\\.", "\\*", "\U0001f600", "y" * 10, "  ind"])
markdown_run = st.lists(st.builds(str.__add__, markdown_words, spaces), min_size=1, max_size=6).map(
    "".join
)
MARKDOWN_MARKERS = st.sampled_from(["*", "_", "__", "~", "||"])
markdown_formatted = st.builds(
    lambda marker, run: f"{marker}{run}{marker}", MARKDOWN_MARKERS, markdown_run
)
markdown_nested = st.builds(
    lambda marker, run, inner: f"{marker}{run} {inner} {marker}",
    MARKDOWN_MARKERS,
    markdown_run,
    markdown_formatted,
)
markdown_quote_line = st.builds(lambda run: run.replace("\n", " "), markdown_run)
markdown_document = st.lists(
    st.one_of(
        markdown_run,
        markdown_formatted.map(lambda part: part + " "),
        markdown_nested.map(lambda part: part + " "),
        markdown_run.map(lambda run: f"[{run}](https://example.com/x) "),
        markdown_run.map(lambda run: f"\n```go\n{run}```\n"),
        st.lists(markdown_quote_line, min_size=1, max_size=4).map(
            lambda lines: "\n>" + "\n>".join(lines) + "\n"
        ),
        st.lists(markdown_quote_line, min_size=1, max_size=4).map(
            lambda lines: "\n**>" + "\n>".join(lines) + "||\n"
        ),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    parse_mode=st.sampled_from(["none", "html", "markdown"]),
    limit=st.integers(min_value=6, max_value=120),
)
def test_parts_rejoin_to_the_visible_text_and_entities_for_any_text(data, parse_mode, limit):
    markup = data.draw(
        {
            "none": st.lists(grapheme_alphabet, max_size=300).map("".join),
            "html": html_document,
            "markdown": markdown_document,
        }[parse_mode]
    )
    try:
        parts = split(markup, parse_mode, limit)
    except tg_bot.MarkupError:  # e.g. "__" then "_": Telegram reads it differently too
        with pytest.raises(CannotParse):
            ORACLES[parse_mode](markup)
        return
    assert all(len(part.text) <= limit for part in parts)
    assert_parts_rejoin(markup, parse_mode, parts)


@pytest.mark.parametrize(
    ("emoji_id", "valid"),
    [
        ("5368324170671202286", True),
        ("-5", True),
        ("9223372036854775807", True),
        ("9223372036854775808", False),
        ("025", False),
        ("+5", False),
        ("0", False),
        ("\u0661\u0662", False),  # Arabic-Indic digits
    ],
)
def test_custom_emoji_ids_are_read_as_telegram_reads_them(emoji_id, valid):
    html = f'<tg-emoji emoji-id="{emoji_id}">x</tg-emoji>'
    markdown = f"![x](tg://emoji?id={emoji_id})"
    for parse, markup in ((tg_bot.parse_html, html), (tg_bot.parse_markdown, markdown)):
        if valid:
            [entity] = parse(markup).entities
            assert entity.custom_emoji_id == emoji_id
        else:
            with pytest.raises(tg_bot.MarkupError):
                parse(markup)
    for oracle, markup in ((parse_html, html), (parse_markdown_v2, markdown)):
        if valid:
            assert oracle(markup)[1][0]["custom_emoji_id"] == emoji_id
        else:
            with pytest.raises(CannotParse):
                oracle(markup)


@pytest.mark.parametrize(
    "url", ["TG:EMOJI?id=5", "tg:emoji/?x=1&id=5", "tg://emoji?id=5#frag", "tg://emoji/?id=5&id=7"]
)
def test_custom_emoji_links_are_read_as_telegram_reads_them(url):
    [entity] = tg_bot.parse_markdown(f"![x]({url})").entities
    assert entity.custom_emoji_id == "5"
    assert parse_markdown_v2(f"![x]({url})")[1][0]["custom_emoji_id"] == "5"


@pytest.mark.parametrize(
    ("parse_mode", "markup", "date_time_format"),
    [
        ("markdown", "Deploy at ![12:00](tg://time?unix=1767225600&format=t)", "t"),
        ("markdown", "Deploy ![now](TG:time/?unix=1767225600#x)", ""),
        ("markdown", "![Mon 12:00](tg://time?format=Tw&unix=1767225600)", "wT"),
        ("markdown", "![x](tg://time?unix=1767225600&format=R)", "r"),
        ("html", '<tg-time unix="1767225600" format="tTdD">12:00</tg-time> ok', "dt"),
        ("html", "at <tg-time unix=1767225600>noon</tg-time>", ""),
    ],
)
def test_tg_time_dates_are_read_as_telegram_reads_them(parse_mode, markup, date_time_format):
    parsed = tg_bot.PARSERS[parse_mode](markup)
    [entity] = wire_entities(parsed)
    assert (entity["type"], entity["unix_time"]) == ("date_time", 1767225600)
    assert entity.get("date_time_format", "") == date_time_format
    expected_text, [expected] = ORACLES[parse_mode](markup)
    assert (parsed.text, {"date_time_format": "", **entity}) == (expected_text, expected)


@pytest.mark.parametrize(
    ("parse_mode", "markup", "rule"),
    [
        ("markdown", "![x](tg://time?unix=0)", "Invalid tg://emoji or tg://time URL specified"),
        ("markdown", "![x](tg://time?unix=01)", "Invalid tg://emoji or tg://time URL specified"),
        ("markdown", "![x](tg://time?unix=5&format=x)", "Invalid tg://emoji or tg://time URL"),
        ("html", '<tg-time unix="5" format="rt">x</tg-time>', "Invalid date format used"),
    ],
)
def test_bad_tg_time_dates_are_refused_as_telegram_refuses_them(parse_mode, markup, rule):
    with pytest.raises(tg_bot.MarkupError, match=re.escape(rule)):
        tg_bot.PARSERS[parse_mode](markup)
    with pytest.raises(CannotParse, match=re.escape(rule)):
        ORACLES[parse_mode](markup)


def test_tg_time_without_a_positive_time_is_plain_text():
    for unix in ("-5", "0", "x", "4294967295"):
        markup = f'<tg-time unix="{unix}">noon</tg-time>'
        assert tg_bot.parse_html(markup) == tg_bot.FormattedText("noon")
        assert parse_html(markup) == ("noon", [])


def test_redact_hides_the_token_and_its_secret_alone():
    text = f"url=http://h/bot{TOKEN}/sendMessage and http://h/bot7012345678%3A{SECRET}/x"
    redacted = tg_bot.redact(text, TOKEN)
    assert SECRET not in redacted
    assert "bot***/sendMessage" in redacted
    assert tg_bot.redact("bot1:abcdefgh/x abcdefgh", "1:abcdefgh") == "bot***/x ***"


@pytest.mark.parametrize(
    ("token", "line"),
    [
        ("TOKEN", "API_TOKEN is not a bot token"),
        ("123:a", "chat 111 refused a banana"),
    ],
)
def test_redact_leaves_a_line_alone_when_the_token_is_too_short_to_be_a_secret(token, line):
    assert tg_bot.redact(line, token) == line


def test_redact_hides_a_short_token_in_a_request_url():
    line = "a banana at http://h/bot123:a/sendMessage"
    assert tg_bot.redact(line, "123:a") == "a banana at http://h/bot***/sendMessage"


def test_placeholder_token_is_named_in_an_ungarbled_line(cli, stand_in, workdir, monkeypatch):
    monkeypatch.setenv("API_TOKEN", "TOKEN")
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 2
    assert result.stderr == (
        "tg_bot.py: API_TOKEN is not a bot token: it must look like 123456789:AAE... "
        "(digits, a colon, the secret), as @BotFather gives it\n"
    )


def test_interruption_summary_says_what_each_chat_got():
    first, second, third = (tg_bot.Chat(111), tg_bot.Chat(-100222, topic=5), tg_bot.Chat(333))
    progress = tg_bot.Progress(chats=(first, second, third), total_messages=5)
    progress.delivered[first] = [f"message {n}/5" for n in range(1, 6)] + ["document a.csv"]
    progress.delivered[second] = ["message 1/5", "message 2/5"]
    progress.in_flight = (second, "message 3/5")
    assert progress.summary() == (
        "chat 111 got messages 1-5 of 5, document a.csv; chat -100222:5 got messages 1-2 of 5; "
        "message 3/5 to chat -100222:5 may or may not have arrived; nothing went to chat 333"
    )


# --- The command in-process, against the stand-in ---------------------------------------------


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
def stand_in():
    server = BotApiStandIn()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fast_pacing(monkeypatch):
    """No pause between messages and no backoff, except for the 429's own retry_after; and no
    quarter-second wait after each run for TLS connections to close, as there are none here."""
    from aiogram.client.session.aiohttp import AiohttpSession

    for name in REAL_PACING:
        monkeypatch.setattr(tg_bot, name, 0)

    async def close_at_once(session: AiohttpSession) -> None:
        if session._session is not None:
            await session._session.close()

    monkeypatch.setattr(AiohttpSession, "close", close_at_once)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current directory, no settings in the environment, and no .env beside the
    script that the test did not write (a .env loaded in-process is undone afterwards)."""
    monkeypatch.chdir(tmp_path)
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tg_bot, "__file__", str(tmp_path / "bin" / "tg_bot.py"))
    saved = dict(os.environ)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def cli(stand_in, workdir, monkeypatch, capsys):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("USER_ID", "111")
    monkeypatch.setenv("TELEGRAM_API_URL", stand_in.url)

    def run(*args: str, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        status = asyncio.run(tg_bot.main(list(args)))
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return run


def write_message(directory: Path, text: str, name: str = "message.txt") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_sends_message_txt_from_the_current_directory_and_prints_nothing(cli, stand_in, workdir):
    write_message(workdir, "Nightly build passed.\n")
    result = cli()
    assert (result.status, result.stdout, result.stderr) == (0, "", "")
    [sent] = stand_in.received
    assert (sent.method, sent.token, sent.chat_id, sent.text) == (
        "sendMessage",
        TOKEN,
        "111",
        "Nightly build passed.\n",
    )


def test_plain_text_is_sent_without_parse_mode_or_entities(cli, stand_in, workdir):
    write_message(workdir, "<b>not bold</b> *not bold*")
    assert cli().status == 0
    [sent] = stand_in.received
    assert "parse_mode" not in sent.fields
    assert "entities" not in sent.fields
    assert sent.text == "<b>not bold</b> *not bold*"


def test_long_text_arrives_as_parts_in_order_that_rejoin(cli, stand_in, workdir):
    text = TWELVE_THOUSAND_CHARACTERS
    write_message(workdir, text)
    assert cli().status == 0
    sent = [message.text for message in stand_in.calls("sendMessage")]
    assert len(sent) == 3
    assert all(len(part) <= LIMIT for part in sent)
    assert "".join(sent) == text


def test_five_thousand_emoji_arrive_as_two_messages(cli, stand_in, workdir):
    write_message(workdir, "\U0001f680" * 5000)
    assert cli().status == 0
    sent = [message.text for message in stand_in.calls("sendMessage")]
    assert [len(part) for part in sent] == [LIMIT, 5000 - LIMIT]
    assert "".join(sent) == "\U0001f680" * 5000


def test_cyrillic_text_arrives_intact(cli, stand_in, workdir):
    write_message(workdir, CYRILLIC_REPORT)
    assert cli().status == 0
    assert [sent.text for sent in stand_in.received] == [CYRILLIC_REPORT]


def test_dash_reads_the_text_from_stdin(cli, stand_in):
    result = cli("-", stdin="Отчёт из конвейера\n".encode())
    assert result.status == 0
    assert [sent.text for sent in stand_in.received] == ["Отчёт из конвейера\n"]


@pytest.mark.parametrize(
    ("parse_mode", "markup"),
    [
        ("markdown", "*Build 42* passed on [CI](https://ci.example.com/42)\n```sh\nmake\n```"),
        ("html", '<b>Build 42</b> passed on <a href="https://ci.example.com/42">CI</a> &lt;3'),
        ("markdown", "Deploy at ![12:00](tg://time?unix=1767225600&format=wt), *be there*"),
        ("html", 'Deploy at <tg-time unix="1767225600" format="Dt">12:00</tg-time>'),
    ],
)
def test_formatted_text_arrives_as_telegram_would_show_it(
    cli, stand_in, workdir, parse_mode, markup
):
    write_message(workdir, markup)
    assert cli("--parse-mode", parse_mode).status == 0
    [sent] = stand_in.received
    assert "parse_mode" not in sent.fields
    assert sent.shown == trim(*ORACLES[parse_mode](markup))


@pytest.mark.parametrize(
    ("parse_mode", "last_part", "rule"),
    [
        ("markdown", "The end.", "column 8: Character '.' is reserved"),
        ("html", "load < 5", 'column 6: Unsupported start tag ""'),
    ],
)
def test_invalid_markup_in_the_last_part_sends_nothing(
    cli, stand_in, workdir, parse_mode, last_part, rule
):
    body = "\n\n".join(["word " * 790] * 4)  # four parts' worth, then the fifth with the fault
    write_message(workdir, f"{body}\n\n{last_part}")
    result = cli("--parse-mode", parse_mode)
    assert result.status == 2
    assert_one_clean_line(result.stderr)
    assert f"at line 9, {rule}" in result.stderr
    assert "nothing was sent" in result.stderr
    assert stand_in.received == []


def test_link_heavy_html_report_goes_as_one_message(cli, stand_in, workdir):
    write_message(workdir, LINK_REPORT)
    assert cli("--parse-mode", "html").status == 0
    [sent] = stand_in.received
    assert sent.shown == parse_html(LINK_REPORT)


def test_code_block_parts_keep_the_indentation_telegram_shows(cli, stand_in, workdir):
    code = "".join(f"    step {number:03d}: compile and link\n" for number in range(400))
    write_message(workdir, f"```\n{code}```")
    assert cli("--parse-mode", "markdown").status == 0
    shown = [sent.shown for sent in stand_in.received]
    assert len(shown) == 4
    assert all(text.startswith("    step ") for text, _ in shown)
    assert all(entities[0]["type"] == "pre" for _, entities in shown)
    assert "\n".join(text for text, _ in shown) + "\n" == code


def test_flood_control_is_waited_out_and_the_message_delivered_once_before_the_next(
    cli, stand_in, workdir
):
    text = paragraphs(15)
    write_message(workdir, text)
    first, second = texts(split(text))
    stand_in.reply_next(
        "sendMessage", accept, refuse(429, "Too Many Requests: retry after 1", retry_after=1)
    )
    assert cli().status == 0
    # The refused attempt, then the one delivery, then nothing more.
    assert [sent.text for sent in stand_in.received] == [first, second, second]


def test_messages_to_one_chat_are_a_second_apart(cli, stand_in, workdir, monkeypatch):
    for name, value in REAL_PACING.items():
        monkeypatch.setattr(tg_bot, name, value)
    write_message(workdir, paragraphs(15))  # two messages
    assert cli().status == 0
    arrivals = [sent.arrived_at for sent in stand_in.received]
    assert len(arrivals) == 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) >= tg_bot.SECONDS_BETWEEN_MESSAGES


def test_flood_wait_longer_than_the_tool_waits_fails_at_once(cli, stand_in, workdir):
    stand_in.reply_next("sendMessage", refuse(429, "Too Many Requests", retry_after=3600))
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "asks to wait 3600 s" in result.stderr
    assert len(stand_in.received) == 1


@pytest.mark.parametrize(
    "reply", [refuse(502, "Bad Gateway"), proxy_error_page], ids=["bad-gateway", "proxy-page"]
)
def test_server_error_is_retried_and_the_message_delivered_once(cli, stand_in, workdir, reply):
    stand_in.reply_next("sendMessage", reply)
    write_message(workdir, "alert")
    assert cli().status == 0
    assert len(stand_in.received) == 2


def test_server_errors_are_retried_a_bounded_number_of_times(cli, stand_in, workdir):
    stand_in.reply_always("sendMessage", refuse(500, "Internal Server Error"))
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "kept failing (Internal Server Error)" in result.stderr
    assert len(stand_in.received) == tg_bot.MAX_ATTEMPTS


@pytest.mark.parametrize(
    ("chat", "reply", "expected"),
    [
        (
            "111",
            refuse(401, "Unauthorized"),
            ["rejected the bot token (Unauthorized): check API_TOKEN"],
        ),
        (
            "111",
            refuse(400, "Bad Request: chat not found"),
            ["chat 111 not found: the user must open the bot", "press Start", "USER_ID"],
        ),
        (
            "-100123456789",
            refuse(400, "Bad Request: chat not found"),
            ["chat -100123456789 not found: add the bot to the group or channel"],
        ),
        (
            "@ops_alerts",
            refuse(400, "Bad Request: chat not found"),
            ["chat @ops_alerts not found: add the bot to the group or channel"],
        ),
        (
            "111",
            refuse(403, "Forbidden: bot was blocked by the user"),
            ["to chat 111 (Forbidden: bot was blocked by the user)"],
        ),
        (
            "-4567",
            refuse(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=-1001234567890,
            ),
            ["chat -4567 is now a supergroup with id -1001234567890"],
        ),
        (
            "-100123456789:42",
            refuse(400, "Bad Request: message thread not found"),
            ["to chat -100123456789:42: Bad Request: message thread not found"],
        ),
    ],
    ids=[
        "token",
        "user-not-found",
        "group-not-found",
        "channel-not-found",
        "blocked",
        "migrated",
        "topic",
    ],
)
def test_refusal_is_one_line_with_what_to_do(cli, stand_in, workdir, chat, reply, expected):
    stand_in.reply_next("sendMessage", reply)
    write_message(workdir, "alert")
    result = cli(f"--chat={chat}")
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    for fragment in expected:
        assert fragment in result.stderr


@pytest.mark.parametrize(
    "reply",
    [
        refuse(403, "Forbidden: bot was blocked by the user"),
        refuse(400, "Bad Request: chat not found"),
        refuse(400, "Bad Request: not enough rights to send text messages to the chat"),
        refuse(400, "Bad Request: TOPIC_CLOSED"),
    ],
    ids=["blocked", "not-found", "no-rights", "topic-closed"],
)
def test_a_chat_that_refuses_is_skipped_and_the_others_get_everything(
    cli, stand_in, workdir, reply
):
    stand_in.reply_next("sendMessage", reply)
    text = paragraphs(15)
    write_message(workdir, text)
    result = cli("--chat", "111", "--chat", "222", "--chat", "333")
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "chat 111" in result.stderr
    first, second = texts(split(text))
    assert [(sent.chat_id, sent.text) for sent in stand_in.received] == [
        ("111", first),
        ("222", first),
        ("222", second),
        ("333", first),
        ("333", second),
    ]


def test_unparsable_entities_stop_every_chat(cli, stand_in, workdir):
    stand_in.reply_always("sendMessage", refuse(400, "Bad Request: can't parse entities: x"))
    write_message(workdir, "alert")
    result = cli("--chat", "111", "--chat", "222", "--parse-mode", "html")
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "could not read the formatting of message 1/1 (Bad Request: can't parse" in result.stderr
    assert "--parse-mode none" in result.stderr
    assert [sent.chat_id for sent in stand_in.received] == ["111"]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://ci.example.com/42", "https://ci.example.com/42"),
        ("example.com", "http://example.com/"),
        ("HTTPS://CI.Example.com:0443/a b", "https://ci.example.com:443/a%20b"),
        ("http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
        ("tg:resolve?domain=ops_alerts", "tg://resolve?domain=ops_alerts"),
        ("tonsite://wallet.ton/x", "tonsite://wallet.ton/x"),
        ("http://localhost:3000/x", ""),
        ("ftp://files.example.com/a", ""),
        ("http://ci.example.com:0/", ""),
        ("http://ci.example.com:65536/", ""),
        ("http://ci example.com/", ""),
        ("http://[::g]/", ""),
        ("tg://resolve.x", ""),
        ("tg://resolve:80", ""),
    ],
)
def test_links_are_kept_or_dropped_by_telegrams_rules(url, kept):
    from telegram_stand_in import _checked_link as stand_in_checked_link

    assert tg_bot._checked_link(url) == kept
    assert stand_in_checked_link(url) == kept


@pytest.mark.parametrize(
    ("parse_mode", "markup", "shown"),
    [
        (
            "markdown",
            "Dashboard: [dash](http://localhost:3000/x), files: [f](ftp://files.example.com/a)",
            "Dashboard: dash, files: f",
        ),
        (
            "html",
            'Dashboard: <a href="http://localhost:3000/x">dash</a>, '
            '<b>files: <a href="ftp://files.example.com/a">f</a></b>',
            "Dashboard: dash, files: f",
        ),
    ],
)
def test_links_telegram_would_drop_go_as_plain_text_and_the_message_whole(
    cli, stand_in, workdir, parse_mode, markup, shown
):
    write_message(workdir, markup)
    result = cli("--parse-mode", parse_mode)
    assert (result.status, result.stderr) == (0, "")
    [sent] = stand_in.received
    assert sent.shown[0] == shown
    assert all(entity["type"] != "text_link" for entity in sent.entities)
    assert sent.shown == trim(*ORACLES[parse_mode](markup))


def test_stand_in_refuses_a_link_entity_with_telegrams_text():
    from telegram_stand_in import Received, read_message

    entities = json.dumps([{"type": "text_link", "offset": 0, "length": 4, "url": "ftp://x.y/"}])
    fields = {"chat_id": "1", "text": "dash", "entities": entities}
    assert read_message(Received("sendMessage", TOKEN, fields)) == (
        "Bad Request: Entity URL 'ftp://x.y/' is invalid: Unsupported URL protocol"
    )


def test_a_refused_link_stops_every_chat(cli, stand_in, workdir):
    stand_in.reply_always(
        "sendMessage",
        refuse(400, "Bad Request: Entity URL 'ftp://x.y/' is invalid: Unsupported URL protocol"),
    )
    write_message(workdir, "alert")
    result = cli("--chat", "111", "--chat", "222")
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "Entity URL 'ftp://x.y/' is invalid" in result.stderr
    assert [sent.chat_id for sent in stand_in.received] == ["111"]


def test_unreachable_server_fails_after_the_retries_in_one_line(cli, workdir, monkeypatch):
    monkeypatch.setenv("TELEGRAM_API_URL", closed_port_url())
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "cannot reach the Bot API server" in result.stderr
    assert f"after {tg_bot.MAX_ATTEMPTS} attempts" in result.stderr


def test_connection_lost_after_sending_is_not_sent_again(cli, stand_in, workdir):
    stand_in.reply_next("sendMessage", hang_up)
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "not sent again, since Telegram may have received it" in result.stderr
    assert len(stand_in.received) == 1


def test_redirect_loop_error_does_not_reveal_the_token(cli, stand_in, workdir):
    stand_in.reply_always("sendMessage", redirect_to_itself)
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 1
    assert_one_clean_line(result.stderr)
    assert "TooManyRedirects" in result.stderr
    assert "check TELEGRAM_API_URL" in result.stderr
    assert "/bot***/sendMessage" in result.stderr


def test_two_chats_get_the_messages_chat_after_chat(cli, stand_in, workdir, monkeypatch):
    monkeypatch.setenv("USER_ID", "111, 222")
    text = "first paragraph " * 200 + "\n\n" + "second paragraph " * 200
    write_message(workdir, text)
    first, second = texts(split(text))
    assert cli().status == 0
    assert [(sent.chat_id, sent.text) for sent in stand_in.received] == [
        ("111", first),
        ("111", second),
        ("222", first),
        ("222", second),
    ]


def test_chat_option_overrides_user_id(cli, stand_in, workdir):
    write_message(workdir, "alert")
    assert cli("--chat", "@ops_alerts", "--chat", "-100200300").status == 0
    assert [sent.chat_id for sent in stand_in.received] == ["@ops_alerts", "-100200300"]


def test_forum_topic_goes_as_message_thread_id_for_text_and_documents(cli, stand_in, workdir):
    write_message(workdir, "Report attached")
    (workdir / "report.csv").write_text("a,b\n", encoding="utf-8")
    assert cli("--chat=-100123456789:42", "message.txt", "--document", "report.csv").status == 0
    assert [
        (sent.method, sent.chat_id, sent.fields["message_thread_id"]) for sent in stand_in.received
    ] == [("sendMessage", "-100123456789", "42"), ("sendDocument", "-100123456789", "42")]


def test_thread_option_sets_the_topic_of_chats_that_name_none(cli, stand_in, workdir, monkeypatch):
    monkeypatch.setenv("USER_ID", "-100111, -100222:9")
    write_message(workdir, "alert")
    assert cli("--thread", "7").status == 0
    assert [(sent.chat_id, sent.fields["message_thread_id"]) for sent in stand_in.received] == [
        ("-100111", "7"),
        ("-100222", "9"),
    ]


def test_a_chat_listed_twice_gets_the_text_once(cli, stand_in, workdir, monkeypatch):
    monkeypatch.setenv("USER_ID", "-100111, 222, -100111:7, 222, -100333")
    write_message(workdir, "alert")
    assert cli("--thread", "7").status == 0
    assert [(sent.chat_id, sent.fields["message_thread_id"]) for sent in stand_in.received] == [
        ("-100111", "7"),
        ("222", "7"),
        ("-100333", "7"),
    ]


def test_bad_thread_is_refused_even_when_no_chat_is_named(cli, stand_in, workdir, monkeypatch):
    monkeypatch.delenv("USER_ID")
    write_message(workdir, "alert")
    result = cli("--dry-run", "--thread", "general")
    assert result.status == 2
    assert result.stderr == (
        "tg_bot.py: --thread has 'general', which is not a topic id (a positive number such as "
        "42)\n"
    )
    assert result.stdout == ""


def test_without_a_topic_no_message_thread_id_is_sent(cli, stand_in, workdir):
    write_message(workdir, "alert")
    assert cli().status == 0
    assert "message_thread_id" not in stand_in.received[0].fields


def test_negative_chat_id_after_chat_without_equals_gets_a_hint(cli, stand_in):
    result = cli("--chat", "-100123:5")
    assert result.status == 2
    assert result.stderr == (
        "tg_bot.py: argument --chat: expected one argument (write a negative chat id as "
        "--chat=-100123456789) (see --help)\n"
    )


def test_silent_and_no_preview_are_sent_as_parameters(cli, stand_in, workdir):
    write_message(workdir, "see https://example.com/build/42")
    (workdir / "log.txt").write_text("log\n", encoding="utf-8")
    assert cli("message.txt", "--silent", "--no-preview", "--document", "log.txt").status == 0
    message, document = stand_in.received
    assert message.fields["disable_notification"] == "true"
    assert json.loads(message.fields["link_preview_options"]) == {"is_disabled": True}
    assert document.fields["disable_notification"] == "true"


def test_without_silent_and_no_preview_no_such_parameters_are_sent(cli, stand_in, workdir):
    write_message(workdir, "see https://example.com/build/42")
    assert cli().status == 0
    [sent] = stand_in.received
    assert "disable_notification" not in sent.fields
    assert "link_preview_options" not in sent.fields


def test_env_file_in_the_current_directory_supplies_the_settings(
    cli, stand_in, workdir, monkeypatch
):
    for name in SETTINGS:
        monkeypatch.delenv(name)
    (workdir / ".env").write_text(
        f"API_TOKEN={TOKEN}\nUSER_ID=333\nTELEGRAM_API_URL={stand_in.url}\n", encoding="utf-8"
    )
    write_message(workdir, "alert")
    assert cli().status == 0
    assert [sent.chat_id for sent in stand_in.received] == ["333"]


def test_the_environment_wins_over_the_env_file(cli, stand_in, workdir):
    (workdir / ".env").write_text("USER_ID=333\n", encoding="utf-8")
    write_message(workdir, "alert")
    assert cli().status == 0
    assert [sent.chat_id for sent in stand_in.received] == ["111"]


def test_api_url_option_overrides_the_environment(cli, stand_in, workdir, monkeypatch):
    monkeypatch.setenv("TELEGRAM_API_URL", closed_port_url())
    write_message(workdir, "alert")
    assert cli("--api-url", stand_in.url).status == 0
    assert len(stand_in.received) == 1


def test_document_is_uploaded_after_the_text(cli, stand_in, workdir):
    write_message(workdir, "Report attached")
    content = bytes(range(256)) * 40
    (workdir / "report.bin").write_bytes(content)
    assert cli("message.txt", "--document", "report.bin").status == 0
    text, document = stand_in.received
    assert (text.method, text.text) == ("sendMessage", "Report attached")
    assert document.method == "sendDocument"
    assert document.chat_id == "111"
    assert list(document.files.values()) == [("report.bin", content)]


def test_documents_alone_go_when_no_text_file_is_given(cli, stand_in, workdir):
    write_message(workdir, "this default message is not sent")
    (workdir / "a.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    (workdir / "b.log").write_text("done\n", encoding="utf-8")
    assert cli("--document", "a.csv", "--document", "b.log").status == 0
    assert [sent.method for sent in stand_in.received] == ["sendDocument", "sendDocument"]
    assert [list(sent.files.values()) for sent in stand_in.received] == [
        [("a.csv", b"x,y\n1,2\n")],
        [("b.log", b"done\n")],
    ]


def test_document_refused_by_flood_control_is_uploaded_again_once(cli, stand_in, workdir):
    stand_in.reply_next("sendDocument", refuse(429, "Too Many Requests", retry_after=1))
    (workdir / "dump.txt").write_bytes(b"core dump summary\n")
    assert cli("--document", "dump.txt").status == 0
    uploads = [list(sent.files.values()) for sent in stand_in.calls("sendDocument")]
    assert uploads == [[("dump.txt", b"core dump summary\n")]] * 2


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        (lambda workdir: None, "--document report.pdf: no such file"),
        (
            lambda workdir: (
                (workdir / "report.pdf").open("wb").truncate(tg_bot.DOCUMENT_LIMIT_BYTES + 1)
            ),
            "over Telegram's limit for bots of 50 MB",
        ),
    ],
    ids=["missing", "over-50-mb"],
)
def test_bad_document_is_refused_before_anything_is_sent(cli, stand_in, workdir, prepare, expected):
    write_message(workdir, "alert")
    prepare(workdir)
    result = cli("--document", "report.pdf")
    assert result.status == 2
    assert_one_clean_line(result.stderr)
    assert expected in result.stderr
    assert stand_in.received == []


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        ("", [], "message.txt is empty: nothing to send"),
        (" \n\n\t\n", [], "message.txt is empty: nothing to send"),
        (
            "<b></b>\n",
            ["--parse-mode", "html"],
            "message.txt has no text once its markup is read: nothing to send",
        ),
    ],
    ids=["empty", "whitespace", "empty-markup"],
)
def test_empty_message_sends_nothing(cli, stand_in, workdir, text, args, expected):
    write_message(workdir, text)
    result = cli(*args)
    assert result.status == 2
    assert result.stderr == f"tg_bot.py: {expected}\n"
    assert stand_in.received == []


def test_missing_message_file_is_a_usage_error(cli, stand_in):
    result = cli()
    assert result.status == 2
    assert result.stderr == (
        "tg_bot.py: message.txt: no such file (give a FILE, or - to read stdin)\n"
    )
    assert stand_in.received == []


def test_text_that_is_not_utf8_is_a_usage_error(cli, stand_in, workdir):
    (workdir / "message.txt").write_bytes("Привет".encode("cp1251"))
    result = cli()
    assert result.status == 2
    assert "message.txt is not UTF-8 text (byte 0xcf at offset 0)" in result.stderr
    assert stand_in.received == []


def test_byte_order_mark_is_not_sent_as_text(cli, stand_in, workdir):
    (workdir / "message.txt").write_bytes("\ufeffalert".encode())
    assert cli().status == 0
    assert [sent.text for sent in stand_in.received] == ["alert"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("API_TOKEN", "AAH3kx-pasted-without-the-bot-id", "API_TOKEN is not a bot token"),
        ("USER_ID", "111,ops team", "USER_ID has 'ops team', which is not a chat id"),
        ("USER_ID", "111:0", "USER_ID has '0', which is not a topic id"),
        ("USER_ID", f"111,{BOT_ID}", f"USER_ID has {BOT_ID}, the bot's own id"),
        ("TELEGRAM_API_URL", "api.telegram.org", "TELEGRAM_API_URL must be an http:// or https://"),
    ],
    ids=["token", "chat", "topic", "own-id", "api-url"],
)
def test_bad_setting_is_refused_before_any_request(
    cli, stand_in, workdir, monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)
    write_message(workdir, "alert")
    result = cli()
    assert result.status == 2
    assert_one_clean_line(result.stderr)
    assert expected in result.stderr
    assert "pasted-without" not in result.stderr
    assert stand_in.received == []


def test_unknown_option_is_a_one_line_usage_error(cli):
    result = cli("--colour")
    assert result.status == 2
    assert result.stderr == "tg_bot.py: unrecognized arguments: --colour (see --help)\n"


def test_dry_run_prints_each_message_with_its_length_and_needs_no_token(
    cli, stand_in, workdir, monkeypatch
):
    for name in SETTINGS:
        monkeypatch.delenv(name)
    text = paragraphs(15)
    write_message(workdir, text)
    first, second = texts(split(text))
    result = cli("--dry-run")
    assert (result.status, result.stderr) == (0, "")
    assert result.stdout == (
        f"--- message 1/2: {len(first)} characters ---\n{first}"
        f"--- message 2/2: {len(second)} characters ---\n{second}\n"
    )
    assert stand_in.received == []


def test_dry_run_shows_the_text_as_telegram_would_and_counts_the_formatting(cli, stand_in):
    result = cli("-", "--dry-run", "--parse-mode", "html", stdin=b"<b>Build</b> &lt;42&gt; ok")
    assert result.stdout == (
        "--- message 1/1: 13 characters, 1 formatting entities ---\nBuild <42> ok\n"
    )
    assert stand_in.received == []


def test_dry_run_lists_the_documents(cli, stand_in, workdir):
    (workdir / "report.pdf").write_bytes(b"%PDF-1.7 " * 2000)
    result = cli("--dry-run", "--document", "report.pdf")
    assert result.stdout == "--- document 1/1: report.pdf (18,000 bytes) ---\n"
    assert stand_in.received == []


# --- The command as a process ---------------------------------------------------------------


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """A copy of tg_bot.py in a directory of its own, so that only a .env a test puts beside
    it can be found there, never one beside the project's copy."""
    directory = tmp_path / "opt" / "tg"
    directory.mkdir(parents=True)
    return Path(shutil.copy(ROOT / "tg_bot.py", directory / "tg_bot.py"))


def start_script(
    script: Path, *args: str, cwd: Path, settings: dict[str, str]
) -> subprocess.Popen[str]:
    """python tg_bot.py with only these settings in its environment, SIGINT at its default
    even when this process ignores it (as a background job does)."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **settings},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_script(
    script: Path, *args: str, cwd: Path, settings: dict[str, str], stdin: str = ""
) -> Result:
    process = start_script(script, *args, cwd=cwd, settings=settings)
    stdout, stderr = process.communicate(stdin, timeout=60)
    return Result(process.returncode, stdout, stderr)


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_script_help_shows_each_default_and_examples(script, tmp_path):
    result = run_script(script, "--help", cwd=tmp_path, settings={})
    assert result.status == 0
    help_text = " ".join(result.stdout.split())
    for default in (
        "(default: message.txt",
        "(default: the chats in USER_ID)",
        "(default: none, the chat itself)",
        "(default: TELEGRAM_API_URL, else https://api.telegram.org)",
        "(default: none)",
        "(default: with sound)",
        "(default: with preview)",
    ):
        assert default in help_text
    assert "examples: python tg_bot.py send message.txt" in help_text
    assert "--chat=-100123456789" in help_text


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({}, "API_TOKEN is not set"),
        ({"API_TOKEN": TOKEN}, "USER_ID is not set and no --chat was given"),
    ],
    ids=["token", "chat"],
)
def test_script_not_set_names_the_env_files_it_looked_at(script, tmp_path, settings, missing):
    home = tmp_path / "home"
    home.mkdir()
    write_message(home, "alert")
    result = run_script(script, cwd=home, settings=settings)
    assert result.status == 2
    assert result.stderr == (
        f"tg_bot.py: {missing}: put it in the environment or in .env (looked in "
        f"{home}/.env and {script.parent}/.env); see .env.example\n"
    )


def test_script_reads_the_env_file_beside_it_when_the_working_directory_has_none(script, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    write_message(home, "alert")
    (script.parent / ".env").write_text("USER_ID=ops team\n", encoding="utf-8")
    result = run_script(script, "--dry-run", cwd=home, settings={})
    assert result.status == 2
    assert result.stderr == (
        "tg_bot.py: USER_ID has 'ops team', which is not a chat id (a number such as 123456789, "
        "-100123456789 for a group or channel, or @channelname; :TOPIC adds a forum topic)\n"
    )
    (home / ".env").write_text("USER_ID=@ops_alerts\n", encoding="utf-8")
    assert run_script(script, "--dry-run", cwd=home, settings={}).status == 0


def test_script_in_a_deleted_working_directory_looks_beside_itself(script, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    process = subprocess.run(
        [
            "sh",
            "-c",
            'cd "$1" && rmdir "$1" && exec "$2" "$3" -',
            "sh",
            gone,
            sys.executable,
            script,
        ],
        env={"PATH": os.environ["PATH"]},
        input="alert",
        capture_output=True,
        encoding="utf-8",
        timeout=60,
    )
    assert process.returncode == 2
    assert process.stderr == (
        "tg_bot.py: API_TOKEN is not set: put it in the environment or in .env "
        f"(looked in {script.parent}/.env); see .env.example\n"
    )


def test_script_dry_run_refuses_the_bots_own_id(script, tmp_path):
    write_message(tmp_path, "alert")
    result = run_script(
        script, "--dry-run", cwd=tmp_path, settings={"API_TOKEN": TOKEN, "USER_ID": BOT_ID}
    )
    assert result.status == 2
    assert_one_clean_line(result.stderr)
    assert f"USER_ID has {BOT_ID}, the bot's own id" in result.stderr


def test_script_token_without_a_secret_gets_an_unmasked_example(script, tmp_path):
    write_message(tmp_path, "alert")
    result = run_script(script, cwd=tmp_path, settings={"API_TOKEN": "123456789", "USER_ID": "111"})
    assert result.status == 2
    assert result.stderr == (
        "tg_bot.py: API_TOKEN is not a bot token: it must look like 123456789:AAE... "
        "(digits, a colon, the secret), as @BotFather gives it\n"
    )


def test_script_empty_stdin_exits_2_with_one_line(script, tmp_path):
    result = run_script(script, "-", cwd=tmp_path, settings={"API_TOKEN": TOKEN, "USER_ID": "1"})
    assert result.status == 2
    assert result.stderr == "tg_bot.py: stdin is empty: nothing to send\n"


def test_script_dry_run_needs_no_settings(script, tmp_path):
    write_message(tmp_path, "Hello from the dry run")
    result = run_script(script, "--dry-run", cwd=tmp_path, settings={})
    assert (result.status, result.stderr) == (0, "")
    assert result.stdout == "--- message 1/1: 22 characters ---\nHello from the dry run\n"


async def accept_first_chat_only(stand_in, request, received):
    """Deliver to the chats whose id ends in 1; leave the others waiting for an answer."""
    reply = accept if received.chat_id.endswith("1") else never_answer
    return await reply(stand_in, request, received)


def test_script_stopped_while_sending_says_what_each_chat_got(script, stand_in, tmp_path):
    """SIGINT (exit 130) and SIGTERM (143), each to a run of its own; the two run side by
    side, as each spends most of its start-up importing aiogram."""
    stand_in.reply_always("sendMessage", accept_first_chat_only)
    write_message(tmp_path, "alert")
    chats = {signal.SIGINT: "111,222,333", signal.SIGTERM: "-1001,-1002:7,-1003"}
    processes = {
        signum: start_script(
            script,
            cwd=tmp_path,
            settings={"API_TOKEN": TOKEN, "USER_ID": user_id, "TELEGRAM_API_URL": stand_in.url},
        )
        for signum, user_id in chats.items()
    }
    wait_for(lambda: len(stand_in.received) == 4)
    for signum, process in processes.items():
        process.send_signal(signum)
    outcomes = {}
    for signum, process in processes.items():
        stdout, stderr = process.communicate(timeout=30)
        assert_one_clean_line(stderr)
        outcomes[signum] = (process.returncode, stdout, stderr)
    assert outcomes == {
        signal.SIGINT: (
            130,
            "",
            "tg_bot.py: interrupted: chat 111 got message 1/1; message 1/1 to chat 222 may or "
            "may not have arrived; nothing went to chat 333\n",
        ),
        signal.SIGTERM: (
            143,
            "",
            "tg_bot.py: terminated: chat -1001 got message 1/1; message 1/1 to chat -1002:7 may "
            "or may not have arrived; nothing went to chat -1003\n",
        ),
    }


async def accept_first_chat_only_bad_gateway_for_others(stand_in, request, received):
    reply = accept if received.chat_id.endswith("1") else refuse(502, "Bad Gateway")
    return await reply(stand_in, request, received)


def test_script_terminated_while_waiting_to_retry_says_nothing_went(script, stand_in, tmp_path):
    """Between attempts nothing is on its way: the 502 said the message did not arrive."""
    stand_in.reply_always("sendMessage", accept_first_chat_only_bad_gateway_for_others)
    write_message(tmp_path, "alert")
    process = start_script(
        script,
        cwd=tmp_path,
        settings={"API_TOKEN": TOKEN, "USER_ID": "111,222", "TELEGRAM_API_URL": stand_in.url},
    )
    # The second 502, then a second's wait before the third attempt.
    wait_for(lambda: len(stand_in.calls("sendMessage")) == 3)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143
    assert stderr == "tg_bot.py: terminated: chat 111 got message 1/1; nothing went to chat 222\n"


def test_script_terminated_while_reading_stdin_says_nothing_was_sent(script, tmp_path):
    process = start_script(
        script, "-", cwd=tmp_path, settings={"API_TOKEN": TOKEN, "USER_ID": "111"}
    )
    time.sleep(0.5)  # give it time to start reading; the signal is handled either way
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143
    assert stderr == "tg_bot.py: terminated: nothing was sent\n"


def test_script_dry_run_read_only_in_part_ends_quietly(script, tmp_path):
    text = "a line of the log\n" * 6_000  # more than a pipe holds
    write_message(tmp_path, text)
    parts = split(text)
    process = start_script(script, "--dry-run", cwd=tmp_path, settings={})
    first_line = process.stdout.readline()
    assert first_line == f"--- message 1/{len(parts)}: {len(parts[0].text)} characters ---\n"
    process.stdout.close()  # what head does after its first lines
    assert process.stderr.read() == ""
    assert process.wait(timeout=30) == 1


def test_stand_in_counts_the_parsed_text_against_the_limit(stand_in):
    """The judge itself: too long after parsing is refused, markup is not counted."""
    too_long = {"chat_id": "1", "text": "x" * (LIMIT + 1)}
    fits = {"chat_id": "1", "text": "<b>" + "x" * LIMIT + "</b>", "parse_mode": "HTML"}
    from telegram_stand_in import Received, read_message

    assert read_message(Received("sendMessage", TOKEN, too_long)) == (
        "Bad Request: message is too long"
    )
    assert read_message(Received("sendMessage", TOKEN, fits)) == (
        "x" * LIMIT,
        [{"type": "bold", "offset": 0, "length": LIMIT}],
    )

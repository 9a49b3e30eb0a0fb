"""Send a text file, and optionally some documents, to Telegram chats through a bot.

    python tg_bot.py [FILE | -] [--chat ID[:TOPIC]] [--thread ID] [--api-url URL]
                     [--parse-mode {none,html,markdown}] [--silent] [--no-preview]
                     [--document PATH] [--dry-run]

The text (default message.txt in the current directory; - reads stdin) goes to every chat in
USER_ID, or in --chat, through the bot whose token is API_TOKEN. Settings come from the
environment, or from .env in the current directory, failing that from .env beside this script;
variables already set win. With --parse-mode html or markdown the markup is read here once, by
Telegram's own rules, so that invalid markup sends nothing at all. Text longer than Telegram's
4096 characters (counted as Telegram counts them, after the markup is read) is sent as several
messages, split at paragraph, then line, then word boundaries, never inside a character, with
the formatting carried across each cut. Flood control is waited out, failed connections and
server errors are retried a few times, and a message Telegram accepted is never sent again.
Exit status: 0 sent, 1 sending failed, 2 usage or configuration error, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM). Every failure is one line on stderr, and the bot token is never in it.
"""

from __future__ import annotations

import sys

# Before the other imports, so that an older Python gets one line rather than a traceback.
# Python 3.7 and older cannot parse this file at all: the := makes them stop on the line that
# names the version, so that their SyntaxError shows it.
if sys.version_info < (3, 10):  # noqa: UP036 (ruff assumes the version this checks)
    print(
        needed := "tg_bot.py: needs Python 3.10 or newer, not",
        sys.version.split()[0],
        file=sys.stderr,
    )
    sys.exit(2)

import argparse
import asyncio
import bisect
import contextlib
import enum
import ipaddress
import itertools
import os
import re
import signal
import traceback
import unicodedata
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

# The commonest first mistake: a virtual environment that is not activated.
MISSING_MODULE = (
    "the module {name!r} is not installed for {python}: activate the virtual environment "
    "(. .venv/bin/activate) or run pip install -r requirements.txt"
)
try:
    import dotenv
except ModuleNotFoundError as missing:
    if __name__ != "__main__":
        raise
    line = MISSING_MODULE.format(name=missing.name, python=sys.executable)
    print(f"tg_bot.py: {line}", file=sys.stderr)
    sys.exit(2)

if TYPE_CHECKING:
    from aiogram.exceptions import TelegramAPIError

PROG = "tg_bot.py"
DEFAULT_MESSAGE_FILE = "message.txt"
DEFAULT_API_URL = "https://api.telegram.org"

# Bot API sendMessage: "1-4096 characters after entities parsing"; TDLib counts the code points
# of the parsed text (utf8_length), so markup and escapes do not count, and neither does a
# character written as an HTML entity more than once.
MESSAGE_LIMIT = 4096
# Bot API sendDocument: "files of any type of up to 50 MB". Counted in decimal megabytes, the
# smaller reading, so a file this tool accepts is one Telegram accepts.
DOCUMENT_LIMIT_BYTES = 50_000_000

# Telegram FAQ: "avoid sending more than one message per second" to the same chat.
SECONDS_BETWEEN_MESSAGES = 1.0
# Each message or document gets this many attempts in all (flood waits and retries together).
MAX_ATTEMPTS = 4
# Retries after a 5xx, an unreachable server or an undecodable answer wait 0.5 s, 1 s, 2 s.
FIRST_RETRY_DELAY = 0.5
# A 429 says how long to wait; a little more keeps the resend clear of the boundary.
FLOOD_WAIT_MARGIN = 0.5
# A cron job or CI step should fail rather than hang for hours on a long flood ban.
LONGEST_FLOOD_WAIT = 300
# aiogram's default per-request timeout. An upload gets as long again as a slow uplink needs
# for its size, so a 50 MB file is not cut off after a minute.
REQUEST_TIMEOUT = 60
SLOWEST_UPLOAD_BYTES_PER_SECOND = 100_000

# @BotFather's tokens are the bot's numeric id, a colon and a secret of URL-safe characters;
# anything else would only fail later, with the token inside a request URL. The token check is
# this tool's own (aiogram's raises a traceback-shaped error that names the token).
BOT_TOKEN = re.compile(r"([0-9]+):[A-Za-z0-9_-]+")
# @BotFather's secrets are 35 characters; a value much shorter is no secret worth hiding.
SHORTEST_SECRET = 8
# An obviously made-up token, so that the hint shows the shape and never the user's token.
EXAMPLE_TOKEN = "123456789:AAE..."
# A chat id is a number (negative for groups and channels) or a public @username, optionally
# followed by :TOPIC, the message_thread_id of a forum topic (the form apprise uses).
CHAT_ID = re.compile(r"(-?[0-9]+|@[A-Za-z][A-Za-z0-9_]*)(?::([0-9]+))?")
TOPIC_ID = re.compile(r"[0-9]+")


class ExitStatus(enum.IntEnum):
    SENT = 0
    SEND_FAILED = 1
    USAGE = 2
    INTERRUPTED = 128 + signal.SIGINT
    TERMINATED = 128 + signal.SIGTERM


class ToolError(Exception):
    """A failure the user can act on: printed as one line, and the process exits with its status."""

    exit_status = ExitStatus.SEND_FAILED


class UsageError(ToolError):
    """Bad arguments, settings or input, found before anything is sent."""

    exit_status = ExitStatus.USAGE


class MarkupError(UsageError):
    """Markup that Telegram would refuse, found before anything is sent."""

    def __init__(self, mode: str, markup: str, position: int, rule: str) -> None:
        line = markup.count("\n", 0, position) + 1
        column = position - (markup.rfind("\n", 0, position) + 1) + 1
        super().__init__(
            f"the text is not valid {mode} at line {line}, column {column}: {rule}; "
            "nothing was sent (fix the markup, or use --parse-mode none)"
        )


class SendError(ToolError):
    """Telegram or the network refused; nothing more can be sent."""


class ChatRefused(SendError):
    """One chat cannot receive messages; the other chats still can."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; like KeyboardInterrupt, not an error to handle on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class Chat:
    id: int | str
    topic: int | None = None  # message_thread_id of a forum topic

    def __str__(self) -> str:
        return f"{self.id}" if self.topic is None else f"{self.id}:{self.topic}"

    @property
    def is_group_or_channel(self) -> bool:
        return isinstance(self.id, str) or self.id < 0


@dataclass(frozen=True)
class Settings:
    token: str
    chats: tuple[Chat, ...]
    api_url: str


@dataclass(frozen=True)
class Document:
    path: Path
    size: int


@dataclass(frozen=True)
class SendOptions:
    silent: bool
    no_preview: bool


@dataclass(frozen=True, slots=True)
class Entity:
    """One span of formatting, in code points of the parsed text, with the Bot API's type name."""

    type: str  # bold, italic, underline, strikethrough, spoiler, code, pre, text_link, ...
    offset: int
    length: int
    url: str = ""  # text_link
    language: str = ""  # pre
    custom_emoji_id: str = ""  # custom_emoji
    unix_time: int = 0  # date_time
    date_time_format: str = ""  # date_time, as the Bot API writes it: "r", or w, d or D, t or T

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class FormattedText:
    """Text as Telegram shows it, and its formatting: a whole message, or one part of it."""

    text: str
    entities: tuple[Entity, ...] = ()

    @property
    def blank(self) -> bool:
        # Telegram trims whitespace and refuses a message left empty.
        return not self.text.strip()


# --- Settings -----------------------------------------------------------------------------------


def load_env_file() -> tuple[Path, ...]:
    """Load the first .env of the working directory and this script's own directory.

    Variables already in the environment win. Returns the paths looked at, for messages.
    """
    beside_script = Path(__file__).resolve().parent / ".env"
    try:
        candidates = (Path.cwd() / ".env", beside_script)
    except FileNotFoundError:  # the working directory was deleted under the process
        candidates = (beside_script,)
    looked_at = tuple(dict.fromkeys(candidates))
    for path in looked_at:
        if path.is_file():
            try:
                dotenv.load_dotenv(path)
            except (OSError, UnicodeDecodeError) as error:
                raise UsageError(f"{path} cannot be read ({error})") from None
            break
    return looked_at


def not_set(name: str, env_paths: tuple[Path, ...], what: str = "") -> UsageError:
    places = " and ".join(str(path) for path in env_paths)
    return UsageError(
        f"{name} is not set{what}: put it in the environment or in .env "
        f"(looked in {places}); see .env.example"
    )


def parse_topic(value: str, source: str) -> int:
    if not TOPIC_ID.fullmatch(value) or int(value) == 0:
        raise UsageError(
            f"{source} has {value!r}, which is not a topic id (a positive number such as 42)"
        )
    return int(value)


def parse_chats(value: str, source: str) -> list[Chat]:
    """The chats in a comma-separated list such as USER_ID; numbers become ints."""
    chats = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        match = CHAT_ID.fullmatch(item)
        if not match:
            raise UsageError(
                f"{source} has {item!r}, which is not a chat id (a number such as 123456789, "
                "-100123456789 for a group or channel, or @channelname; :TOPIC adds a forum topic)"
            )
        chat_id, topic = match.groups()
        chats.append(
            Chat(
                id=chat_id if chat_id.startswith("@") else int(chat_id),
                topic=parse_topic(topic, source) if topic else None,
            )
        )
    if not chats:
        raise UsageError(f"{source} names no chat: give a chat id such as 123456789")
    return chats


def check_api_url(url: str, source: str) -> str:
    """Refuse a base URL that could not work, before the token is ever put into one."""
    problem = f"{source} must be an http:// or https:// URL with a host name"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- reading it is what checks it: a bad port raises ValueError
    except ValueError:
        raise UsageError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(problem)
    return url


def check_token(token: str) -> int:
    """The bot's own id, from a well-formed token."""
    match = BOT_TOKEN.fullmatch(token)
    if not match:
        raise UsageError(
            f"API_TOKEN is not a bot token: it must look like {EXAMPLE_TOKEN} "
            "(digits, a colon, the secret), as @BotFather gives it"
        )
    return int(match.group(1))


def load_chats(
    environment: dict[str, str], chat_arguments: list[str] | None, thread: str | None
) -> tuple[Chat, ...] | None:
    """The chats from --chat, else USER_ID, with --thread as every chat's topic unless it
    names its own, each once, in order; None when neither is given."""
    topic = None if thread is None else parse_topic(thread, "--thread")
    if chat_arguments:
        chats = [chat for value in chat_arguments for chat in parse_chats(value, "--chat")]
    elif user_id := environment.get("USER_ID", ""):
        chats = parse_chats(user_id, "USER_ID")
    else:
        return None
    if topic is not None:
        chats = [chat if chat.topic is not None else replace(chat, topic=topic) for chat in chats]
    return tuple(dict.fromkeys(chats))  # a chat listed twice would get everything twice


def refuse_own_id(chats: tuple[Chat, ...], bot_id: int, source: str) -> None:
    for chat in chats:
        if chat.id == bot_id:
            raise UsageError(
                f"{source} has {chat.id}, the bot's own id (the digits before ':' in API_TOKEN): "
                "a bot cannot write to itself; use your own user id (ask @userinfobot)"
            )


def load_settings(
    environment: dict[str, str],
    chats: tuple[Chat, ...] | None,
    chat_source: str,
    api_url_argument: str | None,
    env_paths: tuple[Path, ...],
) -> Settings:
    token = environment.get("API_TOKEN", "")
    if not token:
        raise not_set("API_TOKEN", env_paths)
    bot_id = check_token(token)
    if chats is None:
        raise not_set("USER_ID", env_paths, " and no --chat was given")
    refuse_own_id(chats, bot_id, chat_source)
    if api_url_argument:
        api_url = check_api_url(api_url_argument, "--api-url")
    elif environment.get("TELEGRAM_API_URL"):
        api_url = check_api_url(environment["TELEGRAM_API_URL"], "TELEGRAM_API_URL")
    else:
        api_url = DEFAULT_API_URL
    return Settings(token=token, chats=chats, api_url=api_url)


# --- Reading the text and the documents ---------------------------------------------------------


def read_text(source: str) -> str:
    """The message text from a file, or from stdin for '-', as UTF-8 whatever the locale."""
    name = "stdin" if source == "-" else source
    try:
        if source == "-" and sys.stdin is None:
            raise UsageError("stdin is closed: nothing to send")
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file (give a FILE, or - to read stdin)") from None
    except OSError as error:
        raise UsageError(f"{name} cannot be read ({error.strerror})") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark from a Windows editor is not text
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{name} is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})"
        ) from None
    if not text.strip():
        raise UsageError(f"{name} is empty: nothing to send")
    return text


def check_documents(paths: list[str]) -> list[Document]:
    """Every --document, checked before anything is sent, so a bad one sends nothing at all."""
    documents = []
    for name in paths:
        path = Path(name)
        try:
            with path.open("rb") as file:  # opening it proves it can be read
                size = os.fstat(file.fileno()).st_size
        except FileNotFoundError:
            raise UsageError(f"--document {name}: no such file") from None
        except OSError as error:
            raise UsageError(f"--document {name} cannot be read ({error.strerror})") from None
        if size == 0:
            raise UsageError(f"--document {name} is empty, and Telegram refuses empty files")
        if size > DOCUMENT_LIMIT_BYTES:
            raise UsageError(
                f"--document {name} is {size:,} bytes, over Telegram's limit for bots "
                f"of 50 MB ({DOCUMENT_LIMIT_BYTES:,} bytes)"
            )
        documents.append(Document(path=path, size=size))
    return documents


# --- Reading the markup -------------------------------------------------------------------------
# Both parsers follow TDLib's parse_markdown_v2 and parse_html (td/telegram/MessageEntity.cpp),
# the code behind the Bot API's parse_mode, rule for rule and with its error texts, so that what
# is refused here is what Telegram refuses, and what is accepted renders as Telegram renders it.
# Positions are reported as line and column instead of TDLib's byte offsets.

# TDLib's is_space(); the end of the text counts too, as its terminating NUL does there.
TDLIB_SPACE = frozenset(" \t\r\n\v")
# A pre block's language ends at a space or a backtick; at the end of the text it is no language.
LANGUAGE_END = TDLIB_SPACE | {"`"}
LANGUAGE_END_AT_END = ("", "`")
MARKDOWN_RESERVED = frozenset("_*[]()~`>#+-=|{}.!\n")
CODE_ENTITIES = frozenset(("Code", "Pre", "PreCode"))
# TDLib's entity names (they appear in its error texts) and the Bot API's.
BOT_API_TYPES = {
    "Bold": "bold",
    "Italic": "italic",
    "Underline": "underline",
    "Strikethrough": "strikethrough",
    "Spoiler": "spoiler",
    "Code": "code",
    "Pre": "pre",
    "PreCode": "pre",
    "TextUrl": "text_link",
    "CustomEmoji": "custom_emoji",
    "BlockQuote": "blockquote",
    "ExpandableBlockQuote": "expandable_blockquote",
}
HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
NAME_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
HTML_NAMED_CHARACTERS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# TDLib's URL rules (HttpUrl.cpp's parse_url, LinkManager.cpp's check_link_impl): the characters
# of a host name (any non-ASCII one too, and %XX escapes), of an IPv6 host, and of the name in a
# tg:, ton: or tonsite: link.
URL_HOST = re.compile(r"(?:[a-z0-9._~!$&'()*+,;=-]|%[0-9a-f]{2}|[^\x00-\x7f])+")
URL_IPV6_HOST = re.compile(r"\[[0-9a-f:.]*\]")
URL_PORT = re.compile(r"[0-9]{1,5}")
LINK_SCHEMES = ("tg:", "ton:", "tonsite:")
LINK_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
# A custom emoji id as TDLib's to_integer_safe<int64> reads it: written the one way the number
# prints, and not 0.
CUSTOM_EMOJI_ID = re.compile(r"-?[1-9][0-9]{0,18}")
UNIX_TIME = re.compile(r"[1-9][0-9]{0,9}")
DATE_FORMAT_LETTERS = frozenset("tTdDwW")
INT64_LIMIT = 2**63
_URL_END = "Can't find end of a URL"


@dataclass
class _Open:
    """Formatting opened in the markup and not closed yet."""

    name: str  # TDLib's entity name (MarkdownV2) or the tag (HTML)
    start: int  # where it starts in the parsed text
    at: int  # where it starts in the markup, for messages
    argument: str = ""
    unix_time: int = 0  # <tg-time unix=...>


def _ascii_lower(text: str) -> str:
    return "".join(char.lower() if char.isascii() else char for char in text)


def _parse_url(url: str) -> tuple[str, str, str, bool, int, str] | None:
    """TDLib's parse_url: (protocol, userinfo, host, is IPv6, port or 0, path and query), or
    None for a URL it refuses."""
    protocol_end = next((i for i, char in enumerate(url) if char in ":/?#@[]"), len(url))
    protocol, rest = "http", url
    if url.startswith("://", protocol_end):
        protocol, rest = _ascii_lower(url[:protocol_end]), url[protocol_end + 3 :]
        if protocol not in ("http", "https"):
            return None
    authority_end = next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))
    authority, query = rest[:authority_end], rest[authority_end:]
    colon, port = len(authority) - 1, 0
    while colon > 0 and authority[colon] not in ":]@":
        colon -= 1
    if colon > 0 and authority[colon] == ":":
        digits = authority[colon + 1 :].lstrip("0") or "0"
        if not URL_PORT.fullmatch(digits) or not 0 < int(digits) <= 65535:
            return None
        authority, port = authority[:colon], int(digits)
    userinfo, _, host = authority.rpartition("@")
    is_ipv6 = len(host) > 1 and host[0] == "[" and host[-1] == "]"
    if is_ipv6:
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    host = _ascii_lower(host)
    if host in ("", ".") or not (URL_IPV6_HOST if is_ipv6 else URL_HOST).fullmatch(host):
        return None
    query = query.rstrip("".join(TDLIB_SPACE) + "\0") or "/"
    query = "".join(f"%{ord(char):02X}" if ord(char) <= 0x20 else char for char in query)
    return protocol, userinfo, host, is_ipv6, port, query if query[0] == "/" else f"/{query}"


def _checked_link(url: str) -> str:
    """The URL a link gets, or "" when Telegram drops the link: LinkManager::check_link_impl.

    http and https to a host with a dot in its name (or an IPv6 address) and a port from 1 to
    65535, and tg:, ton: and tonsite: links to a plain name; anything else (localhost, ftp://,
    a bad port) is dropped, so its text is sent without the link, as Telegram shows it.
    """
    scheme = next((s for s in LINK_SCHEMES if _ascii_lower(url[: len(s)]) == s), "")
    rest = url[len(scheme) :]
    if scheme and rest.startswith("//"):
        rest = rest[2:]
    parsed = _parse_url(rest)
    if parsed is None:
        return ""
    protocol, userinfo, host, is_ipv6, port, query = parsed
    if scheme:
        if _ascii_lower(rest[:7]) == "http://" or protocol == "https" or userinfo or port:
            return ""
        allowed = LINK_NAME_CHARACTERS | ({"."} if scheme == "tonsite:" else set())
        if is_ipv6 or not set(host) <= allowed:
            return ""
        return f"{scheme[:-1]}://{host}{query[1:] if query.startswith('/?') else query}"
    if "." not in host and not is_ipv6:
        return ""
    return (
        f"{protocol}://{f'{userinfo}@' if userinfo else ''}{host}{f':{port}' if port else ''}"
        f"{query}"
    )


def _custom_emoji_id(value: str) -> str:
    """The id of a custom emoji, or "" when Telegram refuses it."""
    valid = CUSTOM_EMOJI_ID.fullmatch(value) and -INT64_LIMIT <= int(value) < INT64_LIMIT
    return value if valid else ""


def _tg_link_parameters(url: str, host: str) -> list[tuple[str, str]] | None:
    """The parameters of a tg://HOST?... link, or None for another link: check_tg_url_host (any
    case for tg: and the host, optional // and a / before the query; no fragment)."""
    if _ascii_lower(url[:3]) != "tg:":
        return None
    rest = url[3:].removeprefix("//")
    if _ascii_lower(rest[: len(host)]) != host or rest[len(host) : len(host) + 1] not in "/?#":
        return None
    rest = rest[len(host) :].removeprefix("/")
    if not rest.startswith("?"):
        return None
    return [
        (key, value)
        for key, _, value in (p.partition("=") for p in rest[1:].partition("#")[0].split("&"))
    ]


def _link_custom_emoji_id(url: str) -> str:
    """The id in a tg://emoji?id=... link (the first id=), or "" for none:
    LinkManager::get_link_custom_emoji_id."""
    for key, value in _tg_link_parameters(url, "emoji") or []:
        if key == "id":
            return _custom_emoji_id(value)
    return ""


def _date_time_format(value: str) -> str | None:
    """A date format (FormattedDate::get_date_flags) as the Bot API writes it back, the short
    precision winning over the long; None for one Telegram refuses."""
    if value in ("r", "R"):
        return "r"
    if not set(value) <= DATE_FORMAT_LETTERS:
        return None
    week = "w" if set(value) & {"w", "W"} else ""
    date = "d" if "d" in value else "D" if "D" in value else ""
    return week + date + ("t" if "t" in value else "T" if "T" in value else "")


def _link_date_time(url: str) -> tuple[int, str] | None:
    """The time and format of a tg://time?unix=...&format=... link, or None for none:
    LinkManager::get_link_formatted_date."""
    unix_time, date_format = 0, ""
    for key, value in _tg_link_parameters(url, "time") or []:
        if key == "unix":
            if not UNIX_TIME.fullmatch(value) or int(value) >= 2**31:
                return None
            unix_time = int(value)
        if key == "format":
            date_format = value
    shown_format = _date_time_format(date_format)
    return None if unix_time == 0 or shown_format is None else (unix_time, shown_format)


def _int32(value: str) -> int:
    """TDLib's to_integer<int32>: a sign and the digits up to the first other character, with
    C's wrap-around."""
    digits = re.match(r"-?([0-9]*)", value)
    assert digits is not None
    number = 0
    for digit in digits.group(1):  # not int(): it refuses thousands of digits
        number = (number * 10 + int(digit)) % 2**32
    number = -number % 2**32 if value.startswith("-") else number
    return number - 2**32 if number >= 2**31 else number


def _link(url: str, offset: int, length: int) -> Entity | None:
    url = _checked_link(url)
    return Entity("text_link", offset, length, url=url) if url else None


def _escape_at(markup: str, position: int) -> bool:
    """A MarkdownV2 backslash escape: any ASCII character from 1 to 126 may follow it."""
    return (
        markup[position] == "\\"
        and position + 1 < len(markup)
        and 0 < ord(markup[position + 1]) <= 126
    )


def _markdown_closes(name: str, markup: str, position: int) -> bool:
    following = markup[position + 1 : position + 2]
    char = markup[position]
    return {
        "Bold": char == "*",
        "Italic": char == "_" and following != "_",
        "Underline": markup.startswith("__", position),
        "Strikethrough": char == "~",
        "Spoiler": markup.startswith("||", position),
        "Code": char == "`",
        "Pre": markup.startswith("```", position),
        "PreCode": markup.startswith("```", position),
        "TextUrl": char == "]",
        "CustomEmoji": char == "]",
        "BlockQuote": False,
    }[name]


def _markdown_url(markup: str, position: int) -> tuple[str, int]:
    """The URL of "(url)" whose "(" ends before position, and where its ")" is; -1 if none."""
    url = []
    while position < len(markup) and markup[position] != ")":
        if _escape_at(markup, position):
            position += 1
        url.append(markup[position])
        position += 1
    return "".join(url), position if position < len(markup) else -1


def parse_markdown(markup: str) -> FormattedText:
    """Telegram's MarkdownV2: the text it shows and the formatting, or MarkupError."""
    mode = "MarkdownV2"  # ParseMode.MARKDOWN_V2
    out: list[str] = []
    entities: list[Entity] = []
    stack: list[_Open] = []
    in_quote = False
    can_start_quote = True  # at the start of a line

    def reserved(position: int) -> MarkupError:
        rule = f"Character '{markup[position]}' is reserved and must be escaped with the preceding"
        return MarkupError(mode, markup, position, rule + " '\\'")

    def unclosed(opened: _Open) -> MarkupError:
        return MarkupError(mode, markup, opened.at, f"Can't find end of {opened.name} entity")

    i = 0
    while i < len(markup):
        char = markup[i]
        if _escape_at(markup, i):
            i += 1
            out.append(markup[i])
            if markup[i] != "\r":
                can_start_quote = markup[i] == "\n"
            i += 1
            continue
        innermost = stack[-1].name if stack else ""
        if char not in ("`" if innermost in CODE_ENTITIES else MARKDOWN_RESERVED):
            out.append(char)
            if char != "\r":
                can_start_quote = False
            i += 1
            continue
        quote_ends = in_quote and char == "\n" and not markup.startswith(">", i + 1)
        if not stack or not (quote_ends or _markdown_closes(innermost, markup, i)):
            at, argument = i, ""
            if char == "_":
                name = "Underline" if markup.startswith("__", i) else "Italic"
                i += name == "Underline"
            elif char in "*~":
                name = "Bold" if char == "*" else "Strikethrough"
            elif char == "|" and markup.startswith("||", i):
                name, i = "Spoiler", i + 1
            elif char == "[":
                name = "TextUrl"
            elif char == "!" and markup.startswith("![", i):
                name, i = "CustomEmoji", i + 1
            elif char == "`" and markup.startswith("```", i):
                i += 3
                name, language_end = "Pre", i
                while language_end < len(markup) and markup[language_end] not in LANGUAGE_END:
                    language_end += 1
                if (
                    i != language_end
                    and markup[language_end : language_end + 1] not in LANGUAGE_END_AT_END
                ):
                    name, argument, i = "PreCode", markup[i:language_end], language_end
                # One line break after the opening (and the language) is not part of the code.
                if markup[i : i + 1] in ("\n", "\r"):
                    pair = markup[i : i + 2]
                    i += 2 if len(pair) == 2 and set(pair) == {"\n", "\r"} else 1
                i -= 1
            elif char == "`":
                name = "Code"
            elif char == "\n":
                out.append(char)
                can_start_quote = True
                i += 1
                continue
            elif char == ">" and can_start_quote:
                i += 1
                if in_quote:
                    continue  # the ">" that continues a quotation on its next line
                name, in_quote = "BlockQuote", True
                stack.append(_Open(name, len(out), at))
                continue
            else:
                raise reserved(i)
            stack.append(_Open(name, len(out), at, argument))
            i += 1
            continue
        # The end of the innermost formatting.
        opened = stack[-1]
        name = opened.name
        if char == "\n" and name != "BlockQuote":
            # Only "||" right before the line break may stand there: it makes the quotation
            # expandable.
            carriage_return = opened.at == i - 3 and out[-1:] == ["\r"]
            if name != "Spoiler" or not (opened.at == i - 2 or carriage_return):
                raise unclosed(opened)
            stack.pop()
            opened = stack[-1]
            if opened.name != "BlockQuote":
                raise unclosed(opened)
            name = "ExpandableBlockQuote"
        skip = len(out) == opened.start  # empty formatting is dropped
        entity: Entity | None = None
        length = len(out) - opened.start
        if name in ("Underline", "Spoiler"):
            i += 1
        elif name in ("Pre", "PreCode"):
            i += 2
        elif name == "TextUrl":
            if markup.startswith("(", i + 1):
                url_at = i + 2
                url, i = _markdown_url(markup, url_at)
                if i < 0:
                    raise MarkupError(mode, markup, url_at, _URL_END)
            else:
                url = "".join(out[opened.start :])
            entity = _link(url, opened.start, length)
            skip = skip or entity is None
        elif name == "CustomEmoji":
            if not markup.startswith("(", i + 1):
                raise MarkupError(
                    mode, markup, opened.at, "The entity must contain a tg://emoji or tg://time URL"
                )
            url_at = i + 2
            url, i = _markdown_url(markup, url_at)
            if i < 0:
                raise MarkupError(mode, markup, url_at, _URL_END)
            emoji_id = _link_custom_emoji_id(url)
            date_time = None if emoji_id else _link_date_time(url)
            if emoji_id:
                entity = Entity("custom_emoji", opened.start, length, custom_emoji_id=emoji_id)
            elif date_time:
                unix_time, date_format = date_time
                entity = Entity(
                    "date_time",
                    opened.start,
                    length,
                    unix_time=unix_time,
                    date_time_format=date_format,
                )
            else:
                raise MarkupError(
                    mode, markup, opened.at, "Invalid tg://emoji or tg://time URL specified"
                )
        elif name in ("BlockQuote", "ExpandableBlockQuote"):
            in_quote = False
            out.append(markup[i])
            can_start_quote = True
            skip = False
            length += 1
        if not skip:
            entities.append(
                entity
                or Entity(BOT_API_TYPES[name], opened.start, length, language=opened.argument)
            )
        stack.pop()
        i += 1
    if in_quote:
        name = "BlockQuote"
        if stack[-1].name == "Spoiler" and stack[-1].at == len(markup) - 2:
            stack.pop()
            name = "ExpandableBlockQuote"
        if stack[-1].name == "BlockQuote":
            opened = stack.pop()
            if len(out) > opened.start:
                entities.append(Entity(BOT_API_TYPES[name], opened.start, len(out) - opened.start))
    if stack:
        raise unclosed(stack[-1])
    return FormattedText("".join(out), _sorted(entities))


def _html_character(markup: str, position: int) -> tuple[str, int] | None:
    """The character an HTML entity at position stands for, and where the entity ends.

    As TDLib: numeric references, and only lt, gt, amp and quot by name; the ';' is optional.
    """
    end, value = position + 1, 0
    if markup.startswith("#", end):
        end += 1
        hexadecimal = markup.startswith("x", end)
        end += hexadecimal
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        start = end
        while end < len(markup) and markup[end] in digits:
            end += 1
        if end - position >= 10:  # first: int() refuses thousands of digits
            return None
        value = int(markup[start:end] or "0", 16 if hexadecimal else 10)
        if value == 0 or value >= 0x10FFFF:
            return None
        character = chr(value)
    else:
        while end < len(markup) and markup[end].isascii() and markup[end].isalpha():
            end += 1
        named = HTML_NAMED_CHARACTERS.get(markup[position + 1 : end])
        if named is None:
            return None
        character = named
    return character, end + markup.startswith(";", end)


def parse_html(markup: str) -> FormattedText:
    """Telegram's HTML: the text it shows and the formatting, or MarkupError."""
    mode = "HTML"  # ParseMode.HTML
    out: list[str] = []
    entities: list[Entity] = []
    stack: list[_Open] = []
    surrogate_at = -1

    def error(position: int, rule: str) -> MarkupError:
        return MarkupError(mode, markup, position, rule)

    def at_space(position: int) -> bool:
        return position >= len(markup) or markup[position] in TDLIB_SPACE

    def skip_spaces(position: int) -> int:
        while position < len(markup) and markup[position] in TDLIB_SPACE:
            position += 1
        return position

    i = 0
    while i < len(markup):
        char = markup[i]
        if char == "&" and (decoded := _html_character(markup, i)):
            if 0xD800 <= ord(decoded[0]) <= 0xDFFF and surrogate_at < 0:
                surrogate_at = i
            character, i = decoded
            out.append(character)
            continue
        if char != "<":
            out.append(char)
            i += 1
            continue
        begin = i
        i += 1
        if not markup.startswith("/", i):
            while not at_space(i) and markup[i] != ">":
                i += 1
            if i >= len(markup):
                raise error(begin, "Unclosed start tag")
            tag = markup[begin + 1 : i].lower()
            if tag not in HTML_TAGS:
                raise error(begin, f'Unsupported start tag "{tag}"')
            argument, unix_time = "", 0
            while not markup.startswith(">", i):
                i = skip_spaces(i)
                if markup.startswith(">", i):
                    break
                name_start = i
                while not at_space(i) and markup[i] not in "=>/\"'":
                    i += 1
                attribute = markup[name_start:i]
                if not attribute:
                    raise error(begin, f'Empty attribute name in the tag "{tag}"')
                i = skip_spaces(i)
                if not markup.startswith("=", i):
                    if i >= len(markup):
                        raise error(begin, f'Unclosed start tag "{tag}"')
                    if tag == "blockquote" and attribute == "expandable":
                        argument = "1"
                    continue
                i = skip_spaces(i + 1)
                if i >= len(markup):
                    raise error(begin, f'Unclosed start tag "{tag}"')
                if markup[i] not in "'\"":
                    # A name token: letters, digits, periods and hyphens, case-insensitive.
                    token_start = i
                    while i < len(markup) and (markup[i] in NAME_TOKEN):
                        i += 1
                    value = markup[token_start:i].lower()
                    if not at_space(i) and markup[i] != ">":
                        raise error(token_start, "Unexpected end of name token")
                else:
                    quote, i = markup[i], i + 1
                    characters = []
                    while i < len(markup) and markup[i] != quote:
                        if markup[i] == "&" and (decoded := _html_character(markup, i)):
                            character, i = decoded
                            characters.append(character)
                            continue
                        characters.append(markup[i])
                        i += 1
                    i += i < len(markup)
                    value = "".join(characters)
                if i >= len(markup):
                    raise error(begin, "Unclosed start tag")
                if (tag, attribute) in (
                    ("a", "href"),
                    ("tg-emoji", "emoji-id"),
                    ("tg-time", "format"),
                ):
                    argument = value
                elif tag == "tg-time" and attribute == "unix":
                    unix_time = _int32(value)
                elif tag == "code" and attribute == "class" and value.startswith("language-"):
                    argument = value.removeprefix("language-")
                elif tag == "span" and attribute == "class" and value.startswith("tg-"):
                    argument = value.removeprefix("tg-")
                elif tag == "blockquote" and attribute == "expandable":
                    argument = "1"
            if tag == "span" and argument != "spoiler":
                raise error(begin, 'Tag "span" must have class "tg-spoiler"')
            stack.append(_Open(tag, len(out), begin, argument, unix_time))
            i += 1
            continue
        # An end tag.
        if not stack:
            raise error(begin, "Unexpected end tag")
        while not at_space(i) and markup[i] != ">":
            i += 1
        end_tag = markup[begin + 2 : i].lower()
        i = skip_spaces(i)
        if not markup.startswith(">", i):
            raise error(begin, "Unclosed end tag")
        opened = stack.pop()
        if end_tag and end_tag != opened.name:
            raise error(
                begin,
                f'Unmatched end tag, expected "</{opened.name}>", found "</{end_tag}>"',
            )
        i += 1
        length = len(out) - opened.start
        if length == 0:
            continue
        kind = HTML_TAGS[opened.name]
        last = entities[-1] if entities else None
        same_span = last is not None and (last.offset, last.length) == (opened.start, length)
        if kind == "text_link":
            link = _link(opened.argument or "".join(out[opened.start :]), opened.start, length)
            entities.extend([link] if link else [])
        elif kind == "date_time":
            date_format = _date_time_format(opened.argument)
            if date_format is None:
                raise error(opened.at, "Invalid date format used")
            if opened.unix_time > 0:
                entities.append(
                    Entity(
                        kind,
                        opened.start,
                        length,
                        unix_time=opened.unix_time,
                        date_time_format=date_format,
                    )
                )
        elif kind == "custom_emoji":
            if not _custom_emoji_id(opened.argument):
                raise error(opened.at, "Invalid custom emoji identifier specified")
            entities.append(Entity(kind, opened.start, length, custom_emoji_id=opened.argument))
        elif kind == "pre" and same_span and last.type == "code" and last.language:
            entities[-1] = replace(last, type="pre")  # <pre><code class="language-x">
        elif kind == "code" and same_span and last.type == "pre" and opened.argument:
            entities[-1] = replace(last, language=opened.argument)
        elif kind == "code":
            entities.append(Entity(kind, opened.start, length, language=opened.argument))
        elif kind == "blockquote" and opened.argument:
            entities.append(Entity("expandable_blockquote", opened.start, length))
        else:
            entities.append(Entity(kind, opened.start, length))
    if stack:
        raise error(
            stack[-1].at, f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"'
        )
    if surrogate_at >= 0:
        raise error(
            surrogate_at,
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units",
        )
    # A language belongs to a pre block only; on inline code TDLib drops it.
    entities = [
        replace(entity, language="") if entity.type == "code" else entity for entity in entities
    ]
    return FormattedText("".join(out), _sorted(entities))


def _sorted(entities: list[Entity]) -> tuple[Entity, ...]:
    """Outer formatting before inner, as TDLib sorts them."""
    return tuple(sorted(entities, key=lambda entity: (entity.offset, -entity.length)))


# The --parse-mode choices. No parse mode goes to Telegram: the text is parsed here and sent with
# entities, so that the cuts fall where Telegram counts. Telegram's names for the two modes are
# spelled out in the parsers' messages rather than taken from aiogram's ParseMode, so that
# reading the markup and a dry run never import aiogram.
PARSERS: dict[str, Callable[[str], FormattedText]] = {
    "none": FormattedText,
    "html": parse_html,
    "markdown": parse_markdown,
}


# --- User-perceived characters (UAX #29 extended grapheme clusters) -----------------------------
# A cut inside a run longer than a message must not split a character as the reader sees it: a
# flag, an emoji with its skin tone or ZWJ sequence, a Hangul syllable written in jamo, a letter
# with its accents or Thai vowel signs, an Indic conjunct. unicodedata has no Grapheme_Cluster_Break
# property, so the classes are derived from the general category plus the short lists below.


class _Grapheme(enum.Enum):
    CR = "CR"
    LF = "LF"
    CONTROL = "Control"
    EXTEND = "Extend"
    ZWJ = "ZWJ"
    REGIONAL_INDICATOR = "Regional_Indicator"
    PREPEND = "Prepend"
    SPACING_MARK = "SpacingMark"
    L = "L"
    V = "V"
    T = "T"
    LV = "LV"
    LVT = "LVT"
    OTHER = "Other"


# Grapheme_Cluster_Break=Prepend (Arabic number signs, some Brahmic-script prefixed letters).
PREPEND = frozenset({
    *range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x0D4E, 0x110BD, 0x110CD,
    0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, *range(0x11A84, 0x11A8A), 0x11D46, 0x11F02,
})  # fmt: skip
# Spacing marks that are Extend all the same (Other_Grapheme_Extend), and letters that are
# SpacingMark (Thai and Lao SARA AM).
OTHER_GRAPHEME_EXTEND = frozenset({
    0x09BE, 0x09D7, 0x0B3E, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E, 0x0D57,
    0x0DCF, 0x0DDF, 0x1B35, 0x200C, 0x302E, 0x302F, 0xFF9E, 0xFF9F, 0x1D165,
    *range(0x1D16E, 0x1D173), *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080),
})  # fmt: skip
SPACING_LETTERS = frozenset([0x0E33, 0x0EB3])
# Emoji-data's Extended_Pictographic, as ranges (start, end inclusive).
PICTOGRAPHIC_RANGES = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328),
    (0x2388, 0x2388), (0x23CF, 0x23CF), (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2),
    (0x25AA, 0x25AB), (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2605),
    (0x2607, 0x2612), (0x2614, 0x2685), (0x2690, 0x2705), (0x2708, 0x2712), (0x2714, 0x2714),
    (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721), (0x2728, 0x2728), (0x2733, 0x2734),
    (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755),
    (0x2757, 0x2757), (0x2763, 0x2767), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0),
    (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50),
    (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299),
    (0x1F000, 0x1F0FF), (0x1F10D, 0x1F10F), (0x1F12F, 0x1F12F), (0x1F16C, 0x1F171),
    (0x1F17E, 0x1F17F), (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AD, 0x1F1E5),
    (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A), (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A),
    (0x1F23C, 0x1F23F), (0x1F249, 0x1F3FA), (0x1F400, 0x1F53D), (0x1F546, 0x1F64F),
    (0x1F680, 0x1F6FF), (0x1F774, 0x1F77F), (0x1F7D5, 0x1F7FF), (0x1F80C, 0x1F80F),
    (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945), (0x1F947, 0x1FAFF), (0x1FC00, 0x1FFFD),
)  # fmt: skip
PICTOGRAPHIC_STARTS = tuple(start for start, _ in PICTOGRAPHIC_RANGES)
# Indic_Conjunct_Break (Unicode 15.1, rule GB9c): a consonant, a virama (Linker) and a consonant
# are one character in Devanagari, Bengali, Gujarati, Oriya, Telugu and Malayalam.
ZERO_WIDTH_NON_JOINER = "\u200c"
INDIC_LINKERS = frozenset([0x094D, 0x09CD, 0x0ACD, 0x0B4D, 0x0C4D, 0x0D4D])
INDIC_CONSONANT_RANGES = (
    (0x0915, 0x0939), (0x0958, 0x095F), (0x0978, 0x097F), (0x0995, 0x09A8), (0x09AA, 0x09B0),
    (0x09B2, 0x09B2), (0x09B6, 0x09B9), (0x09DC, 0x09DD), (0x09DF, 0x09DF), (0x09F0, 0x09F1),
    (0x0A95, 0x0AA8), (0x0AAA, 0x0AB0), (0x0AB2, 0x0AB3), (0x0AB5, 0x0AB9), (0x0AF9, 0x0AF9),
    (0x0B15, 0x0B28), (0x0B2A, 0x0B30), (0x0B32, 0x0B33), (0x0B35, 0x0B39), (0x0B5C, 0x0B5D),
    (0x0B5F, 0x0B5F), (0x0B71, 0x0B71), (0x0C15, 0x0C28), (0x0C2A, 0x0C39), (0x0C58, 0x0C5A),
    (0x0D15, 0x0D3A),
)  # fmt: skip
INDIC_CONSONANT_STARTS = tuple(start for start, _ in INDIC_CONSONANT_RANGES)


def _in_ranges(code: int, ranges: tuple[tuple[int, int], ...], starts: tuple[int, ...]) -> bool:
    index = bisect.bisect_right(starts, code) - 1
    return index >= 0 and code <= ranges[index][1]


@lru_cache(maxsize=4096)
def _grapheme_class(char: str) -> _Grapheme:
    code = ord(char)
    if char in "\r\n":
        return _Grapheme.CR if char == "\r" else _Grapheme.LF
    if code == 0x200D:
        return _Grapheme.ZWJ
    if code in PREPEND:
        return _Grapheme.PREPEND
    category = unicodedata.category(char)
    if category in ("Mn", "Me") or code in OTHER_GRAPHEME_EXTEND:
        return _Grapheme.EXTEND
    if category in ("Cc", "Cf", "Zl", "Zp"):
        return _Grapheme.CONTROL
    if category == "Mc" or code in SPACING_LETTERS:
        return _Grapheme.SPACING_MARK
    if 0x1F1E6 <= code <= 0x1F1FF:
        return _Grapheme.REGIONAL_INDICATOR
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97C:
        return _Grapheme.L
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return _Grapheme.V
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return _Grapheme.T
    if 0xAC00 <= code <= 0xD7A3:
        return _Grapheme.LV if (code - 0xAC00) % 28 == 0 else _Grapheme.LVT
    return _Grapheme.OTHER


def _is_pictographic(char: str) -> bool:
    return _in_ranges(ord(char), PICTOGRAPHIC_RANGES, PICTOGRAPHIC_STARTS)


def _is_indic_consonant(char: str) -> bool:
    return _in_ranges(ord(char), INDIC_CONSONANT_RANGES, INDIC_CONSONANT_STARTS)


HANGUL_JOINS = {
    _Grapheme.L: {_Grapheme.L, _Grapheme.V, _Grapheme.LV, _Grapheme.LVT},  # GB6
    _Grapheme.LV: {_Grapheme.V, _Grapheme.T},  # GB7
    _Grapheme.V: {_Grapheme.V, _Grapheme.T},
    _Grapheme.LVT: {_Grapheme.T},  # GB8
    _Grapheme.T: {_Grapheme.T},
}
BREAK_AROUND = {_Grapheme.CR, _Grapheme.LF, _Grapheme.CONTROL}


def is_grapheme_boundary(text: str, position: int) -> bool:
    """Whether a user-perceived character ends at text[position] (UAX #29, rules GB3-GB999)."""
    if position <= 0 or position >= len(text):
        return True
    before, after = _grapheme_class(text[position - 1]), _grapheme_class(text[position])
    if before is _Grapheme.CR and after is _Grapheme.LF:
        return False  # GB3
    if before in BREAK_AROUND or after in BREAK_AROUND:
        return True  # GB4, GB5
    if after in HANGUL_JOINS.get(before, ()):
        return False  # GB6-GB8
    if after in (_Grapheme.EXTEND, _Grapheme.ZWJ, _Grapheme.SPACING_MARK):
        return False  # GB9, GB9a
    if before is _Grapheme.PREPEND:
        return False  # GB9b
    if _is_indic_consonant(text[position]) and _follows_indic_linker(text, position):
        return False  # GB9c
    if before is _Grapheme.ZWJ and _is_pictographic(text[position]):
        index = position - 2  # GB11: pictograph Extend* ZWJ x pictograph
        while index >= 0 and _grapheme_class(text[index]) is _Grapheme.EXTEND:
            index -= 1
        return not (index >= 0 and _is_pictographic(text[index]))
    if before is after is _Grapheme.REGIONAL_INDICATOR:
        index = position - 1  # GB12, GB13: flags pair regional indicators from the left
        while index >= 0 and _grapheme_class(text[index]) is _Grapheme.REGIONAL_INDICATOR:
            index -= 1
        return (position - 1 - index) % 2 == 0
    return True  # GB999


def _follows_indic_linker(text: str, position: int) -> bool:
    """Whether consonant [Extend Linker]* Linker [Extend Linker]* ends right before position.

    A zero-width non-joiner is there to prevent a conjunct, so it is no InCB Extend.
    """
    index, linked = position - 1, False
    while index >= 0 and (
        ord(text[index]) in INDIC_LINKERS
        or (
            _grapheme_class(text[index]) in (_Grapheme.EXTEND, _Grapheme.ZWJ)
            and text[index] != ZERO_WIDTH_NON_JOINER
        )
    ):
        linked = linked or ord(text[index]) in INDIC_LINKERS
        index -= 1
    return linked and index >= 0 and _is_indic_consonant(text[index])


# --- Splitting ----------------------------------------------------------------------------------


class Boundary(enum.IntEnum):
    """Where a part may end, most preferred first."""

    PARAGRAPH = 0  # right after the line break that ends a blank line
    LINE = 1  # right after a line break
    WORD = 2  # after the spaces that follow a word
    CHARACTER = 3  # inside a word longer than a message, between two user-perceived characters


# Entities that make no sense in halves: a custom emoji stands for one picture, a date_time for
# one moment.
UNCUTTABLE_ENTITIES = frozenset(("custom_emoji", "date_time"))


def _boundary_at(text: str, position: int, need_character: bool) -> Boundary | None:
    """What kind of place text[:position] | text[position:] is to cut at; None for none worth
    knowing (a character boundary is only looked for while none has been found)."""
    before = text[position - 1]
    if before == "\n":
        line_start = text.rfind("\n", 0, position - 1) + 1
        blank_line = not text[line_start : position - 1].strip()
        return Boundary.PARAGRAPH if blank_line else Boundary.LINE
    word_end = before in " \t" and text[position] not in " \t\n"
    if not (word_end or need_character) or not is_grapheme_boundary(text, position):
        return None
    return Boundary.WORD if word_end else Boundary.CHARACTER


class _Uncuttable:
    """The spans a cut must not fall inside, found by bisection: a text can hold thousands."""

    def __init__(self, entities: tuple[Entity, ...]) -> None:
        spans = sorted((e.offset, e.end) for e in entities if e.type in UNCUTTABLE_ENTITIES)
        self.starts = [begin for begin, _ in spans]
        self.reach = list(itertools.accumulate((end for _, end in spans), max))

    def inside(self, position: int) -> bool:
        index = bisect.bisect_left(self.starts, position) - 1  # the last span begun before it
        return index >= 0 and self.reach[index] > position


def _cut(text: str, start: int, limit: int, protected: _Uncuttable) -> int:
    """Where the part starting at start ends: the best boundary within limit characters, else
    the limit itself (a single character longer than a message, a pile of accents)."""
    best: dict[Boundary, int] = {}
    for position in range(start + limit, start, -1):
        if protected.inside(position):
            continue
        kind = _boundary_at(text, position, Boundary.CHARACTER not in best)
        if kind is Boundary.PARAGRAPH and position - start < limit / 2:
            kind = Boundary.LINE  # else a heading over a long paragraph would go alone
        if kind is not None:
            best.setdefault(kind, position)
        if kind is Boundary.PARAGRAPH:
            break  # the last one, and the most preferred: nothing further back can win
    return best[min(best)] if best else start + limit


def _clip(entities: tuple[Entity, ...], start: int, end: int) -> tuple[Entity, ...]:
    """The entities that overlap text[start:end], cut to it and counted from start."""
    clipped = []
    for entity in entities:
        offset, entity_end = max(entity.offset, start), min(entity.end, end)
        if offset < entity_end:
            clipped.append(replace(entity, offset=offset - start, length=entity_end - offset))
    return tuple(clipped)


def split_text(formatted: FormattedText, limit: int = MESSAGE_LIMIT) -> list[FormattedText]:
    """Split a parsed text into parts of at most limit characters (code points), as Telegram
    counts them, each with the formatting that falls inside it.

    A text that fits is one part. Otherwise each part ends right after the last line break that
    ends a blank line, if the part is then at least half full (a heading stays with the start
    of its paragraph), else the last line break, else after the last spaces; only a word longer
    than a whole message is cut inside, between user-perceived characters. A cut goes right
    after a line break. Telegram trims whitespace at the end of a message, and at its start up
    to the first formatting, so the next line's indentation shows at the start of a part only
    inside formatting that continues across the cut, such as a code block. Formatting that spans
    a cut continues in the next part with the same type, link or language. The parts' texts
    joined give the text back exactly.
    """
    text = formatted.text
    protected = _Uncuttable(formatted.entities)
    parts, start = [], 0
    while start < len(text):
        end = len(text) if len(text) - start <= limit else _cut(text, start, limit, protected)
        parts.append(FormattedText(text[start:end], _clip(formatted.entities, start, end)))
        start = end
    return parts


def utf16_length(text: str) -> int:
    """Length as the Bot API counts entity offsets: characters beyond U+FFFF count twice."""
    return len(text) + sum(ord(char) > 0xFFFF for char in text)


# --- Sending ------------------------------------------------------------------------------------
# aiogram is imported where it is used: building its types takes seconds, and a dry run or a
# configuration error should not wait for that.

# Answers of 400 that concern the message itself, so no other chat would take it either. Any
# other 400 (not found, no rights, topic closed, ...) concerns the chat alone.
MESSAGE_FAULTS = (
    "message is too long",
    "message text is empty",
    "text must be non-empty",
    "entities",
    "entity url",
    "wrong file",
    "file must be non-empty",
)


def _not_found_hint(chat: Chat) -> str:
    if chat.is_group_or_channel:
        return (
            "add the bot to the group or channel (a channel needs it as an administrator), "
            "and check that USER_ID (or --chat) is its id"
        )
    return (
        "the user must open the bot in Telegram and press Start, and USER_ID (or --chat) "
        "must be their chat id"
    )


def _refusal(error: TelegramAPIError, what: str, chat: Chat) -> SendError:
    """The line to show for an answer that no retry can change."""
    from aiogram.exceptions import (
        TelegramBadRequest,
        TelegramEntityTooLarge,
        TelegramForbiddenError,
        TelegramMigrateToChat,
        TelegramNotFound,
        TelegramUnauthorizedError,
    )

    description = error.message
    if isinstance(error, TelegramUnauthorizedError):
        return SendError(
            f"Telegram rejected the bot token ({description}): check API_TOKEN against the "
            "token @BotFather gave"
        )
    if isinstance(error, TelegramNotFound):
        return SendError(
            f"the Bot API server answered 404 ({description}): "
            "check API_TOKEN and TELEGRAM_API_URL (or --api-url)"
        )
    if isinstance(error, TelegramMigrateToChat):
        return ChatRefused(
            f"chat {chat} is now a supergroup with id {error.migrate_to_chat_id}: "
            "put that id in USER_ID (or --chat)"
        )
    if isinstance(error, TelegramForbiddenError):
        return ChatRefused(
            f"Telegram refused {what} to chat {chat} ({description}): the user must open the "
            "bot, press Start and not block it; a group or channel must have the bot as a member"
        )
    if isinstance(error, TelegramEntityTooLarge):
        return SendError(f"Telegram refused {what} as too large ({description})")
    if "can't parse entities" in description.lower():
        # The formatting was read here by Telegram's rules; a Bot API server that reads it
        # differently (a newer or older TDLib) can still refuse it.
        return SendError(
            f"Telegram could not read the formatting of {what} ({description}): "
            "send it with --parse-mode none"
        )
    if isinstance(error, TelegramBadRequest) and "chat not found" in description.lower():
        return ChatRefused(f"chat {chat} not found: {_not_found_hint(chat)}")
    if isinstance(error, TelegramBadRequest) and not any(
        fault in description.lower() for fault in MESSAGE_FAULTS
    ):
        return ChatRefused(f"Telegram refused {what} to chat {chat}: {description}")
    return SendError(f"Telegram refused {what} to chat {chat}: {description}")


async def send_with_retries(
    request: Callable[[], Awaitable[object]], what: str, chat: Chat
) -> None:
    """Make one request until Telegram accepts it, waiting out flood control and retrying
    server errors and unreachable servers; never repeat a request that may have arrived.

    The retry loop is this tool's own rather than an aiogram middleware: which failures may be
    retried depends on whether the request can have reached Telegram, which only the
    exception's cause tells.
    """
    import aiohttp
    from aiogram.exceptions import (
        ClientDecodeError,
        TelegramAPIError,
        TelegramEntityTooLarge,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
    )

    # Failures of a request that never reached the server. aiohttp 3.9, which aiogram still
    # allows, has no ConnectionTimeoutError: there a connect timeout is not retried, the safe side.
    never_sent = (
        aiohttp.ClientConnectorError,
        getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError),
    )

    target = f"{what} to chat {chat}"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        delay = FIRST_RETRY_DELAY * 2 ** (attempt - 1)
        try:
            await request()
            return
        except TelegramRetryAfter as error:
            if error.retry_after > LONGEST_FLOOD_WAIT:
                raise SendError(
                    f"Telegram's flood control asks to wait {error.retry_after} s before {target}, "
                    f"longer than the {LONGEST_FLOOD_WAIT} s this tool waits: try again later"
                ) from None
            problem = f"Telegram's flood control still asked to wait ({error.retry_after} s)"
            delay = error.retry_after + FLOOD_WAIT_MARGIN
        except TelegramServerError as error:
            problem = f"the Bot API server kept failing ({error.message})"
        except ClientDecodeError:
            problem = (
                "the Bot API server kept answering with something other than Bot API JSON "
                "(a proxy's error page?)"
            )
        except TelegramEntityTooLarge as error:  # an HTTP 413, before other network errors
            raise _refusal(error, what, chat) from None
        except TelegramNetworkError as error:
            # aiogram before 3.25 raises it inside the except clause, without "from".
            cause = error.__cause__ or error.__context__
            if isinstance(cause, aiohttp.ClientResponseError):  # a redirect loop, for one
                raise SendError(
                    f"the server at the Bot API URL answered {target} with {error.message}: "
                    "check TELEGRAM_API_URL (or --api-url)"
                ) from None
            # Only a request that never reached the server is safe to make again.
            if not isinstance(cause, never_sent):
                raise SendError(
                    f"the request for {target} failed after it was sent ({error.message}); "
                    "not sent again, since Telegram may have received it"
                ) from None
            problem = f"cannot reach the Bot API server ({error.message})"
        except TelegramAPIError as error:
            raise _refusal(error, what, chat) from None
        if attempt < MAX_ATTEMPTS:
            await asyncio.sleep(delay)
    raise SendError(f"gave up on {target} after {MAX_ATTEMPTS} attempts: {problem}")


def _upload_timeout(size: int) -> int:
    return REQUEST_TIMEOUT + size // SLOWEST_UPLOAD_BYTES_PER_SECOND


@dataclass
class Progress:
    """What has gone to which chat so far, to say when the run is stopped by a signal."""

    chats: tuple[Chat, ...] = ()
    total_messages: int = 0
    delivered: dict[Chat, list[str]] = field(default_factory=dict)
    refused: list[Chat] = field(default_factory=list)
    in_flight: tuple[Chat, str] | None = None  # sent, and no answer yet

    async def attempt(
        self, chat: Chat, what: str, request: Callable[[], Awaitable[object]]
    ) -> None:
        """Make the request, in flight only while it is under way: not while a retry waits."""
        self.in_flight = (chat, what)
        try:
            await request()
        except Exception:  # its failure is reported as it is; a cancellation leaves it in flight
            self.in_flight = None
            raise
        self.in_flight = None

    def summary(self) -> str:
        said = []
        for chat in self.chats:
            got = self.delivered.get(chat, [])
            if got:
                said.append(f"chat {chat} got {self._items(got)}")
            if chat in self.refused:
                said.append(f"chat {chat} refused")
            elif self.in_flight and self.in_flight[0] == chat:
                said.append(f"{self.in_flight[1]} to chat {chat} may or may not have arrived")
            elif not got:
                said.append(f"nothing went to chat {chat}")
        return "; ".join(said) or "nothing was sent"

    def _items(self, items: list[str]) -> str:
        messages = sum(item.startswith("message ") for item in items)
        documents = [item for item in items if not item.startswith("message ")]
        said = [f"message 1/{self.total_messages}"] if messages == 1 else []
        if messages > 1:
            said.append(f"messages 1-{messages} of {self.total_messages}")
        return ", ".join(said + documents)


async def send_all(
    settings: Settings,
    messages: list[FormattedText],
    documents: list[Document],
    options: SendOptions,
    report: Callable[[str], None],
    progress: Progress,
) -> bool:
    """Send the messages, then the documents, to each chat in turn, one request at a time.

    A chat that refuses (blocked, not found, no rights, migrated) is reported and skipped; any
    other failure stops everything. Returns whether every chat got everything.
    """
    from aiogram import Bot
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import FSInputFile, MessageEntity

    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_url))
    # No parse_mode: each part goes with its entities, parsed here (see PARSERS). Silence is
    # passed with each request: aiogram's send methods do not read it from the defaults.
    defaults = DefaultBotProperties(link_preview_is_disabled=options.no_preview or None)
    silent = options.silent or None
    everything_sent = True
    async with Bot(settings.token, session=session, default=defaults) as bot:
        for chat in settings.chats:
            requests: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                (
                    f"message {number}/{len(messages)}",
                    partial(
                        bot.send_message,
                        chat_id=chat.id,
                        message_thread_id=chat.topic,
                        text=part.text,
                        disable_notification=silent,
                        entities=[
                            MessageEntity(**_bot_api_entity(part.text, entity))
                            for entity in part.entities
                        ]
                        or None,
                    ),
                )
                for number, part in enumerate(messages, 1)
            ]
            requests += [
                (
                    f"document {document.path.name}",
                    partial(
                        bot.send_document,
                        chat_id=chat.id,
                        message_thread_id=chat.topic,
                        document=FSInputFile(document.path),
                        disable_notification=silent,
                        request_timeout=_upload_timeout(document.size),
                    ),
                )
                for document in documents
            ]
            try:
                for number, (what, request) in enumerate(requests):
                    if number:
                        await asyncio.sleep(SECONDS_BETWEEN_MESSAGES)
                    attempt = partial(progress.attempt, chat, what, request)
                    await send_with_retries(attempt, what, chat)
                    progress.delivered.setdefault(chat, []).append(what)
            except ChatRefused as refusal:
                progress.refused.append(chat)
                report(str(refusal))
                everything_sent = False
    return everything_sent


def _bot_api_entity(text: str, entity: Entity) -> dict[str, object]:
    """An Entity as the Bot API takes it: offsets and lengths in UTF-16 code units."""
    described: dict[str, object] = {
        "type": entity.type,
        "offset": utf16_length(text[: entity.offset]),
        "length": utf16_length(text[entity.offset : entity.end]),
    }
    if entity.url:
        described["url"] = entity.url
    if entity.language:
        described["language"] = entity.language
    if entity.unix_time:
        described["unix_time"] = entity.unix_time
    if entity.date_time_format:
        described["date_time_format"] = entity.date_time_format
    if entity.custom_emoji_id:
        described["custom_emoji_id"] = entity.custom_emoji_id
    return described


# --- Output -------------------------------------------------------------------------------------


def redact(text: str, token: str) -> str:
    """text without the bot token. The secret half is hidden on its own too, in case a URL was
    re-encoded around the colon. A value of digits alone is a bot id, which is public, and one
    shorter than SHORTEST_SECRET is a placeholder such as TOKEN, whose hiding would only garble
    the line; in a request URL, after "bot", the token is hidden however short. Every line this
    tool prints about a failure passes through here."""
    if token.partition(":")[2]:
        text = text.replace(f"bot{token}", "bot***")
    for secret in (token, token.partition(":")[2]):
        if len(secret) >= SHORTEST_SECRET and not secret.isdigit():
            text = text.replace(secret, "***")
    return text


def print_error(message: str, token: str) -> None:
    one_line = " ".join(message.split())
    print(f"{PROG}: {redact(one_line, token)}", file=sys.stderr)


def print_dry_run(messages: list[FormattedText], documents: list[Document]) -> None:
    for number, part in enumerate(messages, 1):
        formatting = f", {len(part.entities)} formatting entities" if part.entities else ""
        print(f"--- message {number}/{len(messages)}: {len(part.text)} characters{formatting} ---")
        print(part.text, end="" if part.text.endswith("\n") else "\n")
    for number, document in enumerate(documents, 1):
        print(
            f"--- document {number}/{len(documents)}: {document.path} ({document.size:,} bytes) ---"
        )


# --- Command line -------------------------------------------------------------------------------

EXAMPLES = f"""\
examples:
  python tg_bot.py                          send message.txt to the chats in USER_ID
  df -h | python tg_bot.py - --chat=-100123456789:42 --silent
                                            stdin to topic 42 of a forum group, quietly
  python tg_bot.py report.html --parse-mode html --document report.csv --dry-run

A chat is a number (negative for groups and channels), or @channelname, with :TOPIC for a forum
topic; write a negative id after --chat with '=', as in --chat=-100123456789.
Settings: API_TOKEN, USER_ID and TELEGRAM_API_URL (default {DEFAULT_API_URL}) from the
environment, else from .env in the current directory, else from .env beside this script (see
.env.example). Exit status: 0 sent, 1 sending failed, 2 usage or configuration error, 130
interrupted, 143 terminated."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the usage too; a usage error is one line like every other.
        if "--chat: expected one argument" in message:
            message += " (write a negative chat id as --chat=-100123456789)"
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description="Send a text file, and optionally some documents, to Telegram chats "
        "through a bot.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help=f"the message text; - reads stdin (default: {DEFAULT_MESSAGE_FILE}, or no text "
        "when --document is given)",
    )
    parser.add_argument(
        "--chat",
        action="append",
        dest="chats",
        metavar="ID[:TOPIC]",
        help="a chat to send to, repeatable (default: the chats in USER_ID)",
    )
    parser.add_argument(
        "--thread",
        metavar="ID",
        help="the forum topic (message_thread_id) for every chat that names none "
        "(default: none, the chat itself)",
    )
    parser.add_argument(
        "--api-url",
        metavar="URL",
        help=f"base URL of a Bot API server (default: TELEGRAM_API_URL, else {DEFAULT_API_URL})",
    )
    parser.add_argument(
        "--parse-mode",
        choices=PARSERS,
        default="none",
        help="how the text is read: none (as it is), html, or markdown (MarkdownV2) "
        "(default: none)",
    )
    parser.add_argument(
        "--silent", action="store_true", help="no notification sound (default: with sound)"
    )
    parser.add_argument(
        "--no-preview", action="store_true", help="no link preview (default: with preview)"
    )
    parser.add_argument(
        "--document",
        action="append",
        dest="documents",
        default=[],
        metavar="PATH",
        help="also send this file as a document, after the text; repeatable, up to 50 MB "
        "each (default: none)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the messages that would be sent and send nothing; no token needed",
    )
    return parser


async def run(
    args: argparse.Namespace,
    environment: dict[str, str],
    env_paths: tuple[Path, ...],
    report: Callable[[str], None],
    progress: Progress,
) -> ExitStatus:
    """Settings, then the text and documents, then the parse and the split, then the dry run or
    the sending."""
    chats = load_chats(environment, args.chats, args.thread)
    chat_source = "--chat" if args.chats else "USER_ID"
    settings = None
    if not args.dry_run:
        settings = load_settings(environment, chats, chat_source, args.api_url, env_paths)
    elif chats and (token := BOT_TOKEN.fullmatch(environment.get("API_TOKEN", ""))):
        refuse_own_id(chats, int(token.group(1)), chat_source)
    source = args.file or (None if args.documents else DEFAULT_MESSAGE_FILE)
    text = read_text(source) if source else ""
    documents = check_documents(args.documents)
    messages = [part for part in split_text(PARSERS[args.parse_mode](text)) if not part.blank]
    if source and not messages:
        name = "stdin" if source == "-" else source
        raise UsageError(f"{name} has no text once its markup is read: nothing to send")
    if settings is None:
        print_dry_run(messages, documents)
        return ExitStatus.SENT
    progress.chats, progress.total_messages = settings.chats, len(messages)
    options = SendOptions(silent=args.silent, no_preview=args.no_preview)
    with _signals_cancel_sending():
        everything_sent = await send_all(settings, messages, documents, options, report, progress)
    return ExitStatus.SENT if everything_sent else ExitStatus.SEND_FAILED


# What the one line says, and the exit status, for each signal that stops the run.
STOPPED_BY = {
    signal.SIGINT: ("interrupted", ExitStatus.INTERRUPTED),
    signal.SIGTERM: ("terminated", ExitStatus.TERMINATED),
}


@contextlib.contextmanager
def _signals_cancel_sending() -> Iterator[None]:
    """While sending, SIGINT and SIGTERM cancel the sending task, so that the session is closed
    and what was sent can be told; the cancellation comes out as Interrupted."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def cancel(signum: int) -> None:
        received.append(signum)
        task.cancel()

    installed = {}
    for signum in STOPPED_BY:
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN:
            continue  # started in the background with the signal ignored: keep it so
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # Windows, threads
            loop.add_signal_handler(signum, cancel, signum)
            installed[signum] = previous
    try:
        yield
    except asyncio.CancelledError:
        if not received:
            raise
        raise Interrupted(received[0]) from None
    finally:
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, previous)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


async def main(argv: list[str] | None = None) -> int:
    """The command: returns its exit status, with any failure already printed as one line."""
    token = ""
    progress = Progress()
    try:
        env_paths = load_env_file()
        environment = dict(os.environ)
        token = environment.get("API_TOKEN", "")  # read first, so every line can be redacted
        args = build_parser().parse_args(argv)
        return await run(
            args, environment, env_paths, lambda line: print_error(line, token), progress
        )
    except Interrupted as interruption:
        outcome, status = STOPPED_BY[signal.Signals(interruption.signum)]
        print_error(f"{outcome}: {progress.summary()}", token)
        return status
    except ToolError as error:
        print_error(str(error), token)
        return error.exit_status
    except BrokenPipeError:
        # Whoever read the dry run stopped early (| head); as Python's documentation advises,
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.SEND_FAILED
    except ModuleNotFoundError as missing:  # aiogram is imported only when sending
        print_error(MISSING_MODULE.format(name=missing.name, python=sys.executable), token)
        return ExitStatus.USAGE
    except Exception:
        # A bug, not a user error: keep the traceback, but never with the token in it.
        sys.stderr.write(redact(traceback.format_exc(), token))
        return ExitStatus.SEND_FAILED


if __name__ == "__main__":
    # Until the sending starts, a signal raises Interrupted wherever the program is (reading a
    # slow stdin, say); SIGTERM would otherwise end the process without a word.
    for signum in STOPPED_BY:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupted)
    sys.exit(asyncio.run(main()))

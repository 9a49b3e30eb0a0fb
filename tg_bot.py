"""Send a text file, and optionally some documents, to Telegram chats through a bot.

    python tg_bot.py [FILE | -] [--chat ID] [--parse-mode {none,html,markdown}] [--silent]
                     [--no-preview] [--document PATH] [--api-url URL] [--dry-run]

The text (default message.txt in the current directory; - reads stdin) goes to every chat in
USER_ID, or in --chat, through the bot whose token is API_TOKEN. Settings come from the
environment or from .env in the current directory; variables already set win. Text longer than
Telegram's 4096 characters is sent as several messages, split at paragraph, then line, then word
boundaries, in order, with nothing lost, added or reordered. Flood control is waited out, failed
connections and server errors are retried a few times, and a message Telegram accepted is never
sent again. Exit status: 0 sent, 1 sending failed, 2 usage or configuration error, 130
interrupted. Every failure is one line on stderr, and the bot token never appears in it.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import re
import sys
import traceback
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from dotenv import dotenv_values

if TYPE_CHECKING:
    from aiogram.exceptions import TelegramAPIError

PROG = "tg_bot.py"
DEFAULT_MESSAGE_FILE = "message.txt"
DEFAULT_API_URL = "https://api.telegram.org"

# Bot API sendMessage: "1-4096 characters after entities parsing". Markup is counted too, which
# never undercounts what Telegram sees, so no formatted piece can be rejected as too long.
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
# anything else would only fail later, with the token inside a request URL.
BOT_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
# A chat id is a number (negative for groups and channels) or a public @username.
CHAT_ID = re.compile(r"-?[0-9]+|@[A-Za-z][A-Za-z0-9_]*")
# Telegram's names for the --parse-mode choices; none sends the text as it is.
PARSE_MODES: dict[str, str | None] = {"none": None, "html": "HTML", "markdown": "MarkdownV2"}

ZERO_WIDTH_JOINER = "\u200d"
# A piece boundary goes only after whitespace that ordinary text breaks at (not NBSP).
BREAKING_WHITESPACE = frozenset(" \t\r\n\f\v")

# Telegram HTML: tags (quoted attribute values may hold '>') and the entities it decodes.
HTML_TAG = re.compile(r"""<(/?)([A-Za-z][A-Za-z0-9-]*)(?:[^>"']|"[^"]*"|'[^']*')*>""")
HTML_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
# MarkdownV2 markers that switch formatting on and off. Longest first: Telegram reads "__" as
# underline greedily, before "_" as italic.
MARKDOWN_TOGGLES = ("||", "__", "*", "_", "~")


class ExitStatus(enum.IntEnum):
    SENT = 0
    SEND_FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


class ToolError(Exception):
    """A failure the user can act on: printed as one line, and the process exits with its status."""

    exit_status = ExitStatus.SEND_FAILED


class UsageError(ToolError):
    """Bad arguments, settings or input, found before anything is sent."""

    exit_status = ExitStatus.USAGE


class MarkupError(UsageError):
    """Formatted text too long for one message whose markup this tool cannot split safely."""


class SendError(ToolError):
    """Telegram or the network refused; nothing more can be sent."""


class ChatRefused(SendError):
    """One chat cannot receive messages; the other chats still can."""


ChatId = int | str


@dataclass(frozen=True)
class Settings:
    token: str
    chats: tuple[ChatId, ...]
    api_url: str


@dataclass(frozen=True)
class Document:
    path: Path
    size: int


@dataclass(frozen=True)
class SendOptions:
    parse_mode: str | None
    silent: bool
    no_preview: bool


class TokenKind(enum.Enum):
    TEXT = "text"  # one character of the text
    ATOM = "atom"  # visible, but never cut inside: an HTML entity, a MarkdownV2 escape
    OPEN = "open"  # starts formatting that a cut must close and reopen
    CLOSE = "close"  # ends the innermost open formatting


@dataclass(frozen=True, slots=True)
class Token:
    raw: str
    kind: TokenKind
    name: str = ""  # for OPEN: what its CLOSE must match (a tag name, a MarkdownV2 marker)
    reopen: str = ""  # for OPEN: what starts the same formatting at the top of the next piece
    closer: str = ""  # for OPEN: what ends it at the bottom of a piece

    @property
    def visible(self) -> bool:
        return self.kind is TokenKind.ATOM or (
            self.kind is TokenKind.TEXT and not self.raw.isspace()
        )


@dataclass(frozen=True)
class Piece:
    """One message: a slice of the original text, with formatting closed and reopened around it.

    The bodies of all pieces, joined, give the original text back exactly.
    """

    body: str
    reopen: str = ""
    close: str = ""
    # Only whitespace: Telegram refuses a blank message (and trims whitespace anyway).
    blank: bool = False

    @property
    def text(self) -> str:
        return self.reopen + self.body + self.close


class Boundary(enum.IntEnum):
    """Where a piece may end, most preferred first."""

    PARAGRAPH = 0  # after whitespace holding a blank line
    LINE = 1  # after a line break
    WORD = 2  # after spaces
    CHARACTER = 3  # inside a word longer than a message, between two whole characters
    ANY = 4  # anywhere else: a whitespace run longer than a message, a pile of combining marks


# --- Settings -----------------------------------------------------------------------------------


def read_environment() -> dict[str, str]:
    """The environment over .env in the current directory (set variables win, as with a shell)."""
    try:
        from_file = dotenv_values(".env")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f".env cannot be read ({error})") from None
    return {**{key: value for key, value in from_file.items() if value is not None}, **os.environ}


def parse_chat_ids(value: str, source: str) -> list[ChatId]:
    """The chats in a comma-separated list such as USER_ID; numbers become ints."""
    chats: list[ChatId] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if not CHAT_ID.fullmatch(item):
            raise UsageError(
                f"{source} has {item!r}, which is not a chat id "
                "(a number such as 123456789, or @channelname)"
            )
        chats.append(item if item.startswith("@") else int(item))
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


def load_settings(
    environment: dict[str, str], chat_arguments: list[str] | None, api_url_argument: str | None
) -> Settings:
    token = environment.get("API_TOKEN", "")
    if not token:
        raise UsageError(
            "API_TOKEN is not set: put the bot's token in the environment or in .env "
            "(see .env.example)"
        )
    if not BOT_TOKEN.fullmatch(token):
        raise UsageError(
            "API_TOKEN is not a bot token: it must look like 123456789:AAE... "
            "(digits, a colon, the secret), as @BotFather gives it"
        )
    if chat_arguments:
        chats = [chat for value in chat_arguments for chat in parse_chat_ids(value, "--chat")]
    elif user_id := environment.get("USER_ID", ""):
        chats = parse_chat_ids(user_id, "USER_ID")
    else:
        raise UsageError(
            "USER_ID is not set and no --chat was given: put the chat id in the environment "
            "or in .env (see .env.example)"
        )
    if api_url_argument:
        api_url = check_api_url(api_url_argument, "--api-url")
    elif environment.get("TELEGRAM_API_URL"):
        api_url = check_api_url(environment["TELEGRAM_API_URL"], "TELEGRAM_API_URL")
    else:
        api_url = DEFAULT_API_URL
    return Settings(token=token, chats=tuple(chats), api_url=api_url)


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


# --- Splitting ----------------------------------------------------------------------------------


def _markup_error(mode: str, problem: str) -> MarkupError:
    return MarkupError(
        f"the text is longer than one message and its {mode} cannot be split safely: "
        f"{problem}; fix the markup or use --parse-mode none"
    )


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def tokenize_plain(text: str) -> list[Token]:
    return [Token(char, TokenKind.TEXT) for char in text]


def tokenize_html(text: str) -> list[Token]:
    """Telegram HTML: tags open and close formatting, entities are single characters."""
    tokens: list[Token] = []
    open_tags: list[tuple[Token, int]] = []
    position = 0
    while position < len(text):
        char = text[position]
        tag = HTML_TAG.match(text, position) if char == "<" else None
        entity = HTML_ENTITY.match(text, position) if char == "&" else None
        if tag:
            raw, name = tag.group(0), tag.group(2).lower()
            if tag.group(1):
                if not open_tags or open_tags[-1][0].name != name:
                    raise _markup_error(
                        "HTML", f"{raw} at line {_line_of(text, position)} closes no open <{name}>"
                    )
                open_tags.pop()
                tokens.append(Token(raw, TokenKind.CLOSE))
            elif raw.endswith("/>"):
                tokens.append(Token(raw, TokenKind.ATOM))
            else:
                token = Token(raw, TokenKind.OPEN, name=name, reopen=raw, closer=f"</{name}>")
                open_tags.append((token, position))
                tokens.append(token)
            position = tag.end()
        elif entity:
            tokens.append(Token(entity.group(0), TokenKind.ATOM))
            position = entity.end()
        else:
            tokens.append(Token(char, TokenKind.TEXT))
            position += 1
    if open_tags:
        token, opened_at = open_tags[-1]
        raise _markup_error(
            "HTML", f"{token.raw} at line {_line_of(text, opened_at)} is never closed"
        )
    return tokens


def _markdown_link_close(text: str, position: int) -> tuple[int, int] | None:
    """Where the "](url)" that ends a MarkdownV2 link begins and ends, searching from position."""
    while position < len(text) and text[position] != "]":
        position += 2 if text[position] == "\\" else 1
    if not text.startswith("](", position):
        return None
    end = position + 2
    while end < len(text) and text[end] != ")":
        end += 2 if text[end] == "\\" else 1
    return (position, end + 1) if end < len(text) else None


def _markdown_pre_opener(text: str, position: int) -> tuple[str, str]:
    """The raw opening of a ``` block at position, and how to reopen it in the next piece.

    Like Telegram: non-space characters right after ``` name the language, and one line break
    after that is not part of the code. The reopening always ends in that line break, so the
    code continuing in the next piece is never mistaken for a language name.
    """
    start = end = position + 3
    while end < len(text) and not text[end].isspace() and text[end] != "`":
        end += 1
    language = text[start:end] if end < len(text) and text[end] != "`" else ""
    end = start + len(language)
    if text.startswith("\n", end):
        end += 1
    return text[position:end], f"```{language}\n"


def tokenize_markdown(text: str) -> list[Token]:
    """Telegram MarkdownV2: toggled markers, code and pre blocks, links, escapes, quotes."""
    tokens: list[Token] = []
    stack: list[tuple[Token, int]] = []  # open formatting and where it opened
    link_closes: dict[int, str] = {}  # where the "](url)" of an open link starts -> that text
    expandable_quote = False
    position = 0
    while position < len(text):
        char = text[position]
        innermost = stack[-1][0].name if stack else ""
        at_line_start = position == 0 or text[position - 1] == "\n"
        if at_line_start and not text.startswith((">", "**>"), position):
            expandable_quote = False
        if char == "\\" and position + 1 < len(text):
            token = Token(text[position : position + 2], TokenKind.ATOM)
        elif innermost in ("`", "```"):
            # Inside code, only escapes and the closing marker mean anything.
            is_end = text.startswith(innermost, position)
            token = Token(innermost, TokenKind.CLOSE) if is_end else Token(char, TokenKind.TEXT)
        elif position in link_closes:
            if innermost != "[":
                raise _markup_error(
                    "MarkdownV2",
                    f"formatting inside the link ending at line {_line_of(text, position)} "
                    "is not closed before it",
                )
            token = Token(link_closes.pop(position), TokenKind.CLOSE)
        elif at_line_start and text.startswith(("**>", ">"), position):
            # A block quotation line; a cut inside a long one leaves the rest unquoted.
            expandable_quote = expandable_quote or char == "*"
            token = Token("**>" if char == "*" else ">", TokenKind.ATOM)
        elif (
            expandable_quote
            and innermost != "||"
            and text.startswith("||", position)
            and (position + 2 == len(text) or text[position + 2] == "\n")
        ):
            token = Token("||", TokenKind.ATOM)  # ends an expandable quotation: not a spoiler
        elif text.startswith("```", position):
            raw, reopen = _markdown_pre_opener(text, position)
            token = Token(raw, TokenKind.OPEN, name="```", reopen=reopen, closer="```")
        elif char == "`":
            token = Token("`", TokenKind.OPEN, name="`", reopen="`", closer="`")
        elif text.startswith(("[", "!["), position):
            raw = "[" if char == "[" else "!["
            close = _markdown_link_close(text, position + len(raw))
            if close is None:
                line = _line_of(text, position)
                raise _markup_error("MarkdownV2", f"the {raw} at line {line} starts no link")
            link_closes[close[0]] = text[close[0] : close[1]]
            token = Token(raw, TokenKind.OPEN, name="[", reopen=raw, closer=link_closes[close[0]])
        elif marker := next((m for m in MARKDOWN_TOGGLES if text.startswith(m, position)), ""):
            if innermost == marker:
                token = Token(marker, TokenKind.CLOSE)
            elif any(token.name == marker for token, _ in stack):
                raise _markup_error(
                    "MarkdownV2",
                    f"the {marker} at line {_line_of(text, position)} closes formatting "
                    "that is not the innermost",
                )
            else:
                token = Token(marker, TokenKind.OPEN, name=marker, reopen=marker, closer=marker)
        else:
            token = Token(char, TokenKind.TEXT)
        if token.kind is TokenKind.OPEN:
            stack.append((token, position))
        elif token.kind is TokenKind.CLOSE:
            stack.pop()
        tokens.append(token)
        position += len(token.raw)
    if stack:
        token, opened_at = stack[-1]
        raise _markup_error(
            "MarkdownV2",
            f"the {token.raw.strip()} at line {_line_of(text, opened_at)} is never closed",
        )
    return tokens


TOKENIZERS: dict[str, Callable[[str], list[Token]]] = {
    "none": tokenize_plain,
    "html": tokenize_html,
    "markdown": tokenize_markdown,
}


def _continues_character(char: str) -> bool:
    """Whether char belongs to the character before it (so no cut may go between them)."""
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")  # accents, variation selectors
        or char == ZERO_WIDTH_JOINER
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # emoji skin tones
        or "\U000e0020" <= char <= "\U000e007f"  # emoji tag sequences (subdivision flags)
    )


def _splits_character(tokens: list[Token], end: int) -> bool:
    following = tokens[end]
    return tokens[end - 1].raw == ZERO_WIDTH_JOINER or (
        following.kind is TokenKind.TEXT and _continues_character(following.raw)
    )


def _line_of_tokens(tokens: list[Token], index: int) -> int:
    return sum(token.raw.count("\n") for token in tokens[:index]) + 1


def _next_cut(
    tokens: list[Token], start: int, open_formatting: tuple[Token, ...], limit: int, mode: str
) -> tuple[int, tuple[Token, ...]]:
    """Where the piece starting at tokens[start] ends, and the formatting still open there.

    Walks forward as far as the piece, with its reopened and closed formatting, still fits,
    remembering the last place of each Boundary kind, and takes the most preferred one.
    """
    stack = list(open_formatting)
    length = sum(len(token.reopen) for token in stack)
    closing = sum(len(token.closer) for token in stack)
    best: dict[Boundary, tuple[int, tuple[Token, ...]]] = {}
    newlines_in_run = 0
    after_space = has_visible = False
    for index in range(start, len(tokens)):
        token = tokens[index]
        length += len(token.raw)
        if length > limit:
            break
        if token.kind is TokenKind.OPEN:
            stack.append(token)
            closing += len(token.closer)
            after_space = False
        elif token.kind is TokenKind.CLOSE:
            closing -= len(stack.pop().closer)
        elif token.visible:
            has_visible, after_space = True, False
        elif token.raw in BREAKING_WHITESPACE:
            if not after_space:
                newlines_in_run = 0
            newlines_in_run += token.raw.count("\n")
            after_space = True
        else:
            after_space = False  # NBSP and other spaces that do not break a line
        end = index + 1
        if length + closing > limit:
            continue
        if end == len(tokens):
            return end, tuple(stack)
        if not has_visible:
            kind = Boundary.ANY
        elif after_space:
            kind = (
                Boundary.PARAGRAPH
                if newlines_in_run >= 2
                else Boundary.LINE
                if newlines_in_run
                else Boundary.WORD
            )
        elif token.kind is not TokenKind.OPEN and not _splits_character(tokens, end):
            kind = Boundary.CHARACTER
        else:
            kind = Boundary.ANY
        best[kind] = (end, tuple(stack))
    if not best:
        raise _markup_error(
            mode,
            f"a tag, link or entity at line {_line_of_tokens(tokens, start)} "
            "is too long to fit in one message with its formatting",
        )
    return best[min(best)]


def split_message(text: str, parse_mode: str = "none", limit: int = MESSAGE_LIMIT) -> list[Piece]:
    """Split text into pieces of at most limit characters (code points), markup included.

    A text that fits is one piece, untouched. Otherwise each piece ends after the last blank
    line that fits, else the last line break, else the last space; only a word longer than a
    whole message is cut inside, and then between whole characters. The separators stay at
    the end of the piece before the cut, so the bodies joined give the text back exactly.
    With html or markdown, formatting open at a cut is closed at the end of the piece and
    reopened at the start of the next; markup this cannot handle raises MarkupError.
    """
    if len(text) <= limit:
        return [Piece(body=text, blank=not text.strip())] if text else []
    tokens = TOKENIZERS[parse_mode](text)
    mode = PARSE_MODES[parse_mode] or "text"
    pieces = []
    start, open_formatting = 0, ()
    while start < len(tokens):
        end, still_open = _next_cut(tokens, start, open_formatting, limit, mode)
        body = tokens[start:end]
        pieces.append(
            Piece(
                body="".join(token.raw for token in body),
                reopen="".join(token.reopen for token in open_formatting),
                close="".join(token.closer for token in reversed(still_open)),
                blank=not any(token.visible for token in body),
            )
        )
        start, open_formatting = end, still_open
    if parse_mode == "markdown":
        _check_markdown_pieces(pieces)
    return pieces


def _check_markdown_pieces(pieces: list[Piece]) -> None:
    """Refuse pieces that MarkdownV2 would read differently from the original.

    Telegram reads ___ greedily as __ then _, so where italic and underline markers meet at a
    cut, closing or reopening them can change their meaning; each piece must parse on its own.
    """
    line = 1
    for piece in pieces:
        try:
            tokenize_markdown(piece.text)
        except MarkupError:
            raise _markup_error(
                "MarkdownV2",
                f"at the cut near line {line} italic (_) and underline (__) markers would "
                "run together when closed and reopened; put a space between them",
            ) from None
        line += piece.body.count("\n")


# --- Sending ------------------------------------------------------------------------------------
# aiogram is imported where it is used: building its types takes seconds, and a dry run or a
# configuration error should not wait for that.


def _refusal(error: TelegramAPIError, what: str, chat: ChatId, parse_mode: str | None) -> SendError:
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
    if isinstance(error, TelegramBadRequest) and "chat not found" in description.lower():
        return ChatRefused(
            f"chat {chat} not found: the user must open the bot in Telegram and press Start, "
            "and USER_ID (or --chat) must be their chat id"
        )
    if isinstance(error, TelegramBadRequest) and "can't parse entities" in description.lower():
        return SendError(
            f"Telegram could not parse {what} as {parse_mode} ({description}): "
            "fix the markup or use --parse-mode none"
        )
    if isinstance(error, TelegramEntityTooLarge):
        return SendError(f"Telegram refused {what} as too large ({description})")
    return SendError(f"Telegram refused {what} to chat {chat}: {description}")


async def send_with_retries(
    request: Callable[[], Awaitable[object]], what: str, chat: ChatId, parse_mode: str | None
) -> None:
    """Make one request until Telegram accepts it, waiting out flood control and retrying
    server errors and unreachable servers; never repeat a request that may have arrived."""
    from aiogram.exceptions import (
        ClientDecodeError,
        TelegramAPIError,
        TelegramEntityTooLarge,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
    )
    from aiohttp import ClientConnectorError, ClientResponseError, ConnectionTimeoutError

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
            raise _refusal(error, what, chat, parse_mode) from None
        except TelegramNetworkError as error:
            cause = error.__cause__
            if isinstance(cause, ClientResponseError):  # a redirect loop, for one
                raise SendError(
                    f"the server at the Bot API URL answered {target} with {error.message}: "
                    "check TELEGRAM_API_URL (or --api-url)"
                ) from None
            # Only a request that never reached the server is safe to make again.
            if not isinstance(cause, ClientConnectorError | ConnectionTimeoutError):
                raise SendError(
                    f"the request for {target} failed after it was sent ({error.message}); "
                    "not sent again, since Telegram may have received it"
                ) from None
            problem = f"cannot reach the Bot API server ({error.message})"
        except TelegramAPIError as error:
            raise _refusal(error, what, chat, parse_mode) from None
        if attempt < MAX_ATTEMPTS:
            await asyncio.sleep(delay)
    raise SendError(f"gave up on {target} after {MAX_ATTEMPTS} attempts: {problem}")


def _upload_timeout(size: int) -> int:
    return REQUEST_TIMEOUT + size // SLOWEST_UPLOAD_BYTES_PER_SECOND


async def send_all(
    settings: Settings,
    messages: list[Piece],
    documents: list[Document],
    options: SendOptions,
    report: Callable[[str], None],
) -> bool:
    """Send the messages, then the documents, to each chat in turn, one request at a time.

    A chat that refuses (blocked, not found, migrated) is reported and skipped; any other
    failure stops everything. Returns whether every chat got everything.
    """
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import FSInputFile, LinkPreviewOptions

    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_url))
    silent = True if options.silent else None
    link_preview = LinkPreviewOptions(is_disabled=True) if options.no_preview else None
    everything_sent = True
    async with Bot(settings.token, session=session) as bot:
        for chat in settings.chats:
            requests: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                (
                    f"message {number}/{len(messages)}",
                    partial(
                        bot.send_message,
                        chat_id=chat,
                        text=piece.text,
                        parse_mode=options.parse_mode,
                        disable_notification=silent,
                        link_preview_options=link_preview,
                    ),
                )
                for number, piece in enumerate(messages, 1)
            ]
            requests += [
                (
                    f"document {document.path.name}",
                    partial(
                        bot.send_document,
                        chat_id=chat,
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
                    await send_with_retries(request, what, chat, options.parse_mode)
            except ChatRefused as refusal:
                report(str(refusal))
                everything_sent = False
    return everything_sent


# --- Output -------------------------------------------------------------------------------------


def redact(text: str, token: str) -> str:
    """text without the bot token. The secret half is hidden on its own too, in case a URL was
    re-encoded around the colon. Every line this tool prints about a failure passes through here."""
    for secret in (token, token.partition(":")[2]):
        if secret:
            text = text.replace(secret, "***")
    return text


def print_error(message: str, token: str) -> None:
    one_line = " ".join(message.split())
    print(f"{PROG}: {redact(one_line, token)}", file=sys.stderr)


def print_dry_run(messages: list[Piece], documents: list[Document]) -> None:
    for number, piece in enumerate(messages, 1):
        print(f"--- message {number}/{len(messages)}: {len(piece.text)} characters ---")
        print(piece.text, end="" if piece.text.endswith("\n") else "\n")
    for number, document in enumerate(documents, 1):
        print(
            f"--- document {number}/{len(documents)}: {document.path} ({document.size:,} bytes) ---"
        )


# --- Command line -------------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the usage too; a usage error is one line like every other.
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description="Send a text file, and optionally some documents, to Telegram chats "
        "through a bot.",
        epilog="Settings: API_TOKEN, USER_ID and TELEGRAM_API_URL from the environment or "
        ".env (see .env.example). Exit status: 0 sent, 1 sending failed, 2 usage or "
        "configuration error, 130 interrupted.",
    )
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help=f"the message text (default: {DEFAULT_MESSAGE_FILE}, or none when --document "
        "is given; - reads stdin)",
    )
    parser.add_argument(
        "--chat",
        action="append",
        dest="chats",
        metavar="ID",
        help="a chat to send to (repeatable; overrides USER_ID)",
    )
    parser.add_argument(
        "--api-url", metavar="URL", help="base URL of a Bot API server (overrides TELEGRAM_API_URL)"
    )
    parser.add_argument(
        "--parse-mode",
        choices=PARSE_MODES,
        default="none",
        help="how Telegram reads the text: none (as it is, the default), html, or markdown "
        "(MarkdownV2)",
    )
    parser.add_argument("--silent", action="store_true", help="no notification sound")
    parser.add_argument("--no-preview", action="store_true", help="no link preview")
    parser.add_argument(
        "--document",
        action="append",
        dest="documents",
        default=[],
        metavar="PATH",
        help="also send this file as a document, after the text (repeatable; up to 50 MB)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the messages that would be sent, and send nothing (no token needed)",
    )
    return parser


async def run(
    args: argparse.Namespace, environment: dict[str, str], report: Callable[[str], None]
) -> ExitStatus:
    """Settings, then the text and documents, then the split, then the dry run or the sending."""
    settings = None if args.dry_run else load_settings(environment, args.chats, args.api_url)
    source = args.file or (None if args.documents else DEFAULT_MESSAGE_FILE)
    text = read_text(source) if source else ""
    documents = check_documents(args.documents)
    messages = [piece for piece in split_message(text, args.parse_mode) if not piece.blank]
    if settings is None:
        print_dry_run(messages, documents)
        return ExitStatus.SENT
    options = SendOptions(
        parse_mode=PARSE_MODES[args.parse_mode], silent=args.silent, no_preview=args.no_preview
    )
    everything_sent = await send_all(settings, messages, documents, options, report)
    return ExitStatus.SENT if everything_sent else ExitStatus.SEND_FAILED


async def main(argv: list[str] | None = None) -> int:
    """The command: returns its exit status, with any failure already printed as one line."""
    token = ""
    try:
        environment = read_environment()
        token = environment.get("API_TOKEN", "")  # read first, so every line can be redacted
        args = build_parser().parse_args(argv)
        return await run(args, environment, lambda message: print_error(message, token))
    except ToolError as error:
        print_error(str(error), token)
        return error.exit_status
    except BrokenPipeError:
        # Whoever read the dry run stopped early (| head); as Python's documentation advises,
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.SEND_FAILED
    except Exception:
        # A bug, not a user error: keep the traceback, but never with the token in it.
        sys.stderr.write(redact(traceback.format_exc(), token))
        return ExitStatus.SEND_FAILED


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(ExitStatus.INTERRUPTED)

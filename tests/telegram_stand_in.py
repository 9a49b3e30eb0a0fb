"""A Bot API server on loopback for the tests of tg_bot.py.

It answers /bot<token>/<method> with the Bot API's own JSON: {"ok": true, "result": <Message>}
on success, {"ok": false, "error_code": .., "description": .., "parameters": ..} on failure,
and records every request it receives (method, token, form fields, uploaded files). Tests
script its answers per method; anything unscripted is accepted, if Telegram would accept it.

sendMessage is checked as Telegram checks it: a parse_mode's markup is read by a port of TDLib's
parse_markdown_v2 and parse_html (td/telegram/MessageEntity.cpp), working on UTF-8 bytes as TDLib
does and refusing with Telegram's error texts; entities= are checked against the text, and their
links by TDLib's link rules (LinkManager::check_link_impl); then the
text is trimmed as fix_formatted_text trims it, and refused when empty or longer than 4096 code
points. What a message would show is kept in Received.shown. One deliberate difference: an
entity that reaches past the text, which Telegram silently shortens, is refused here, so that a
test sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

HOST = "127.0.0.1"
MESSAGE_LIMIT = 4096  # code points of the parsed and trimmed text (TDLib's utf8_length)
ENTITY_TYPES = {
    "bold", "italic", "underline", "strikethrough", "spoiler", "code", "pre", "text_link",
    "blockquote", "expandable_blockquote", "custom_emoji", "date_time", "text_mention", "mention",
    "hashtag", "cashtag", "bot_command", "url", "email", "phone_number",
}  # fmt: skip


class CannotParse(Exception):
    """TDLib's parse error; its text follows "Bad Request: can't parse entities: "."""


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- TDLib's MarkdownV2 and HTML parsers, on UTF-8 bytes -------------------------------------

SPACE_BYTES = b" \t\r\n\0\v"  # TDLib's is_space(); the NUL stands for the end of the text
RESERVED = b"_*[]()~`>#+-=|{}.!\n"
CODE_TYPES = ("Code", "Pre", "PreCode")
BOT_API_NAMES = {
    "Bold": "bold", "Italic": "italic", "Underline": "underline",
    "Strikethrough": "strikethrough", "Spoiler": "spoiler", "Code": "code", "Pre": "pre",
    "PreCode": "pre", "TextUrl": "text_link", "CustomEmoji": "custom_emoji",
    "FormattedDate": "date_time",
    "BlockQuote": "blockquote", "ExpandableBlockQuote": "expandable_blockquote",
}  # fmt: skip


def _is_first_unit(byte: int) -> bool:
    return (byte & 0xC0) != 0x80


class BadLink(ValueError):
    """TDLib's reason for refusing a link (LinkManager::check_link_impl, parse_url)."""


HOST_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.-_!$,~*'()&;+=")
HEX_BYTES = frozenset(b"0123456789abcdef")


def _parse_url(link: bytes) -> tuple[bytes, bytes, bytes, bool, int, bytes]:
    """HttpUrl.cpp's parse_url on UTF-8 bytes: protocol, userinfo, host, IPv6, port, query."""
    end = next((i for i, byte in enumerate(link) if byte in b":/?#@[]"), len(link))
    protocol, rest = b"http", link
    if link[end : end + 3] == b"://":
        protocol, rest = link[:end].lower(), link[end + 3 :]
        if protocol not in (b"http", b"https"):
            raise BadLink("Unsupported URL protocol")
    end = next((i for i, byte in enumerate(rest) if byte in b"/?#"), len(rest))
    authority, query = rest[:end], rest[end:]
    colon, port = len(authority) - 1, 0
    while colon > 0 and authority[colon] not in b":]@":
        colon -= 1
    if colon > 0 and authority[colon] == ord(":"):
        digits = authority[colon + 1 :]
        while len(digits) > 1 and digits[:1] == b"0":
            digits = digits[1:]
        port = int(digits) if digits.isdigit() and len(digits) < 10 else -1
        port = port or -1
        authority = authority[:colon]
    if not 0 <= port <= 65535:
        raise BadLink("Wrong port number specified in the URL")
    at = authority.rfind(b"@")
    userinfo, host = (authority[:at], authority[at + 1 :]) if at >= 0 else (b"", authority)
    ipv6 = host[:1] == b"[" and host[-1:] == b"]" and len(host) > 1
    if ipv6:
        try:
            socket.inet_pton(socket.AF_INET6, host[1:-1].decode())
        except (OSError, UnicodeDecodeError):
            raise BadLink("Wrong IPv6 address specified in the URL") from None
    if not host:
        raise BadLink("URL host is empty")
    if host == b".":
        raise BadLink("Host is invalid")
    query = query.rstrip(SPACE_BYTES) or b"/"
    query = (b"" if query[:1] == b"/" else b"/") + b"".join(
        b"%%%02X" % byte if byte <= 0x20 else bytes([byte]) for byte in query
    )
    host = host.lower()
    i = 0
    while i < len(host):
        byte = host[i]
        if ipv6:
            if not (i in (0, len(host) - 1) or byte in b":." or byte in HEX_BYTES):
                raise BadLink("Wrong IPv6 URL host")
        elif byte == ord("%"):
            if not (host[i + 1 : i + 2] and host[i + 1] in HEX_BYTES):
                raise BadLink("Wrong percent-encoded symbol in URL host")
            if not (host[i + 2 : i + 3] and host[i + 2] in HEX_BYTES):
                raise BadLink("Wrong percent-encoded symbol in URL host")
            i += 2
        elif byte not in HOST_BYTES and byte < 128:
            raise BadLink("Wrong URL host")
        i += 1
    return protocol, userinfo, host, ipv6, port, query


def check_link(url: str) -> str:
    """LinkManager::check_link_impl: the URL Telegram keeps for a link, or BadLink."""
    link = url.encode()
    scheme = next((s for s in (b"tg:", b"ton:", b"tonsite:") if link[: len(s)].lower() == s), b"")
    link = link[len(scheme) :]
    if scheme and link.startswith(b"//"):
        link = link[2:]
    protocol, userinfo, host, ipv6, port, query = _parse_url(link)
    if scheme:
        if link[:7].lower() == b"http://" or protocol == b"https" or userinfo or port or ipv6:
            raise BadLink("Wrong tg URL" if scheme == b"tg:" else "Wrong ton URL")
        if query[1:2] == b"?":
            query = query[1:]
        allowed = b"-_." if scheme == b"tonsite:" else b"-_"
        for byte in host:
            if not (chr(byte).isalnum() and byte < 128) and byte not in allowed:
                raise BadLink("Unallowed characters in URL host")
        return (scheme[:-1] + b"://" + host + query).decode()
    if b"." not in host and not ipv6:
        raise BadLink("Wrong HTTP URL")
    userinfo = userinfo + b"@" if userinfo else b""
    shown_port = b":%d" % port if port else b""
    return (protocol + b"://" + userinfo + host + shown_port + query).decode()


def _checked_link(url: str) -> str:
    """LinkManager::get_checked_link: "" refuses the link (the entity is dropped)."""
    try:
        return check_link(url)
    except BadLink:
        return ""


def is_int64_id(value: str) -> bool:
    """to_integer_safe<int64>: the number as it prints (no "+", no leading zero), and not 0."""
    try:
        number = int(value, 10) if value.isascii() else 0
    except ValueError:
        return False
    return number != 0 and str(number) == value and -(2**63) <= number < 2**63


def _tg_query(url: str, host: str) -> str | None:
    """LinkManager::check_tg_url_host: the parameters of a tg://HOST?... link, or None."""
    lowered = "".join(char.lower() if char.isascii() else char for char in url)
    if not lowered.startswith("tg:"):
        return None
    start = 5 if url.startswith("//", 3) else 3
    after = start + len(host)
    if not lowered.startswith(host, start) or (len(url) > after and url[after] not in "/?#"):
        return None
    query = url[after + 1 :] if url.startswith("/", after) else url[after:]
    if not query.startswith("?"):
        return None
    return query[1:].split("#", 1)[0]


def _parameters(query: str) -> list[tuple[str, str]]:
    return [
        tuple(parameter.split("=", 1)) if "=" in parameter else (parameter, "")  # type: ignore[misc]
        for parameter in query.split("&")
    ]


def link_custom_emoji_id(url: str) -> str:
    """LinkManager::get_link_custom_emoji_id: the id, or "" for none."""
    query = _tg_query(url, "emoji")
    for key, value in _parameters(query) if query is not None else []:
        if key == "id":
            return value if is_int64_id(value) else ""
    return ""


DATE_FLAGS = {"t": 2, "T": 4, "d": 8, "D": 16, "w": 32, "W": 32}  # FormattedDate::DateFlags


def bot_api_date_format(date_format: str) -> str:
    """FormattedDate::get_date_flags, written back as the Bot API writes date_time_format."""
    if date_format in ("r", "R"):
        return "r"
    flags = 0
    for char in date_format:
        if char not in DATE_FLAGS:
            raise CannotParse("Invalid date format used")
        flags |= DATE_FLAGS[char]
    shown = "w" if flags & 32 else ""
    shown += "d" if flags & 8 else "D" if flags & 16 else ""
    return shown + ("t" if flags & 2 else "T" if flags & 4 else "")


def link_date_time(url: str) -> str:
    """LinkManager::get_link_formatted_date: "UNIX FORMAT", or "" for none."""
    query = _tg_query(url, "time")
    date, date_format = 0, ""
    for key, value in _parameters(query) if query is not None else []:
        if key == "unix":
            if not (value.isascii() and value.isdigit() and str(int(value)) == value):
                return ""
            if not 0 < int(value) < 2**31:
                return ""
            date = int(value)
        if key == "format":
            date_format = value
    try:
        return f"{date} {bot_api_date_format(date_format)}" if date else ""
    except CannotParse:
        return ""


def to_int32(text: str) -> int:
    """td::to_integer<int32>: an optional '-' and the digits that follow, wrapping as C does."""
    data = text.encode()
    negative = data[:1] == b"-"
    value = 0
    for byte in data[negative:]:
        if not 48 <= byte <= 57:
            break
        value = (value * 10 + byte - 48) & 0xFFFFFFFF
    if negative:
        value = (-value) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass
class _Nested:
    type: str
    argument: str
    utf16_offset: int
    byte_offset: int
    begin: int  # position in the output
    date: int = 0  # <tg-time unix=...>


def _entity(type_: str, offset: int, length: int, argument: str = "") -> dict[str, object]:
    entity: dict[str, object] = {"type": BOT_API_NAMES.get(type_, type_), "offset": offset}
    entity["length"] = length
    if type_ == "TextUrl":
        entity["url"] = argument
    elif type_ == "PreCode":
        entity["language"] = argument
    elif type_ == "CustomEmoji":
        entity["custom_emoji_id"] = argument
    elif type_ == "FormattedDate":
        unix_time, _, date_format = argument.partition(" ")
        entity["unix_time"], entity["date_time_format"] = int(unix_time), date_format
    return entity


def _sort(entities: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(entities, key=lambda entity: (entity["offset"], -entity["length"]))  # type: ignore[operator]


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, object]]]:
    data = text.encode()
    size = len(data)

    def at(index: int) -> int:
        return data[index] if index < size else 0

    out = bytearray()
    entities: list[dict[str, object]] = []
    nested: list[_Nested] = []
    utf16 = 0
    have_blockquote = False
    can_start_blockquote = True
    i = 0
    while i < size:
        c = data[i]
        if c == ord("\\") and 0 < at(i + 1) <= 126:
            i += 1
            utf16 += 1
            out.append(data[i])
            if data[i] != ord("\r"):
                can_start_blockquote = data[i] == ord("\n")
            i += 1
            continue
        reserved = b"`" if nested and nested[-1].type in CODE_TYPES else RESERVED
        if c not in reserved:
            if _is_first_unit(c):
                utf16 += 1 + (c >= 0xF0)
                if c != ord("\r"):
                    can_start_blockquote = False
            out.append(c)
            i += 1
            continue
        char = chr(c)
        top = nested[-1].type if nested else ""
        is_end = bool(nested) and (
            (have_blockquote and char == "\n" and at(i + 1) != ord(">"))
            or (top == "Bold" and char == "*")
            or (top == "Italic" and char == "_" and at(i + 1) != ord("_"))
            or (top == "Code" and char == "`")
            or (top in ("Pre", "PreCode") and data[i : i + 3] == b"```")
            or (top in ("TextUrl", "CustomEmoji") and char == "]")
            or (top == "Underline" and data[i : i + 2] == b"__")
            or (top == "Strikethrough" and char == "~")
            or (top == "Spoiler" and data[i : i + 2] == b"||")
        )
        reserved_error = CannotParse(
            f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
        )
        if not is_end:
            argument = ""
            byte_offset = i
            if char == "_":
                type_ = "Underline" if at(i + 1) == ord("_") else "Italic"
                i += type_ == "Underline"
            elif char == "*":
                type_ = "Bold"
            elif char == "~":
                type_ = "Strikethrough"
            elif char == "|":
                if at(i + 1) != ord("|"):
                    raise reserved_error
                i += 1
                type_ = "Spoiler"
            elif char == "[":
                type_ = "TextUrl"
            elif char == "`":
                if data[i : i + 3] == b"```":
                    i += 3
                    type_ = "Pre"
                    language_end = i
                    while at(language_end) not in SPACE_BYTES and at(language_end) != ord("`"):
                        language_end += 1
                    if i != language_end and language_end < size and at(language_end) != ord("`"):
                        type_ = "PreCode"
                        argument = data[i:language_end].decode()
                        i = language_end
                    if at(i) in b"\n\r" and at(i):
                        if at(i + 1) in b"\n\r" and at(i + 1) and at(i) != at(i + 1):
                            i += 2
                        else:
                            i += 1
                    i -= 1
                else:
                    type_ = "Code"
            elif char == "!":
                if at(i + 1) != ord("["):
                    raise reserved_error
                i += 1
                type_ = "CustomEmoji"
            elif char == "\n":
                utf16 += 1
                out.append(c)
                can_start_blockquote = True
                i += 1
                continue
            elif char == ">":
                if not can_start_blockquote:
                    raise reserved_error
                if have_blockquote:
                    i += 1
                    continue
                type_ = "BlockQuote"
                have_blockquote = True
            else:
                raise reserved_error
            nested.append(_Nested(type_, argument, utf16, byte_offset, len(out)))
            i += 1
            continue
        type_ = nested[-1].type
        if char == "\n" and type_ != "BlockQuote":
            last = nested[-1]
            ends_spoiler = last.byte_offset == i - 2 or (
                last.byte_offset == i - 3 and out and out[-1] == ord("\r")
            )
            if type_ != "Spoiler" or not ends_spoiler:
                raise CannotParse(
                    f"Can't find end of {last.type} entity at byte offset {last.byte_offset}"
                )
            nested.pop()
            type_ = nested[-1].type
            if type_ != "BlockQuote":
                raise CannotParse(
                    f"Can't find end of {type_} entity at byte offset {nested[-1].byte_offset}"
                )
            type_ = "ExpandableBlockQuote"
        last = nested[-1]
        argument = last.argument
        skip = utf16 == last.utf16_offset
        if type_ in ("Underline", "Spoiler"):
            i += 1
        elif type_ in ("Pre", "PreCode"):
            i += 2
        elif type_ in ("TextUrl", "CustomEmoji"):
            if at(i + 1) != ord("("):
                if type_ == "CustomEmoji":
                    raise CannotParse("The entity must contain a tg://emoji or tg://time URL")
                url = out[last.begin :].decode()
            else:
                i += 2
                url_begin = i
                url_bytes = bytearray()
                while i < size and data[i] != ord(")"):
                    if data[i] == ord("\\") and 0 < at(i + 1) <= 126:
                        url_bytes.append(data[i + 1])
                        i += 2
                        continue
                    url_bytes.append(data[i])
                    i += 1
                if at(i) != ord(")"):
                    raise CannotParse(f"Can't find end of a URL at byte offset {url_begin}")
                url = url_bytes.decode()
            if type_ == "CustomEmoji":
                argument = link_custom_emoji_id(url)
                if not argument and (argument := link_date_time(url)):
                    type_ = "FormattedDate"
                if not argument:
                    raise CannotParse("Invalid tg://emoji or tg://time URL specified")
            else:
                argument = _checked_link(url)
                skip = skip or not argument
        elif type_ in ("BlockQuote", "ExpandableBlockQuote"):
            have_blockquote = False
            out.append(data[i])
            can_start_blockquote = True
            utf16 += 1
            skip = False
        if not skip:
            entities.append(_entity(type_, last.utf16_offset, utf16 - last.utf16_offset, argument))
        nested.pop()
        i += 1
    if have_blockquote:
        type_ = "BlockQuote"
        if nested[-1].type == "Spoiler" and nested[-1].byte_offset == size - 2:
            nested.pop()
            type_ = "ExpandableBlockQuote"
        if nested[-1].type == "BlockQuote":
            last = nested.pop()
            if utf16 != last.utf16_offset:
                entities.append(_entity(type_, last.utf16_offset, utf16 - last.utf16_offset))
    if nested:
        last = nested[-1]
        raise CannotParse(f"Can't find end of {last.type} entity at byte offset {last.byte_offset}")
    return out.decode(), _sort(entities)


HTML_TAGS = {
    "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji",
    "tg-time", "span", "pre", "code", "blockquote",
}  # fmt: skip
SIMPLE_TAGS = {
    "b": "Bold", "strong": "Bold", "i": "Italic", "em": "Italic", "s": "Strikethrough",
    "strike": "Strikethrough", "del": "Strikethrough", "u": "Underline", "ins": "Underline",
    "tg-spoiler": "Spoiler", "span": "Spoiler",
}  # fmt: skip


def _decode_html_entity(data: bytes, position: int) -> tuple[int, int]:
    """(code point, end) of the HTML entity at position, or (0, position) for none."""
    size = len(data)

    def at(index: int) -> int:
        return data[index] if index < size else 0

    end = position + 1
    value = 0
    if at(position + 1) == ord("#"):
        end += 1
        if at(position + 2) == ord("x"):
            end += 1
            while chr(at(end)) in "0123456789abcdefABCDEF" and at(end):
                value = value * 16 + int(chr(data[end]), 16)
                end += 1
        else:
            while chr(at(end)).isdigit() and at(end) < 128:
                value = value * 10 + data[end] - ord("0")
                end += 1
        if value == 0 or value >= 0x10FFFF or end - position >= 10:
            return 0, position
    else:
        while at(end) < 128 and chr(at(end)).isalpha():
            end += 1
        name = data[position + 1 : end]
        value = {b"lt": ord("<"), b"gt": ord(">"), b"amp": ord("&"), b"quot": ord('"')}.get(name, 0)
        if not value:
            return 0, position
    return value, end + (at(end) == ord(";"))


def parse_html(text: str) -> tuple[str, list[dict[str, object]]]:
    data = text.encode()
    size = len(data)

    def at(index: int) -> int:
        return data[index] if index < size else 0

    def space(index: int) -> bool:
        return at(index) in SPACE_BYTES

    out: list[str] = []  # decoded characters; UTF-16 offsets are counted alongside
    utf16 = 0
    entities: list[dict[str, object]] = []
    nested: list[_Nested] = []
    surrogates = False
    i = 0
    while i < size:
        c = data[i]
        if c == ord("&"):
            code, end = _decode_html_entity(data, i)
            if code:
                surrogates = surrogates or 0xD800 <= code <= 0xDFFF
                out.append(chr(code))
                utf16 += 1 + (code > 0xFFFF)
                i = end
                continue
        if c != ord("<"):
            if _is_first_unit(c):
                length = 1 if c < 0x80 else 2 if c < 0xE0 else 3 if c < 0xF0 else 4
                out.append(data[i : i + length].decode())
                utf16 += 1 + (c >= 0xF0)
                i += length
            continue
        begin = i
        i += 1
        if at(i) != ord("/"):
            while not space(i) and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise CannotParse(f"Unclosed start tag at byte offset {begin}")
            tag = data[begin + 1 : i].decode("utf-8", "replace").lower()
            if tag not in HTML_TAGS:
                raise CannotParse(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument, date = "", 0
            while at(i) != ord(">"):
                while at(i) and space(i):
                    i += 1
                if at(i) == ord(">"):
                    break
                name_begin = i
                while not space(i) and at(i) not in b"=>/\"'":
                    i += 1
                attribute = data[name_begin:i].decode("utf-8", "replace")
                if not attribute:
                    raise CannotParse(
                        f'Empty attribute name in the tag "{tag}" at byte offset {begin}'
                    )
                while at(i) and space(i):
                    i += 1
                if at(i) != ord("="):
                    if at(i) == 0:
                        raise CannotParse(f'Unclosed start tag "{tag}" at byte offset {begin}')
                    if tag == "blockquote" and attribute == "expandable":
                        argument = "1"
                    continue
                i += 1
                while at(i) and space(i):
                    i += 1
                if at(i) == 0:
                    raise CannotParse(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if at(i) not in b"'\"":
                    token_begin = i
                    while at(i) and ((chr(at(i)).isalnum() and at(i) < 128) or at(i) in b".-"):
                        i += 1
                    value = data[token_begin:i].decode().lower()
                    if not space(i) and at(i) != ord(">"):
                        raise CannotParse(
                            f"Unexpected end of name token at byte offset {token_begin}"
                        )
                else:
                    quote = at(i)
                    i += 1
                    value_bytes = bytearray()
                    while at(i) != quote and at(i):
                        if at(i) == ord("&"):
                            code, end = _decode_html_entity(data, i)
                            if code:
                                value_bytes += chr(code).encode("utf-8", "surrogatepass")
                                i = end
                                continue
                        value_bytes.append(data[i])
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = value_bytes.decode("utf-8", "replace")
                if at(i) == 0:
                    raise CannotParse(f"Unclosed start tag at byte offset {begin}")
                if tag == "a" and attribute == "href":
                    argument = value
                elif tag == "code" and attribute == "class" and value.startswith("language-"):
                    argument = value[9:]
                elif tag == "span" and attribute == "class" and value.startswith("tg-"):
                    argument = value[3:]
                elif tag == "tg-time" and attribute == "unix":
                    date = to_int32(value)
                elif (tag, attribute) in (("tg-time", "format"), ("tg-emoji", "emoji-id")):
                    argument = value
                elif tag == "blockquote" and attribute == "expandable":
                    argument = "1"
            if tag == "span" and argument != "spoiler":
                raise CannotParse(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
            nested.append(_Nested(tag, argument, utf16, begin, len(out), date))
            i += 1
            continue
        if not nested:
            raise CannotParse(f"Unexpected end tag at byte offset {begin}")
        while not space(i) and at(i) != ord(">"):
            i += 1
        end_tag = data[begin + 2 : i].decode("utf-8", "replace").lower()
        while at(i) and space(i):
            i += 1
        if at(i) != ord(">"):
            raise CannotParse(f"Unclosed end tag at byte offset {begin}")
        last = nested[-1]
        if end_tag and end_tag != last.type:
            raise CannotParse(
                f'Unmatched end tag at byte offset {begin}, expected "</{last.type}>", '
                f'found "</{end_tag}>"'
            )
        if utf16 > last.utf16_offset:
            offset, length = last.utf16_offset, utf16 - last.utf16_offset
            previous = entities[-1] if entities else None
            same = previous is not None and (previous["offset"], previous["length"]) == (
                offset,
                length,
            )
            if last.type in SIMPLE_TAGS:
                entities.append(_entity(SIMPLE_TAGS[last.type], offset, length))
            elif last.type == "tg-time":
                date_format = bot_api_date_format(last.argument)
                if last.date > 0:
                    entities.append(
                        _entity("FormattedDate", offset, length, f"{last.date} {date_format}")
                    )
            elif last.type == "tg-emoji":
                if not is_int64_id(last.argument):
                    raise CannotParse("Invalid custom emoji identifier specified")
                entities.append(_entity("CustomEmoji", offset, length, last.argument))
            elif last.type == "a":
                url = _checked_link(last.argument or "".join(out[last.begin :]))
                if url:
                    entities.append(_entity("TextUrl", offset, length, url))
            elif last.type == "pre":
                if same and previous["type"] == "code" and previous.get("language"):
                    previous["type"] = "pre"
                else:
                    entities.append(_entity("Pre", offset, length))
            elif last.type == "code":
                if same and previous["type"] == "pre" and last.argument:
                    previous["language"] = last.argument
                else:
                    entity = _entity("Code", offset, length)
                    if last.argument:
                        entity["language"] = last.argument
                    entities.append(entity)
            else:
                kind = "ExpandableBlockQuote" if last.argument else "BlockQuote"
                entities.append(_entity(kind, offset, length))
        nested.pop()
        i += 1
    if nested:
        raise CannotParse(f'Can\'t find end tag corresponding to start tag "{nested[-1].type}"')
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    if surrogates:
        raise CannotParse(
            "Text contains invalid Unicode characters after decoding HTML entities, check for "
            "unmatched surrogate code units"
        )
    return "".join(out), _sort(entities)


PARSERS = {"MarkdownV2": parse_markdown_v2, "HTML": parse_html}


def _entity_date_format(entity: dict[str, object]) -> str:
    """A date_time entity's format as the Bot API reads it (a later t or T, d or D wins) and
    TDLib keeps it; ValueError for what they refuse."""
    unix_time, date_format = entity.get("unix_time"), entity.get("date_time_format", "")
    if not isinstance(unix_time, int) or not isinstance(date_format, str):
        raise ValueError(f"date_time {entity} needs an integer unix_time")
    if unix_time <= 0:
        raise ValueError("Invalid date specified")
    if date_format in ("r", "R"):
        return "r"
    if not set(date_format) <= set(DATE_FLAGS):
        raise ValueError("Invalid date-time format specified")
    last = {kind: "".join(c for c in date_format if c in kind)[-1:] for kind in ("dD", "tT")}
    return ("w" if set(date_format) & {"w", "W"} else "") + last["dD"] + last["tT"]


def check_entities(text: str, raw: str) -> list[dict[str, object]]:
    """The entities= of a request, refused (ValueError) unless each lies within the text, and
    a link (BadLink) unless Telegram would keep it; each link as Telegram keeps it."""
    entities = json.loads(raw)
    length = utf16_units(text)
    for entity in entities:
        if entity.get("type") not in ENTITY_TYPES:
            raise ValueError(f"unknown entity type {entity.get('type')!r}")
        offset, size = entity.get("offset"), entity.get("length")
        if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0 and size > 0):
            raise ValueError(f"entity {entity} has no valid offset and length")
        if offset + size > length:
            raise ValueError(f"entity {entity} reaches past the text ({length} UTF-16 units)")
        if entity["type"] == "date_time":
            entity["date_time_format"] = _entity_date_format(entity)
        if entity["type"] == "text_link":
            if not entity.get("url"):
                raise ValueError(f"text_link {entity} has no url")
            try:
                entity["url"] = check_link(entity["url"])
            except BadLink as error:
                raise BadLink(f"Entity URL '{entity['url']}' is invalid: {error}") from None
    return entities


def trim(text: str, entities: list[dict[str, object]]) -> tuple[str, list[dict[str, object]]]:
    """What fix_formatted_text leaves: no spaces or line breaks at the end, nor at the start
    before the first entity; entities cut to the text that is left."""
    kept = text.rstrip(" \n")
    end = utf16_units(kept)
    entities = [dict(entity) for entity in entities if entity["offset"] < end]  # type: ignore[operator]
    for entity in entities:
        entity["length"] = min(entity["length"], end - entity["offset"])  # type: ignore[operator]
    first = min((entity["offset"] for entity in entities), default=end)  # type: ignore[type-var]
    removed = 0
    while removed < first and kept[removed : removed + 1] in (" ", "\n"):
        removed += 1
    for entity in entities:
        entity["offset"] -= removed  # type: ignore[operator]
    return kept[removed:], entities


@dataclass
class Received:
    method: str
    token: str
    fields: dict[str, str]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (filename, bytes)
    arrived_at: float = field(default_factory=time.monotonic)
    # What the message shows once accepted: text and entities after parsing and trimming.
    shown: tuple[str, list[dict[str, object]]] | None = None

    @property
    def chat_id(self) -> str:
        return self.fields["chat_id"]

    @property
    def text(self) -> str:
        return self.fields["text"]

    @property
    def entities(self) -> list[dict[str, object]]:
        return json.loads(self.fields.get("entities", "[]"))


Reply = Callable[["BotApiStandIn", web.Request, Received], Awaitable[web.StreamResponse]]


def read_message(received: Received) -> tuple[str, list[dict[str, object]]] | str:
    """What sendMessage would show, or the description of Telegram's refusal."""
    text = received.text
    parse_mode = received.fields.get("parse_mode", "")
    try:
        if parse_mode:
            text, entities = PARSERS[parse_mode](text)
        else:
            entities = check_entities(text, received.fields.get("entities", "[]"))
    except CannotParse as error:
        return f"Bad Request: can't parse entities: {error}"
    except BadLink as error:
        return f"Bad Request: {error}"
    except (ValueError, KeyError) as error:
        return f"Bad Request: can't parse entities JSON object ({error})"
    text, entities = trim(text, entities)
    if not text:
        return "Bad Request: message text is empty"
    if len(text) > MESSAGE_LIMIT:
        return "Bad Request: message is too long"
    return text, entities


async def accept(
    stand_in: BotApiStandIn, request: web.Request, received: Received
) -> web.StreamResponse:
    """Telegram's answer to a request: the Message it created, or its refusal of a message."""
    if received.method == "sendMessage":
        shown = read_message(received)
        if isinstance(shown, str):
            return await refuse(400, shown)(stand_in, request, received)
        received.shown = shown
    chat_id = received.chat_id
    message = {
        "message_id": next(stand_in.message_ids),
        "date": int(time.time()),
        "chat": {"id": int(chat_id), "type": "private", "first_name": "Reader"}
        if chat_id.lstrip("-").isdigit()
        else {"id": -1001234567890, "type": "channel", "title": chat_id},
        "from": {
            "id": int(received.token.partition(":")[0]),
            "is_bot": True,
            "first_name": "Stand-in",
            "username": "stand_in_bot",
        },
    }
    if received.shown is not None:
        message["text"], message["entities"] = received.shown
    if "message_thread_id" in received.fields:
        message["message_thread_id"] = int(received.fields["message_thread_id"])
    for filename, content in received.files.values():
        message["document"] = {
            "file_id": f"BQACAgIAAxkBAAI{message['message_id']}",
            "file_unique_id": f"AgAD{message['message_id']}",
            "file_name": filename,
            "file_size": len(content),
        }
    return web.json_response({"ok": True, "result": message})


def refuse(status: int, description: str, **parameters: int) -> Reply:
    """Telegram's answer to a request it refused, e.g. refuse(429, ..., retry_after=1)."""

    async def reply(
        stand_in: BotApiStandIn, request: web.Request, received: Received
    ) -> web.StreamResponse:
        body: dict[str, object] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    return reply


async def proxy_error_page(
    stand_in: BotApiStandIn, request: web.Request, received: Received
) -> web.StreamResponse:
    """What a reverse proxy in front of the Bot API sends when its upstream is down."""
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    return web.Response(status=502, text=page, content_type="text/html")


async def redirect_to_itself(
    stand_in: BotApiStandIn, request: web.Request, received: Received
) -> web.StreamResponse:
    """A misconfigured server sending the client round in circles (the URL holds the token)."""
    return web.Response(status=302, headers={"Location": f"/bot{received.token}/{received.method}"})


async def never_answer(
    stand_in: BotApiStandIn, request: web.Request, received: Received
) -> web.StreamResponse:
    await asyncio.sleep(30)
    return await accept(stand_in, request, received)


async def hang_up(
    stand_in: BotApiStandIn, request: web.Request, received: Received
) -> web.StreamResponse:
    """Drop the connection once the request is in: the client cannot tell if it was delivered."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


class BotApiStandIn:
    """The server, run on its own event loop in a thread so that tests can block on the client."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.request_arrived = threading.Event()
        self.message_ids = itertools.count(1)
        self._replies: defaultdict[str, deque[Reply]] = defaultdict(deque)
        self._standing: dict[str, Reply] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def reply_next(self, method: str, *replies: Reply) -> None:
        """Answer the next requests for method with these replies, in order."""
        self._replies[method].extend(replies)

    def reply_always(self, method: str, reply: Reply) -> None:
        self._standing[method] = reply

    def calls(self, method: str) -> list[Received]:
        return [received for received in self.received if received.method == method]

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.05)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{HOST}:{port}"

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        # Handlers still waiting (never_answer) would otherwise die with the loop, noisily.
        waiting = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[name] = (value.filename, value.file.read())
            else:
                fields[name] = str(value)
        received = Received(
            request.match_info["method"], request.match_info["token"], fields, files
        )
        self.received.append(received)
        self.request_arrived.set()
        method = received.method
        if self._replies[method]:
            reply = self._replies[method].popleft()
        else:
            reply = self._standing.get(method, accept)
        return await reply(self, request, received)

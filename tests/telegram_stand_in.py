"""A Bot API server on loopback for the tests of tg_bot.py.

It answers /bot<token>/<method> with the Bot API's own JSON: {"ok": true, "result": <Message>}
on success, {"ok": false, "error_code": .., "description": .., "parameters": ..} on failure,
and records every request it receives (method, token, form fields, uploaded files). Tests
script its answers per method; anything unscripted is accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

HOST = "127.0.0.1"


@dataclass
class Received:
    method: str
    token: str
    fields: dict[str, str]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (filename, bytes)

    @property
    def chat_id(self) -> str:
        return self.fields["chat_id"]

    @property
    def text(self) -> str:
        return self.fields["text"]


Reply = Callable[["BotApiStandIn", web.Request, Received], Awaitable[web.StreamResponse]]


async def accept(
    stand_in: BotApiStandIn, request: web.Request, received: Received
) -> web.StreamResponse:
    """Telegram's answer to a message it accepted: the Message it created."""
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
    if received.method == "sendMessage":
        message["text"] = received.text
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
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
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

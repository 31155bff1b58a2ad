"""The shape the board's ASGI middlewares share: look at each HTTP response's start."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ResponseStartHook:
    """Pass every request through; for HTTP ones, call `on_start(scope)` as the request
    arrives and the function it returns with the response's start message, before it
    leaves (it may change the message's headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def on_start(self, scope: Scope) -> Callable[[Message], None]:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hook = self.on_start(scope)

        async def hooked(message: Message) -> None:
            if message["type"] == "http.response.start":
                hook(message)
            await send(message)

        await self.app(scope, receive, hooked)

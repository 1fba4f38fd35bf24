"""Reading and writing Wyoming events on a stream, with limits; stopping a server that serves
them (`stop_serving`).

An event is one JSON header line (`type`, `version`, `data_length`, `payload_length`, maybe
an inline `data`), then `data_length` bytes of JSON data, then `payload_length` bytes of
payload. `read_event` refuses what a peer could use to exhaust memory (a header line, data or
payload over the limits) and anything malformed with a `ProtocolError` naming the problem.
Where the event's lengths could be read and its bytes were consumed (bad data JSON, no `type`,
`data` not an object), the error is `in_step`: the next event starts where it should, and the
caller answers and goes on. Otherwise (a header that is not JSON, a length that is not a
number or over its limit, a stream that ends inside an event) the stream cannot be trusted
and the caller closes it. Any JSON the parser refuses counts, including nesting deeper than
Python's recursion limit and integers over its 4,300-digit limit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event, async_write_event

MAX_HEADER_BYTES = 64 * 1024
MAX_DATA_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Largest payload accepted: 4 MiB (about 2 minutes of 16 kHz 16-bit audio in one chunk)."""


class ProtocolError(Exception):
    """A malformed or oversized event; the message says what was wrong."""

    def __init__(self, message: str, *, in_step: bool = False) -> None:
        super().__init__(message)
        self.in_step = in_step
        """The whole event was consumed: the connection can go on."""


def _json(raw: bytes) -> Any:
    """Parsed JSON; ValueError for anything the parser refuses (nesting too deep included)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer, not {str(value)[:40]!r}")
    if value > limit:
        raise ProtocolError(f"{key} {value} is over the limit of {limit} bytes")
    return value


async def read_event(
    reader: asyncio.StreamReader,
    *,
    max_data: int = MAX_DATA_BYTES,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> Event | None:
    """The next event, or None at a clean end of stream."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial.strip():
            return None
        raise ProtocolError("the stream ended inside an event header") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"an event header is longer than {MAX_HEADER_BYTES} bytes") from None
    try:
        header = _json(line)
    except ValueError as err:
        raise ProtocolError(f"an event header is not JSON ({str(err)[:80]})") from None
    if not isinstance(header, dict):
        raise ProtocolError("an event header is not a JSON object")
    data_length = _length(header, "data_length", max_data)
    payload_length = _length(header, "payload_length", max_payload)
    try:
        raw_data = await reader.readexactly(data_length) if data_length else b""
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise ProtocolError(
            f"{str(header.get('type'))[:40]}: the stream ended inside the event"
        ) from None
    kind = header.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("an event header has no `type`", in_step=True)
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{kind[:40]}: `data` must be an object", in_step=True)
    if raw_data:
        try:
            extra = _json(raw_data)
        except ValueError as err:
            raise ProtocolError(f"{kind[:40]}: its data is not JSON ({str(err)[:80]})",
                                in_step=True) from None  # fmt: skip
        if not isinstance(extra, dict):
            raise ProtocolError(f"{kind[:40]}: its data is not a JSON object", in_step=True)
        data.update(extra)
    return Event(type=kind, data=data, payload=payload)


async def write_event(event: Event, writer: asyncio.StreamWriter) -> None:
    """Write one event and wait for the transport to take it."""
    await async_write_event(event, writer)


async def stop_serving(server: asyncio.Server | None, tasks: set[asyncio.Task[None]]) -> None:
    """Stop listening on `server`, cancel the connections' `tasks` and wait until they and
    the listener are done."""
    if server is not None:
        server.close()
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if server is not None:
        await server.wait_closed()

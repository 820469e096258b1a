"""Instructions per request through the httpx transports, counted by callgrind (noise-free),
beside the bare transport they wrap: the workloads of ``bench_client.py`` (the same inner
transport, request, headers and bodies), in threads (``Transport``, ``handle_request``) and
on an asyncio loop (``AsyncTransport``, ``handle_async_request``: the "async" workloads, a
round being one ``run_until_complete`` of CALLS requests, as the bench drives them).

Each workload is one request in a loop (send, read the body, close it), run under
``valgrind --tool=callgrind`` at two sizes; the difference per request cancels start-up and
imports. To compare two builds, run it once as is and once with ``PYTHONPATH`` pointing at
a directory holding the other build's ``admission/``.

Usage: .venv/bin/python benches/client_instructions.py [WORKLOAD ...]
Needs valgrind and requirements/bench.txt; about half a minute per workload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# The counter every *_instructions.py script shares (callgrind.py is next to this file).
from callgrind import script_main

CALLS = 5_000
#: Rounds of CALLS at the two sizes counted.
FEW, MORE = 1, 3


def workloads() -> dict[str, Callable[[], None]]:
    """Name -> one round of CALLS requests."""
    import admission as adm
    import bench_client as bc

    def through(transport: bc.Inner | adm.httpx.Transport) -> Callable[[], None]:
        request = bc.chat_request()
        calls = range(CALLS)

        def one_round() -> None:
            for _ in calls:
                response = transport.handle_request(request)
                response.read()
                response.close()

        return one_round

    # One loop for every async workload (made once: not counted per request).
    loop = asyncio.new_event_loop()

    def through_async(transport: bc.Inner | adm.httpx.AsyncTransport) -> Callable[[], None]:
        request = bc.chat_request()
        calls = range(CALLS)

        async def requests() -> None:
            for _ in calls:
                response = await transport.handle_async_request(request)
                await response.aread()
                await response.aclose()

        def one_round() -> None:
            loop.run_until_complete(requests())

        return one_round

    def transport(row: bc.Row) -> adm.httpx.Transport:
        return adm.httpx.Transport(bc.inner_for(row), **row.config())

    def async_transport(row: bc.Row) -> adm.httpx.AsyncTransport:
        return adm.httpx.AsyncTransport(bc.inner_for(row), **row.config())

    rows = {row.key: row for row in bc.ROWS}
    anthropic_answer = (bc.ANTHROPIC_HEADERS, bc.ANTHROPIC_BODY)
    return {
        "bare": through(bc.Inner()),
        "bare, anthropic answer": through(bc.Inner(*anthropic_answer)),
        "host preset": through(transport(rows["transport host preset"])),
        "openai preset": through(transport(rows["transport openai preset"])),
        "anthropic preset": through(transport(rows["transport anthropic preset"])),
        "async bare": through_async(bc.Inner()),
        "async bare, anthropic answer": through_async(bc.Inner(*anthropic_answer)),
        "async host preset": through_async(async_transport(rows["transport host preset"])),
        "async openai preset": through_async(async_transport(rows["transport openai preset"])),
        "async anthropic preset": through_async(
            async_transport(rows["transport anthropic preset"])
        ),
    }


if __name__ == "__main__":
    script_main(__file__, workloads, CALLS, FEW, MORE)

"""What one member's join/leave loop costs everyone else in a big room."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from app.settings import Settings

from ..conftest import TIMEOUT, UNLIMITED, ServeFactory
from ..members import Member

MEMBERS = 1000
LOOP_SECONDS = 3.0


async def test_a_join_leave_loop_costs_the_room_a_bounded_number_of_presence_events(
        serve: ServeFactory) -> None:
    """One member looping join/leave as fast as acks come back, in a room of 1,000
    connections, on the default join and leave limits: every other member receives at
    most two presence events per leave the limits admit (its burst plus its rate over
    the loop), the loop is told rate_limited, and nobody is cut. (The 1,000 share one
    name, so seating them costs no presence traffic; each loop turn is one join and one
    leave event either way.)"""
    defaults = Settings()
    limits = {k: getattr(defaults, k) for k in UNLIMITED if k.startswith(("join", "leave"))}
    served = await serve(serializer="json", max_connections_per_name=MEMBERS,
                         max_connections_per_address=MEMBERS + 10, **limits)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        members = list(await asyncio.gather(*(
            Member.seat(session, served.url, "member") for _ in range(MEMBERS))))
        readers = [asyncio.ensure_future(m.read()) for m in members]
        looper = await Member.seat(session, served.url, "looper")
        try:
            acks: list[Any] = []
            next_id = 2
            deadline = asyncio.get_running_loop().time() + LOOP_SECONDS
            while asyncio.get_running_loop().time() < deadline:
                for event in ("leave", "join"):
                    await looper.ws.send_str(f'42/chat,{next_id}["{event}",{{"room":"big"}}]')
                    prefix = f"43/chat,{next_id}"
                    while not (reply := await looper.ws.receive_str()).startswith(prefix):
                        pass
                    acks.append(json.loads(reply[len(prefix):])[0])
                    next_id += 1
            # every event of the loop is out once a message sent after it arrives
            announcer, others = members[0], members[1:]
            await announcer.ws.send_str('42/chat,1["send",{"room":"big","text":"end"}]')
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(m.message.wait() for m in others))
            leaves = sum(1 for i, a in enumerate(acks) if i % 2 == 0 and a["ok"])
            assert leaves <= defaults.leave_burst + defaults.leave_rate * LOOP_SECONDS + 1
            # (the loop outran the limits: it was refused; how much faster it ran
            # depends on the machine, and is not what this test is about)
            assert any(a["error"]["code"] == "rate_limited" for a in acks if not a["ok"])
            assert max(len(m.presence) for m in others) <= 2 * leaves + 1
            assert len(served.chat.connections) == MEMBERS + 1  # nobody was cut
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(m.ws.close() for m in [*members, looper]))

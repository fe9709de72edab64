"""The agent's guard loops: a step run when prompted, or after a tick without a prompt.

A tick is `TICK_S` of the agent's clock, but never less than `GUARD_MIN_WALL_S` of wall time:
at real speed the guards still look every second, while a fleet simulator running 250 agents at
144x does not wake each loop 144 times a wall second (that was a third of a core). A loop may
also pace its prompts (`prompt_gap_s`, wall seconds between steps): the lease/interlock guard
does, since every poll of five device kinds prompts it; the reserve guard does not, so the
reserve stop follows every battery poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from protocols.clock import Clock

log = logging.getLogger(__name__)

TICK_S = 1.0
"""How often (clock seconds) leases and interlocks are looked at without a poll prompting it."""

GUARD_MIN_WALL_S = 0.25
"""The shortest wall-clock tick of a guard loop, whatever the clock's speed."""


def tick_wall_s(clock: Clock, tick_s: float = TICK_S, floor_s: float = GUARD_MIN_WALL_S) -> float:
    """Wall seconds between unprompted steps: one tick of the clock, at least `floor_s`."""
    return max(tick_s / max(clock.speed, 1e-9), floor_s)


class GuardLoop:
    """Runs `step` on each prompt (paced to `prompt_gap_s` wall apart) or each tick; counts
    its wakes. A failing step is logged and the loop goes on; cancellation ends it."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        step: Callable[[], Awaitable[object]],
        *,
        prompt_gap_s: float = 0.0,
        floor_s: float = GUARD_MIN_WALL_S,
    ) -> None:
        self.name = name
        self.clock = clock
        self.step = step
        self.prompt_gap_s = prompt_gap_s
        self.floor_s = floor_s
        self.prompt = asyncio.Event()
        self.wakes = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that arrives as the
            # prompt is set, and the loop would outlive the agent's stop().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick_wall_s(self.clock, floor_s=self.floor_s)):
                    await self.prompt.wait()
            self.prompt.clear()
            self.wakes += 1
            began = loop.time()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s step failed", self.name)
            rest = self.prompt_gap_s - (loop.time() - began)
            if rest > 0:
                await asyncio.sleep(rest)  # a prompt meanwhile stays set: handled right after


__all__ = ["GUARD_MIN_WALL_S", "TICK_S", "GuardLoop", "tick_wall_s"]

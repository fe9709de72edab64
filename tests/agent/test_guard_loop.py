"""The agent's guard loops: a wall-clock floor on their tick at simulator speed, the same one
second at real speed, paced prompts for the guard, unpaced ones for the reserve stop."""

from __future__ import annotations

import asyncio
import time

from agent.fleet_host import wall_floor_s
from agent.guard_loop import GUARD_MIN_WALL_S, GuardLoop, tick_wall_s
from protocols.clock import SimClock
from tests.agent.devices_support import wait_for

WINDOW_S = 1.0


async def noop() -> None:
    return None


def test_tick_is_one_clock_second_with_a_wall_floor() -> None:
    assert tick_wall_s(SimClock(0.0, speed=1.0)) == 1.0  # real speed: every second, as before
    assert tick_wall_s(SimClock(0.0, speed=2.0)) == 0.5
    assert tick_wall_s(SimClock(0.0, speed=144.0)) == GUARD_MIN_WALL_S


async def run_for(loop: GuardLoop, window_s: float, prompt_every_s: float | None) -> int:
    task = asyncio.create_task(loop.run())
    try:
        end = time.monotonic() + window_s
        while time.monotonic() < end:
            if prompt_every_s is not None:
                loop.prompt.set()
            await asyncio.sleep(prompt_every_s or 0.05)
        return loop.wakes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_unprompted_loop_wakes_at_most_four_times_a_wall_second_at_144x() -> None:
    loop = GuardLoop("t", SimClock(0.0, speed=144.0), noop)
    wakes = await run_for(loop, WINDOW_S, None)
    assert 2 <= wakes <= 5, wakes  # was 144 (one per simulated second)


async def test_paced_prompts_are_held_to_the_floor() -> None:
    loop = GuardLoop("t", SimClock(0.0, speed=144.0), noop, prompt_gap_s=GUARD_MIN_WALL_S)
    wakes = await run_for(loop, WINDOW_S, 0.005)  # a prompt every 5 ms (polls at 144x)
    assert 2 <= wakes <= 5, wakes


async def test_unpaced_prompt_steps_at_once() -> None:
    """The reserve guard: a battery poll's prompt runs the step now, not at the next tick."""
    steps: list[float] = []

    async def step() -> None:
        steps.append(time.monotonic())

    loop = GuardLoop("t", SimClock(0.0, speed=1.0), step)  # tick = 1 wall s
    task = asyncio.create_task(loop.run())
    try:
        for _ in range(3):
            n: int = len(steps)
            prompted = time.monotonic()
            loop.prompt.set()
            await wait_for(lambda: len(steps) > n, timeout=2.0, step=0.005)  # noqa: B023
            assert steps[n] - prompted < 0.2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_step_is_logged_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(1)
        raise RuntimeError("boom")

    loop = GuardLoop("t", SimClock(0.0, speed=144.0), step)
    task = asyncio.create_task(loop.run())
    try:
        await wait_for(lambda: len(calls) >= 2, timeout=3.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_fleet_host_stretches_the_floor_with_its_size() -> None:
    """Idle wakes of a whole host stay near 200 a wall second: 8 per agent per second at the
    plain floor would be 2,000 for 250 agents."""
    assert wall_floor_s(1) == GUARD_MIN_WALL_S
    assert wall_floor_s(250) == 2.5
    for n in (50, 250, 1000):
        assert 2 * n / wall_floor_s(n) <= 200.0

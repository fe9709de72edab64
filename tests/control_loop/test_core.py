"""The loop's pure core: send only changes, renew leases, track acks, retry with backoff,
raise `control_not_followed`, apply demand-response shares and stagger the recharge."""

from __future__ import annotations

import pytest

from aggregator.control.core import (
    FleetMemory,
    KeyMemory,
    Tracked,
    backoff_s,
    observe,
    plan_round,
    reconcile,
    same_command,
)
from aggregator.control.events import new_event
from protocols.control.fleet import ImportHistory
from tests.control_loop.helpers import SETTINGS, Driver, at, policy, site


def test_send_only_changes() -> None:
    d = Driver()
    r = d.round([site(now=at(10))], at(10))
    assert [(i.action, i.why) for i in r.intents] == [("battery.peak_shave", "change")]
    assert r.intents[0].params == {"discharge_limit_w": 2000.0}
    # Load moves by less than the tolerance: nothing to send.
    r = d.round([site(now=at(10, 1), load_w=2060)], at(10, 1))
    assert r.intents == []
    # A real change of the discharge limit goes out at once.
    r = d.round([site(now=at(10, 2), load_w=3000)], at(10, 2))
    assert [(i.params["discharge_limit_w"], i.why) for i in r.intents] == [(3000.0, "change")]


PS, CH, DORM = "battery.peak_shave", "battery.charge", "site.dormant"
DORMANT_45 = {"channels": [4, 5], "rectifier_eco": True, "ac_offset_c": 2.0}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ((PS, {"discharge_limit_w": 2000.0}), (PS, {"discharge_limit_w": 2150.0}), True),
        ((PS, {"discharge_limit_w": 2000.0}), (PS, {"discharge_limit_w": 2300.0}), False),
        ((PS, {"discharge_limit_w": 300.0}), (PS, {"discharge_limit_w": 390.0}), True),
        ((CH, {"charge_limit_w": 1e3, "target_soc": 95.0}),
         (CH, {"charge_limit_w": 1e3, "target_soc": 100.0}), False),
        (("battery.auto", {}), (PS, {"discharge_limit_w": 1.0}), False),
        ((DORM, DORMANT_45), (DORM, {**DORMANT_45, "channels": [4]}), False),
        ((DORM, DORMANT_45), (DORM, {**DORMANT_45, "ac_offset_c": 2.5}), True),
        (("site.wake", {}), ("site.wake", {}), True),
    ],
)  # fmt: skip
def test_same_command_table(
    a: tuple[str, dict[str, object]], b: tuple[str, dict[str, object]], same: bool
) -> None:
    assert same_command(a[0], a[1], b[0], b[1], SETTINGS) is same


def test_renewal_at_half_the_lease_and_never_for_defaults() -> None:
    d = Driver()
    d.round([site(now=at(10))], at(10))
    for minute in range(1, 5):
        assert d.round([site(now=at(10, minute))], at(10, minute)).intents == []
    r = d.round([site(now=at(10, 5))], at(10, 5))  # 300 s = half of the 600 s lease
    assert [(i.action, i.why) for i in r.intents] == [("battery.peak_shave", "renew")]
    assert d.round([site(now=at(10, 6))], at(10, 6)).intents == []
    # Peak ends at 15:00 with the pack (still) near full: back to auto once, then nothing (auto
    # holds no lease).
    r = d.round([site(now=at(15, 1), soc=95)], at(15, 1))
    assert [(i.action, i.why) for i in r.intents] == [("battery.auto", "change")]
    for minute in range(2, 40, 5):
        assert d.round([site(now=at(15, minute), soc=95)], at(15, minute)).intents == []


def test_first_round_default_is_not_a_change() -> None:
    d = Driver()
    r = d.round([site(now=at(16), soc=95)], at(16))  # flat, charged, outside the window
    assert r.intents == []
    assert r.outcomes["s1"].battery == "battery.auto"


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 30), (2, 60), (3, 120), (5, 480), (6, 600), (9, 600)]
)
def test_backoff_table(failures: int, delay: float) -> None:
    assert backoff_s(failures, SETTINGS) == delay


def test_retry_with_backoff_then_not_followed_alarm_then_clear() -> None:
    d = Driver()
    t = at(10)
    d.round([site(now=t)], t, ack="rejected", reason="interlock: reserve")
    # Rejected: one failure, retry after 30 s.
    r = d.round([site(now=t + 10)], t + 10, ack="rejected", reason="interlock: reserve")
    assert r.intents == []
    km = d.memory.sites["s1"].key("battery")
    assert (km.failures, km.retry_at, km.last_error) == (1, t + 10 + 30, "interlock: reserve")
    r = d.round([site(now=t + 40)], t + 40, ack=None)
    assert [i.why for i in r.intents] == ["retry"]
    # No ack at all: a failure once the ack timeout has passed, retried after 60 s.
    assert d.round([site(now=t + 70)], t + 70, ack=None).intents == []
    r = d.round([site(now=t + 100)], t + 100, ack=None)
    assert r.intents == [] and d.memory.sites["s1"].key("battery").failures == 2
    r = d.round([site(now=t + 160)], t + 160, ack="failed", reason="write failed")
    assert [i.why for i in r.intents] == ["retry"]
    # Third failure in a row: the alarm.
    r = d.round([site(now=t + 170)], t + 170)
    assert [(a.site, a.active) for a in r.alarms] == [("s1", True)]
    assert "3 failed battery.peak_shave" in r.alarms[0].message
    assert "write failed" in r.alarms[0].message
    # Raised once only.
    r = d.round([site(now=t + 200)], t + 200)
    assert r.alarms == []
    # The retry after 120 s is applied: the alarm clears.
    r = d.round([site(now=t + 290)], t + 290)
    assert [i.why for i in r.intents] == ["retry"]
    r = d.round([site(now=t + 300)], t + 300)
    assert [(a.site, a.active) for a in r.alarms] == [("s1", False)]
    assert d.memory.sites["s1"].key("battery").failures == 0


def test_return_to_default_is_never_held_back_by_backoff() -> None:
    last = Tracked(PS, {"discharge_limit_w": 2e3}, at(10), 600, "c1", "rejected", True)
    km = KeyMemory(last=last, failures=2, retry_at=at(11))
    why, _ = reconcile("battery", "battery.auto", {}, km, at(10, 1), SETTINGS)
    assert why == "change"
    charge = {"charge_limit_w": 900.0, "target_soc": 95.0}
    why, _ = reconcile("battery", CH, charge, km, at(10, 1), SETTINGS)
    assert why is None  # a new non-default command waits for the backoff


def test_observe_counts_a_failure_once() -> None:
    km = KeyMemory(last=Tracked("site.dormant", {}, 0.0, 600, "c1"))
    from aggregator.control.core import Ack

    km = observe(km, {"c1": Ack("failed", "breaker locked")}, 5.0, SETTINGS)
    km = observe(km, {"c1": Ack("failed", "breaker locked")}, 6.0, SETTINGS)
    assert (km.failures, km.last_error) == (1, "breaker locked")


def test_stale_offline_and_disabled_sites_are_left_alone() -> None:
    d = Driver()
    now = at(10)
    fleet = [
        site("stale", now=now, age_s=900),
        site("off", now=now, online=False),
        site("dis", now=now, pol=policy(enabled=False)),
        site("ok", now=now),
    ]
    r = d.round(fleet, now)
    assert r.skipped == {
        "stale": "no fresh readings",
        "off": "offline",
        "dis": "control disabled by policy",
    }
    assert [i.site for i in r.intents] == ["ok"]


def test_dormant_entry_and_outage_wake() -> None:
    d = Driver()
    t = at(1)  # inside the 00:00-05:00 window, capacity load 200 W < 300 W
    d.round([site(now=t, capacity_ch_w=200)], t)
    r = d.round([site(now=t + 960, capacity_ch_w=200)], t + 960)  # after the 900 s dwell
    dormant = [i for i in r.intents if i.key == "dormant"]
    assert [(i.action, i.params["channels"]) for i in dormant] == [("site.dormant", [4, 5])]
    assert dormant[0].params["until"] == int(at(5) * 1000)
    # Mains fails: wake at once (no dwell, no switch limit holds it back).
    r = d.round([site(now=t + 1020, capacity_ch_w=0, mains=False)], t + 1020)
    assert {(i.key, i.action) for i in r.intents} == {
        ("dormant", "site.wake"),
        ("battery", "battery.auto"),  # it was recharging in the valley; now on battery
    }
    assert r.outcomes["s1"].dormant_code == "mains_failure"


def test_lead_acid_is_left_in_auto_at_peak() -> None:
    d = Driver()
    r = d.round([site(now=at(10), pol=policy(battery={"chemistry": "lead_acid"}))], at(10))
    assert r.intents == []
    assert r.outcomes["s1"].battery_code == "uneconomic"


def _fleet(now: float, socs: dict[str, float], **kw: float) -> list:  # type: ignore[type-arg]
    return [site(n, now=now, soc=soc, **kw) for n, soc in socs.items()]  # type: ignore[arg-type]


def test_demand_response_shares_follow_energy_above_reserve() -> None:
    d = Driver()
    # 16:00 is flat: without the event nobody would discharge.
    now = at(16)
    ev = new_event(cap_w=2000, start=at(15, 30), end=at(17), created_by="op", created_ms=0)
    fleet = _fleet(now, {"a": 90.0, "b": 70.0}, load_w=1900)
    r = d.round(fleet, now, events=[ev])
    shares = {i.site: i.params["discharge_limit_w"] for i in r.intents}
    # Import with batteries idle = 2 × 2000 W; the loop aims 5 % under the cap (dr_margin_pct):
    # 2100 W must go, shared by energy above reserve.
    assert sum(shares.values()) == pytest.approx(2100.0, abs=1)
    assert shares["a"] > shares["b"] > 0
    assert r.allocations[ev.id] == pytest.approx(2100.0)
    assert all(r.outcomes[s].battery_code == "demand_response" for s in "ab")


def test_demand_response_in_a_group_only_touches_its_members() -> None:
    d = Driver()
    now = at(16)
    ev = new_event(cap_w=1000, start=at(15), end=at(17), group="west", created_by="op",
                   created_ms=0)  # fmt: skip
    fleet = [site("w1", now=now, region="west"), site("e1", now=now, region="east", soc=95)]
    r = d.round(fleet, now, events=[ev])
    assert {i.site for i in r.intents} == {"w1"}


def test_recharge_after_the_event_is_staggered_under_the_ceiling() -> None:
    d = Driver()
    start, end = at(15, 30), at(16, 30)
    ev = new_event(cap_w=0, start=start, end=end, recharge_ceiling_w=3000, created_by="op",
                   created_ms=0)  # fmt: skip
    # Lead-acid packs (never cycled for money, so the planner leaves them in auto, which
    # would float them at full rate) and one LFP pack, which the planner holds until the valley.
    socs = {"a": 60.0, "b": 55.0, "c": 50.0}
    lead = policy(battery={"chemistry": "lead_acid"})

    def fleet(now: float) -> list:  # type: ignore[type-arg]
        return [*_fleet(now, socs, pol=lead), site("d", now=now, soc=58.0)]  # type: ignore[arg-type]

    d.round(fleet(at(16)), at(16), events=[ev])
    r = d.round(fleet(end + 60), end + 60, events=[ev])
    plan = r.memory.plans[f"dr:{ev.id}"]
    # Σ charge ≤ ceiling at every slot boundary; 2000 W per site (0.3 C of 20 kWh capped by
    # nothing else is 6000 W, so the ceiling 3000 W lets one site run at a time).
    for slot in plan.slots:
        assert plan.power_at(slot.start) <= 3000 + 1e-6
    by_site = {i.site: i for i in r.intents}
    first = plan.slots[0].site
    assert by_site[first].action == "battery.charge"
    assert by_site[first].params["target_soc"] == 100.0  # auto would float it to full
    for other in set(socs) - {first}:
        held = by_site[other]
        assert held.action == "battery.charge"
        assert held.params["target_soc"] == socs[other]  # hold: charge to the SOC it has
    # The LFP pack is in the plan too, but held by its own planner until the valley (flat).
    assert r.outcomes["d"].battery_code == "hold"
    assert by_site["d"].params == {"charge_limit_w": 100.0, "target_soc": 58.0}
    assert r.memory.events_done == frozenset({ev.id})


def test_valley_start_stagger_holds_late_sites() -> None:
    s = SETTINGS.model_copy(update={"recharge_ceiling_w": 6000.0})
    d = Driver(s)
    now = at(22, 1)
    r = d.round(_fleet(now, {"a": 40.0, "b": 45.0, "c": 50.0}, load_w=1500), now)
    plan = next(v for k, v in r.memory.plans.items() if k.startswith("valley:"))
    assert [sl.site for sl in plan.slots] == ["a", "b", "c"]  # largest need first
    charging = [i for i in r.intents if i.key == "battery" and i.params["target_soc"] == 95.0]
    holding = [i for i in r.intents if i.key == "battery" and i.params["target_soc"] < 95.0]
    assert sum(i.params["charge_limit_w"] for i in charging) <= 6000 + 1e-6
    assert len(charging) == 1 and len(holding) == 2
    # The same valley is not planned again after midnight.
    r2 = d.round(_fleet(at(0, 30, day=6), {"a": 40.0, "b": 45.0, "c": 50.0}, load_w=1500),
                 at(0, 30, day=6))  # fmt: skip
    assert [k for k in r2.memory.plans if k.startswith("valley:")] == [
        k for k in r.memory.plans if k.startswith("valley:")
    ]


def test_memory_is_not_mutated() -> None:
    mem = FleetMemory()
    plan_round([site(now=at(10))], [], mem, {}, at(10), SETTINGS)
    assert mem.sites == {}


# Reserve of the helper site (2 kW load, 20 kWh): 10 + 100 × 2000 × 3 / 0.95 / 20000.
RESERVE = 10 + 100 * 2000 * 3 / 0.95 / 20000
HELD = "battery.charge"


@pytest.mark.parametrize(
    ("soc", "when", "chem", "action", "code", "params"),
    [
        (90.0, at(10), "lfp", PS, "shave", {"discharge_limit_w": 2000.0}),
        # After shaving, flat (15:00-18:00): held until the valley, not floated at full rate.
        (60.0, at(16), "lfp", HELD, "hold", {"charge_limit_w": 100.0, "target_soc": 60.0}),
        (43.6, at(16), "lfp", HELD, "hold", {"charge_limit_w": 100.0, "target_soc": 43.6}),
        # Near the reserve (under reserve + 2 %): restore at once, at 0.1 C, to + 3 % more.
        (43.0, at(16), "lfp", CH, "restore",
         {"charge_limit_w": 2000.0, "target_soc": pytest.approx(RESERVE + 5)}),
        # At the shaving floor (reserve + 2.5 %) in a peak: held (auto would float it at the
        # peak price); under the reserve: restored to it.
        (42.0, at(10), "lfp", HELD, "at_reserve", {"charge_limit_w": 100.0, "target_soc": 42.0}),
        (41.0, at(10), "lfp", CH, "restore",
         {"charge_limit_w": 2000.0, "target_soc": pytest.approx(RESERVE + 0.5)}),
        # Flat before the valley (21:00-22:00) holds; the valley recharges (one site: its slot
        # starts at once, at its own rate).
        (60.0, at(21, 30), "lfp", HELD, "hold", {"charge_limit_w": 100.0, "target_soc": 60.0}),
        (60.0, at(22, 30), "lfp", CH, "recharge", {"charge_limit_w": 6000.0, "target_soc": 95.0}),
        # Charged: auto (the first round sends no default).
        (95.0, at(16), "lfp", None, "idle", None),
        # Lead-acid is never cycled for money: auto.
        (60.0, at(16), "lead_acid", None, "uneconomic", None),
    ],
)  # fmt: skip
def test_core_hold_and_restore_table(
    soc: float,
    when: float,
    chem: str,
    action: str | None,
    code: str,
    params: dict[str, object] | None,
) -> None:
    d = Driver()
    r = d.round([site(now=when, soc=soc, pol=policy(battery={"chemistry": chem}))], when)
    assert r.outcomes["s1"].battery_code == code, r.outcomes["s1"].reason
    battery = [i for i in r.intents if i.key == "battery"]
    if action is None:
        assert battery == [] and r.outcomes["s1"].battery == "battery.auto"
    else:
        assert [(i.action, dict(i.params)) for i in battery] == [(action, params)]


def test_hold_is_renewed_and_never_a_recharge_before_the_valley() -> None:
    """A held pack's command is renewed as any lease; its SOC drifting under the target by
    less than a point is not a change; it only recharges once the valley comes."""
    d = Driver()
    socs = {at(15, m): 60.0 - m * 0.01 for m in range(1, 60)}
    sent = []
    for t, soc in socs.items():
        sent += [(t, i) for i in d.round([site(now=t, soc=soc)], t).intents if i.key == "battery"]
    # Sent once, then renewed every 300 s (half the lease): 15:01, 15:06 … 15:56.
    assert [i.why for _, i in sent] == ["change"] + ["renew"] * 11
    for t, i in sent:
        assert i.action == HELD and i.params["charge_limit_w"] == 100.0
        assert socs[t] - 0.1 <= i.params["target_soc"] <= socs[t]  # never a top-up
    # The valley: the recharge (here at once: a lone site's slot starts now).
    r = d.round([site(now=at(22, 1), soc=59.4)], at(22, 1))
    assert [(i.action, i.params["target_soc"]) for i in r.intents] == [(CH, 95.0)]


def test_valley_ceiling_from_the_fleets_day_peak() -> None:
    """With a day of history, the valley stagger's ceiling is the headroom under 90 % of the
    fleet's day peak (battery idle) above its import now — here below each site's 6 kW rate, so
    one site charges at it and the night stays under the day's peak."""
    history = ImportHistory(((at(1) // 3600 * 3600, 7000.0), (at(12) // 3600 * 3600, 10_000.0)))
    d = Driver()
    d.memory = FleetMemory(history=history)
    now = at(22, 1)
    fleet = _fleet(now, {"a": 40.0, "b": 45.0, "c": 50.0}, load_w=1500)
    r = d.round(fleet, now)
    plan = next(v for k, v in r.memory.plans.items() if k.startswith("valley:"))
    night = 3 * 1500 / 0.95
    assert plan.ceiling_w == pytest.approx(0.9 * 10_000 - night)
    charging = [i for i in r.intents if i.key == "battery" and i.params["target_soc"] == 95.0]
    assert [i.params["charge_limit_w"] for i in charging] == [pytest.approx(plan.ceiling_w)]
    assert night + plan.ceiling_w / 0.95 <= 10_000 * 1.0
    # Without enough history (a loop started this evening) the spread alone decides.
    r = Driver().round(fleet, now)
    plan = next(v for k, v in r.memory.plans.items() if k.startswith("valley:"))
    assert plan.ceiling_w == 6000.0

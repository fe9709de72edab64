"""Topic building and parsing: a table of good and bad topics, round trips, site id rules."""

from __future__ import annotations

import pytest

from protocols.errors import ConfigError, MessageError
from protocols.topics import (
    AGGREGATOR,
    DEFAULT_TOPICS,
    ParsedTopic,
    TopicKind,
    Topics,
    check_site_id,
    shared_subscription,
)

T = DEFAULT_TOPICS


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("sitewatt/v1/site-001/telemetry", ParsedTopic("site-001", TopicKind.TELEMETRY)),
        ("sitewatt/v1/site-001/state", ParsedTopic("site-001", TopicKind.STATE)),
        ("sitewatt/v1/SZ.0042_b/receipt", ParsedTopic("SZ.0042_b", TopicKind.RECEIPT)),
        ("sitewatt/v1/s/cmd", ParsedTopic("s", TopicKind.CMD)),
        ("sitewatt/v1/7/ack", ParsedTopic("7", TopicKind.ACK)),
        ("sitewatt/v1/aggregator/state", ParsedTopic(AGGREGATOR, TopicKind.AGGREGATOR_STATE)),
    ],
)
def test_parse_good(topic: str, expected: ParsedTopic) -> None:
    assert T.parse(topic) == expected
    assert T.topic(expected.site, expected.kind) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "sitewatt/v1",
        "sitewatt/v1/",
        "sitewatt/v2/site-001/telemetry",
        "other/v1/site-001/telemetry",
        "sitewatt/v1/site-001",
        "sitewatt/v1/site-001/telemetry/extra",
        "sitewatt/v1/site-001/bogus",
        "sitewatt/v1//telemetry",
        "sitewatt/v1/+/telemetry",
        "sitewatt/v1/#/telemetry",
        "sitewatt/v1/aggregator/telemetry",
        "sitewatt/v1/Aggregator/cmd",
        "sitewatt/v1/aggregator/cmd",
        "sitewatt/v1/-site/ack",
        "sitewatt/v1/si te/ack",
        "sitewatt/v1/" + "a" * 65 + "/ack",
        "sitewatt/v1/site-001/aggregator/state",
        "sitewatt/v1/site/Telemetry",
    ],
)
def test_parse_bad(topic: str) -> None:
    with pytest.raises(MessageError):
        T.parse(topic)


def test_builders() -> None:
    assert T.telemetry("s1") == "sitewatt/v1/s1/telemetry"
    assert T.state("s1") == "sitewatt/v1/s1/state"
    assert T.receipt("s1") == "sitewatt/v1/s1/receipt"
    assert T.cmd("s1") == "sitewatt/v1/s1/cmd"
    assert T.ack("s1") == "sitewatt/v1/s1/ack"
    assert T.aggregator_state() == "sitewatt/v1/aggregator/state"
    assert T.all_sites(TopicKind.TELEMETRY) == "sitewatt/v1/+/telemetry"
    assert shared_subscription("ingest", T.all_sites(TopicKind.TELEMETRY)) == (
        "$share/ingest/sitewatt/v1/+/telemetry"
    )


def test_custom_prefix() -> None:
    t = Topics("acme/energy/v1")
    assert t.cmd("x") == "acme/energy/v1/x/cmd"
    assert t.parse("acme/energy/v1/x/cmd") == ("x", TopicKind.CMD)
    with pytest.raises(MessageError):
        t.parse("sitewatt/v1/x/cmd")


@pytest.mark.parametrize("prefix", ["", "/a", "a/", "a//b", "a/+", "a/#", "$SYS/x", "a b"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError):
        Topics(prefix)


@pytest.mark.parametrize("site", ["", "a/b", "+", "#", "aggregator", "AGGREGATOR", "a" * 65, "é"])
def test_builders_refuse_bad_site_ids(site: str) -> None:
    with pytest.raises(MessageError):
        T.telemetry(site)
    with pytest.raises(MessageError):
        check_site_id(site)


def test_site_id_max_length_accepted() -> None:
    assert check_site_id("a" * 64) == "a" * 64

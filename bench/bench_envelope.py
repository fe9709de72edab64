"""Envelope (figure 7): sign and verify per second, and bytes per reading on the wire.

Measured in-process, one core, on realistic readings of the full benchmark site (every point of
its five devices at its profile's resolution, in poll order):

- single messages: `Signer.seal` of a small map (a command ack: the common non-telemetry
  message) and `unseal` of it with a keyring of 1,000 site keys, as the aggregator holds;
- batches of 100 and 500 readings: encode (columnar CBOR) + sign, and verify + decode, per
  second and in readings per second;
- wire size: the sealed COSE_Sign1 bytes per reading, against the same readings as JSON in the
  per-reading object form common to IoT gateways (`[{"ts", "device", "point", "value",
  "quality"}]`) and as compact JSON arrays (`[[ts, device, point, value, quality]]`).

    python -m bench.bench_envelope [--quick] [--runs N]
"""

from __future__ import annotations

import json
import uuid

from bench.common import Row, emit, median_rate, parser, runs_of, show, site_readings
from protocols import messages
from protocols.envelope import Keyring, Signer, unseal
from protocols.keys import generate_key
from protocols.messages import Ack, AckStatus, TelemetryBatch
from protocols.topics import DEFAULT_TOPICS

SIGN_TARGET = 28_000 * 0.8  # DESIGN.md "checked": Ed25519 sign ~28k/s on one core
VERIFY_TARGET = 9_500 * 0.8


def batch_bytes(signer: Signer, topic: str, n: int, seq: int) -> tuple[TelemetryBatch, bytes]:
    readings = tuple(site_readings(n))
    batch = TelemetryBatch("site-0001", "boot-1", seq, readings[-1].t + 40, readings)
    return batch, signer.seal_bytes(messages.encode(batch), topic)


def json_naive(batch: TelemetryBatch) -> bytes:
    rows = [
        {"ts": r.t, "device": r.device, "point": r.point, "value": r.value, "quality": "good"}
        for r in batch.readings
    ]
    return json.dumps(rows, separators=(",", ":")).encode()


def json_compact(batch: TelemetryBatch) -> bytes:
    rows = [[r.t, r.device, r.point, r.value, int(r.quality)] for r in batch.readings]
    return json.dumps(rows, separators=(",", ":")).encode()


def main() -> None:
    args = parser(__doc__).parse_args()
    runs = runs_of(args)
    secs = 0.2 if args.quick else 1.0
    topics = DEFAULT_TOPICS
    signer = Signer(generate_key())
    keyring = Keyring([generate_key().public_key() for _ in range(999)])
    keyring.add(signer.public_key)

    ack_topic = topics.ack("site-0001")
    ack = Ack(
        str(uuid.uuid4()),
        "site-0001",
        42,
        AckStatus.APPLIED,
        1_750_000_000_000,
        "",
        {"battery.discharge_limit": 1500.0, "battery.mode": 2},
    )
    ack_map = ack.to_map()
    ack_sealed = signer.seal(ack_map, ack_topic)

    figures: dict[str, float] = {}
    rows: list[Row] = []
    figures["sign_per_s"] = median_rate(
        lambda: signer.seal(ack_map, ack_topic), seconds=secs, runs=runs
    )
    figures["verify_per_s"] = median_rate(
        lambda: unseal(ack_sealed, ack_topic, keyring), seconds=secs, runs=runs
    )
    rows.append(
        Row(
            "sign, single message (ack)",
            figures["sign_per_s"],
            "msg/s",
            f"≈ Ed25519 ceiling (≥ {SIGN_TARGET:,.0f})",
            figures["sign_per_s"] >= SIGN_TARGET,
        )
    )
    rows.append(
        Row(
            "verify, single message (ack)",
            figures["verify_per_s"],
            "msg/s",
            f"≈ Ed25519 ceiling (≥ {VERIFY_TARGET:,.0f})",
            figures["verify_per_s"] >= VERIFY_TARGET,
        )
    )

    tel_topic = topics.telemetry("site-0001")
    for n in (100, 500):
        batch, sealed = batch_bytes(signer, tel_topic, n, 1)

        def seal_one(batch: TelemetryBatch = batch) -> bytes:
            return signer.seal_bytes(messages.encode(batch), tel_topic)

        def open_one(sealed: bytes = sealed) -> object:
            return messages.decode(unseal(sealed, tel_topic, keyring).payload)

        s = median_rate(seal_one, seconds=secs, runs=runs)
        v = median_rate(open_one, seconds=secs, runs=runs)
        figures[f"seal_{n}_batches_per_s"] = s
        figures[f"seal_{n}_readings_per_s"] = s * n
        figures[f"open_{n}_batches_per_s"] = v
        figures[f"open_{n}_readings_per_s"] = v * n
        rows.append(
            Row(f"encode+sign, {n}-reading batch", s * n, "readings/s", f"{s:,.0f} batches/s")
        )
        rows.append(
            Row(f"verify+decode, {n}-reading batch", v * n, "readings/s", f"{v:,.0f} batches/s")
        )

        cose = len(sealed) / n
        naive = len(json_naive(batch)) / n
        compact = len(json_compact(batch)) / n
        figures[f"bytes_per_reading_cose_{n}"] = cose
        figures[f"bytes_per_reading_json_{n}"] = naive
        figures[f"bytes_per_reading_json_compact_{n}"] = compact
        rows.append(Row(f"wire: CBOR+COSE, {n}-reading batch", cose, "B/reading"))
        rows.append(
            Row(
                f"wire: JSON objects, same {n} readings",
                naive,
                "B/reading",
                f"COSE is {naive / cose:.1f}x smaller",
            )
        )
        rows.append(
            Row(
                f"wire: JSON arrays, same {n} readings",
                compact,
                "B/reading",
                f"COSE is {compact / cose:.1f}x smaller",
            )
        )

    # The aggregator's hot path in the targets: 100k readings/s = 1,000 batches of 100 verified.
    need = 100_000 / 100
    ok = figures["open_100_batches_per_s"] >= need
    rows.append(
        Row(
            "verify+decode headroom for 100k readings/s ingest (100/batch)",
            figures["open_100_batches_per_s"] / need,
            "x one core",
            "≥ 1",
            ok,
        )
    )
    show(f"envelope (median of {runs} runs, one core)", rows)
    emit("envelope", figures)


if __name__ == "__main__":
    main()

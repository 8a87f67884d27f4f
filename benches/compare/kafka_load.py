#!/usr/bin/env python3
"""Write the Nexmark bids of a generated events directory into a Kafka topic,
once, as JSON values.

    scripts/kafka-py.sh benches/compare/kafka_load.py \
        --data ~/.cache/sluice-nexmark/events-10000000 --topic nexmark-bids-10000000 --partitions 2

Reads `DATA/bid/*.parquet` (written by `sluice nexmark generate --format
parquet`) in file-name order and writes one record per bid, with no key and
a JSON object as the value:

    {"auction":1000,"bidder":1001,"price":73134520,"channel":"channel-7568",
     "url":"https://...","date_time":"2023-11-14 22:13:20.001000","extra":"..."}

`date_time` is written as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, no zone), which
both Sluice (a TIMESTAMP column of a json-format Kafka source) and Spark
(`from_json` with a TIMESTAMP field, session time zone UTC) parse.

Bid number i (counting over all files) goes to partition i % PARTITIONS, so
every partition holds the same stretch of event time and a micro-batch that
takes the same number of records from each partition covers one contiguous
range of the stream, like one generated file does. The record timestamps are
the produce time (not the event time: the broker's 7-day retention would
delete records stamped 2023).

If the topic already exists and holds exactly the expected number of records
in PARTITIONS partitions, nothing is written. If it exists with anything
else, the script stops (delete the topic or pick another name), unless
--recreate is given. The last line printed is a JSON summary:
{"topic": ..., "partitions": ..., "records": ..., "loaded": true|false}.

Needs confluent-kafka and pyarrow (benches/compare/kafka.sh installs pyarrow
into scripts/kafka-py.sh's virtualenv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BID_COLUMNS = ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]
STRING_COLUMNS = ["channel", "url", "extra"]
# Characters a JSON string cannot hold as they are.
NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def topic_counts(bootstrap: str, topic: str) -> dict[int, int] | None:
    """Records per partition of `topic` (high minus low watermark), or None
    if the topic does not exist."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=30)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kafka-load-count-{time.time_ns()}",
                  "enable.auto.commit": False})
    try:
        counts = {}
        for p in sorted(t.partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            counts[p] = high - low
        return counts
    finally:
        c.close()


def json_values(batch: pa.RecordBatch) -> list[str]:
    """The JSON value of every row of a batch of bids, in column order."""
    cols = {name: batch.column(name) for name in BID_COLUMNS}
    if any(pc.any(pc.match_substring_regex(cols[c], NEEDS_ESCAPE)).as_py() for c in STRING_COLUMNS):
        # Some string needs escaping: let json do it (slower, never the case
        # for the generator's output so far).
        rows = batch.select(BID_COLUMNS).to_pylist()
        return [json.dumps({**r, "date_time": r["date_time"].strftime("%Y-%m-%d %H:%M:%S.%f")},
                           separators=(",", ":")) for r in rows]
    ts = pc.strftime(cols["date_time"], format="%Y-%m-%d %H:%M:%S")  # %S has the microseconds
    s = lambda c: pc.cast(cols[c], pa.string())  # noqa: E731
    parts = ['{"auction":', s("auction"), ',"bidder":', s("bidder"), ',"price":', s("price"),
             ',"channel":"', cols["channel"], '","url":"', cols["url"], '","date_time":"', ts,
             '","extra":"', cols["extra"], '"}']
    return pc.binary_join_element_wise(*parts, "").to_pylist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="events directory (with bid/*.parquet)")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--compression", default="none", help="producer compression.type (default none)")
    ap.add_argument("--recreate", action="store_true", help="delete and re-create a topic that holds other data")
    args = ap.parse_args()

    files = sorted((args.data / "bid").glob("*.parquet"))
    if not files:
        sys.exit(f"no Parquet files under {args.data / 'bid'}")
    expected = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    summary = {"topic": args.topic, "partitions": args.partitions, "records": expected, "loaded": False}

    counts = topic_counts(args.bootstrap, args.topic)
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    if counts is not None:
        if len(counts) == args.partitions and sum(counts.values()) == expected:
            print(f"topic {args.topic} already holds {expected} records in {args.partitions} partitions; "
                  "not loading again", file=sys.stderr)
            print(json.dumps(summary))
            return 0
        what = f"{sum(counts.values())} records in {len(counts)} partitions"
        if not args.recreate:
            sys.exit(f"topic {args.topic} exists with {what}, expected {expected} in {args.partitions}: "
                     "delete it (scripts/kafka.sh topic-delete) or pass --recreate")
        print(f"deleting topic {args.topic} ({what})", file=sys.stderr)
        for f in admin.delete_topics([args.topic], operation_timeout=60).values():
            f.result()
        for _ in range(120):  # deletion is asynchronous
            if topic_counts(args.bootstrap, args.topic) is None:
                break
            time.sleep(0.5)

    for f in admin.create_topics([NewTopic(args.topic, args.partitions, 1)], operation_timeout=60).values():
        f.result()
    print(f"created topic {args.topic} with {args.partitions} partitions; writing {expected} bids "
          f"from {len(files)} files", file=sys.stderr)

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": args.compression,
        "acks": "all",
    })
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None and len(errors) < 10:
            errors.append(str(err))

    t0 = time.perf_counter()
    i = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=BID_COLUMNS):
            for v in json_values(batch):
                while True:
                    try:
                        producer.produce(args.topic, value=v, partition=i % args.partitions, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                i += 1
            producer.poll(0)
            if errors:
                sys.exit(f"producing failed: {errors}")
        print(f"  {f.name}: {i} records queued, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    left = producer.flush(300)
    if left or errors:
        sys.exit(f"producing failed: {left} records not delivered; errors: {errors}")
    elapsed = time.perf_counter() - t0

    counts = topic_counts(args.bootstrap, args.topic) or {}
    if sum(counts.values()) != expected:
        sys.exit(f"topic {args.topic} holds {sum(counts.values())} records after loading, expected {expected}")
    print(f"wrote {expected} records in {elapsed:.1f} s ({expected / elapsed:,.0f} records/s); "
          f"per partition {counts}", file=sys.stderr)
    summary["loaded"] = True
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as e:
        sys.exit(f"kafka error: {e}")

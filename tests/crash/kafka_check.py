#!/usr/bin/env python3
"""Input and independent checker of the Kafka crash-restart harness
(tests/crash/kafka_crash_test.sh); run it with scripts/kafka-py.sh.

  kafka_check.py produce BOOTSTRAP TOPIC FROM TO
      produce the input records with ids FROM..TO-1 (idempotent producer)
  kafka_check.py check BOOTSTRAP IN_TOPIC OUT_TOPIC RECORDS CYCLES KILLS
      read the whole output topic the way an outside consumer must
      (isolation.level=read_committed, every partition from the beginning
      to its end), compare it with what the query must give for input ids
      0..RECORDS-1, and print
      `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`;
      exit 1 if anything is lost, duplicated or wrong.

The input record of id i is {"id": i, "k": "k<i%5>", "v": v(i)}; the query
(kafka_queries.sql) keeps v % 10 <> 0 and writes key = "<i>", value =
{"key": "<i>", "id": i, "k": "k<i%5>", "v2": 2*v(i)}.
"""
import collections, json, sys, time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition


def v_of(i):
    return i * 7 % 1001


def expected(i):
    """The output value of input id i, or None if the query drops it."""
    v = v_of(i)
    if v % 10 == 0:
        return None
    return {"key": str(i), "id": i, "k": f"k{i % 5}", "v2": 2 * v}


def produce(bootstrap, topic, lo, hi):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(lo, hi):
        p.produce(topic, key=str(i), value=json.dumps({"id": i, "k": f"k{i % 5}", "v": v_of(i)}))
        p.poll(0)
    left = p.flush(30)
    if left:
        sys.exit(f"kafka_check.py: {left} input records not acknowledged")


def read_all(bootstrap, topic, timeout=120):
    """Every committed record of topic, (key, value) pairs, all partitions."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"sluice-crash-check-{time.time_ns()}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    if not parts:
        sys.exit(f"kafka_check.py: topic {topic} has no partitions (does it exist?)")
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    pending, out, deadline = set(parts), [], time.time() + timeout
    while pending:
        if time.time() > deadline:
            sys.exit(f"kafka_check.py: {topic}: no end of partitions {sorted(pending)} after {timeout}s")
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(m.partition())
                continue
            sys.exit(f"kafka_check.py: {topic}: {m.error()}")
        out.append((m.key(), m.value()))
    c.close()
    return out


def check(bootstrap, in_topic, out_topic, records, cycles, kills):
    broken = 0
    # The input itself: every id once (else the harness, not Sluice, is broken).
    ids = collections.Counter(json.loads(v)["id"] for _, v in read_all(bootstrap, in_topic))
    if ids != collections.Counter(range(records)):
        print(f"input topic {in_topic} does not hold ids 0..{records - 1} once each: the harness is broken",
              file=sys.stderr)
        broken = 1
    want = {i: e for i in range(records) if (e := expected(i)) is not None}
    got = collections.Counter()
    wrong = 0
    for key, value in read_all(bootstrap, out_topic):
        row = json.loads(value)
        i = row.get("id")
        if want.get(i) != row or key != str(i).encode():
            if wrong < 10:
                print(f"wrong record: key={key!r} value={value!r} (want {want.get(i)})", file=sys.stderr)
            wrong += 1
            continue
        got[i] += 1
    lost = sum(1 for i in want if got[i] == 0)
    duplicated = sum(n - 1 for n in got.values() if n > 1)
    if wrong:
        print(f"{wrong} wrong records", file=sys.stderr)
    if not want:
        print("no output expected: the harness is broken", file=sys.stderr)
        broken = 1
    rows_out = sum(got.values()) + wrong
    print(f"cycles={cycles} kills={kills} rows_in={len(ids)} rows_out={rows_out} lost={lost} duplicated={duplicated}")
    sys.exit(0 if lost == 0 and duplicated == 0 and wrong == 0 and not broken else 1)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) == 8 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7])
    else:
        sys.exit(__doc__)

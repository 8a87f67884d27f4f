#!/usr/bin/env python3
"""Kafka -> Kafka end-to-end latency of a running streaming query, at a fixed
input rate.

    scripts/kafka-py.sh benches/compare/kafka_latency.py --engine sluice \
        --sluice target/release/sluice --rate 10000 --seconds 60

1. Creates two fresh topics, `latency-in-<stamp>` and `latency-out-<stamp>`
   (--partitions each, default 2).
2. Starts the engine on a q0-like projection from the input topic into the
   output topic, and waits until its query is running:
   - sluice: `sluice run` of a script with a kafka source (format = 'json',
     starting_offsets = 'earliest') and a kafka sink (the row as JSON;
     --delivery at_least_once or exactly_once), the processing-time trigger
     with interval 0 (a new batch as soon as the last one ends; when there
     is nothing new, Sluice looks again 10 ms later);
   - spark: PySpark (--spark-python, the compare virtualenv) with
     spark-sql-kafka-0-10, readStream kafka -> from_json -> to_json ->
     writeStream kafka, the default trigger (also a new batch as soon as the
     last one ends), local[2].
3. Starts a consumer (its own process) on the output topic, reading from the
   beginning with isolation.level read_committed.
4. Produces --rate records per second for --seconds seconds (in 1 ms steps)
   into the input topic: Nexmark bids (from --data, cycled) as JSON, each
   with `send_ms`, the wall-clock time in milliseconds just before the
   produce call. The producer uses linger.ms = 1.
5. The consumer stamps each record with the wall-clock time at which poll
   returned it; latency = receive time - send_ms. Producer, engine, broker
   and consumer share one machine and its clock.
6. Waits until every record came out (or --drain-timeout), stops the engine,
   deletes the topics, and prints p50/p90/p99/p99.9/max over the records sent
   after the first --warmup seconds, plus records lost or duplicated, and
   appends a Markdown summary to --out.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BID_DDL = [("auction", "BIGINT", "BIGINT"), ("bidder", "BIGINT", "BIGINT"), ("price", "BIGINT", "BIGINT"),
           ("channel", "VARCHAR", "STRING"), ("url", "VARCHAR", "STRING"),
           ("date_time", "TIMESTAMP(6)", "TIMESTAMP"), ("extra", "VARCHAR", "STRING"),
           ("seq", "BIGINT", "BIGINT"), ("send_ms", "BIGINT", "BIGINT")]
OUT_COLUMNS = "auction, bidder, price, date_time, extra, seq, send_ms"
SEQ_SEND = re.compile(rb'"seq":(\d+),"send_ms":(\d+)')


# ---------------------------------------------------------------- Spark worker
# Runs under the compare virtualenv's python (pyspark), not this one.


def spark_worker(a) -> int:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.appName("sluice-kafka-latency").master("local[2]")
             .config("spark.driver.memory", a.driver_memory)
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.adaptive.enabled", "false")
             .config("spark.jars.packages", a.spark_package)
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    schema = ", ".join(f"{c} {t}" for c, _, t in BID_DDL)
    df = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", a.bootstrap)
          .option("subscribe", a.in_topic).option("startingOffsets", "earliest").load()
          .select(F.from_json(F.col("value").cast("string"), schema).alias("v")).select("v.*")
          .selectExpr(f"to_json(struct({OUT_COLUMNS})) AS value"))
    sq = (df.writeStream.format("kafka").option("kafka.bootstrap.servers", a.bootstrap)
          .option("topic", a.out_topic).option("checkpointLocation", a.checkpoint)
          .outputMode("append").queryName("latency").start())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.is_set() and sq.isActive:
        sq.awaitTermination(0.5)
    batches = sq.recentProgress
    if sq.isActive:
        sq.stop()
    durations = sorted(p["durationMs"].get("triggerExecution", 0) for p in batches if p.get("numInputRows"))
    if durations:
        print(f"spark: last {len(durations)} batches with rows: trigger execution p50 "
              f"{durations[len(durations) // 2]} ms, max {durations[-1]} ms", flush=True)
    exc = sq.exception()
    spark.stop()
    if exc is not None:
        print(f"spark query failed: {exc}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- consumer


def consumer_proc(bootstrap: str, topic: str, partitions: int, out_path: str, ready, done_producing,
                  expected, drain_timeout: float) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"latency-{time.time_ns()}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "fetch.wait.max.ms": 5, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    rows: list[tuple[int, int, int]] = []  # seq, send ms, receive ms
    seqs: set[int] = set()
    c.consume(num_messages=1, timeout=0.5)  # connect and fetch metadata before the producer starts
    ready.set()
    last_progress = time.time()
    while True:
        msgs = c.consume(num_messages=10000, timeout=0.05)
        recv = time.time() * 1000.0
        for m in msgs:
            s = SEQ_SEND.search(m.value() or b"") if m.error() is None else None
            if s:
                rows.append((int(s.group(1)), int(s.group(2)), int(recv)))
                seqs.add(rows[-1][0])
        if msgs:
            last_progress = time.time()
        if done_producing.is_set():
            if len(seqs) >= expected.value:
                # Linger briefly for duplicates.
                end = time.time() + 1.0
                while time.time() < end:
                    msgs = c.consume(num_messages=10000, timeout=0.1)
                    recv = time.time() * 1000.0
                    for m in msgs:
                        s = SEQ_SEND.search(m.value() or b"") if m.error() is None else None
                        if s:
                            rows.append((int(s.group(1)), int(s.group(2)), int(recv)))
                break
            if time.time() - last_progress > drain_timeout:
                break
    c.close()
    with open(out_path, "w") as f:
        for q, s, r in rows:
            f.write(f"{q} {s} {r}\n")


# ---------------------------------------------------------------- engines


def start_sluice(a, work: Path) -> tuple[subprocess.Popen, list[str]]:
    cols = ", ".join(f"{c} {t}" for c, t, _ in BID_DDL)
    delivery = "" if a.delivery == "at_least_once" else ", delivery = 'exactly_once'"
    script = work / "latency.sql"
    script.write_text(
        f"CREATE SOURCE bid ({cols}) WITH (connector = 'kafka', bootstrap_servers = '{a.bootstrap}', "
        f"topic = '{a.in_topic}', starting_offsets = 'earliest', format = 'json');\n"
        f"CREATE SINK latency WITH (connector = 'kafka', bootstrap_servers = '{a.bootstrap}', "
        f"topic = '{a.out_topic}'{delivery}, trigger = 'processing_time', checkpoint = '{work / 'ck'}', "
        f"output_mode = 'append') AS SELECT {OUT_COLUMNS} FROM bid;\n")
    proc = subprocess.Popen([str(a.sluice), "run", str(script)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("started query"):
                started.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + 60
    while not started.wait(0.2):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"sluice did not start its query:\n{''.join(lines)[-4000:]}")
    return proc, lines


def start_spark(a, work: Path) -> tuple[subprocess.Popen, list[str]]:
    cmd = [a.spark_python, __file__, "--spark-worker", "--bootstrap", a.bootstrap, "--in-topic", a.in_topic,
           "--out-topic", a.out_topic, "--checkpoint", str(work / "ck"), "--driver-memory", a.driver_memory,
           "--spark-package", a.spark_package]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY":
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + 300
    while not ready.wait(0.2):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"spark did not start its query:\n{''.join(lines)[-4000:]}")
    time.sleep(5)  # let the first (empty) batches and planning pass
    return proc, lines


def stop_engine(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- producer


def bid_values(data: Path, limit: int) -> list[str]:
    """JSON values of bids (without the closing brace, to append send_ms)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pyarrow.parquet as pq
    from kafka_load import BID_COLUMNS, json_values

    out: list[str] = []
    for f in sorted(glob.glob(str(data / "bid" / "*.parquet"))):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=BID_COLUMNS):
            out += [v[:-1] for v in json_values(batch)]
            if len(out) >= limit:
                return out[:limit]
    if not out:
        sys.exit(f"no bids under {data / 'bid'}")
    return out


def produce(a, values: list[str]) -> tuple[int, float]:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 1, "acks": "all",
                  "queue.buffering.max.messages": 1_000_000})
    total = a.rate * a.seconds
    sent = 0
    t0 = time.perf_counter()
    while sent < total:
        now = time.perf_counter() - t0
        target = min(total, int(a.rate * now))
        while sent < target:
            v = values[sent % len(values)]
            ms = int(time.time() * 1000)
            while True:
                try:
                    p.produce(a.in_topic, value=f'{v},"seq":{sent},"send_ms":{ms}}}', partition=sent % a.partitions)
                    break
                except BufferError:
                    p.poll(0.001)
            sent += 1
        p.poll(0)
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    left = p.flush(60)
    if left:
        sys.exit(f"{left} records not delivered to {a.in_topic}")
    return sent, elapsed


# ---------------------------------------------------------------- report


def pct(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["sluice", "spark"], default="sluice")
    ap.add_argument("--sluice", type=Path, default=REPO / "target" / "release" / "sluice")
    ap.add_argument("--spark-python", default=str(Path.home() / ".cache" / "sluice-compare-venv" / "bin" / "python"))
    ap.add_argument("--spark-package", default="org.apache.spark:spark-sql-kafka-0-10_2.13:4.3.0")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--delivery", choices=["at_least_once", "exactly_once"], default="at_least_once",
                    help="Sluice's kafka sink delivery")
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--rate", type=int, default=10000, help="records per second")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of sends left out of the figures")
    ap.add_argument("--drain-timeout", type=float, default=30.0)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache" / "sluice-nexmark" / "events-200000")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "compare" / "kafka-latency.md")
    ap.add_argument("--keep-topics", action="store_true")
    # Internal: the Spark side, run under --spark-python.
    ap.add_argument("--spark-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--in-topic", help=argparse.SUPPRESS)
    ap.add_argument("--out-topic", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.spark_worker:
        return spark_worker(a)

    from confluent_kafka.admin import AdminClient, NewTopic

    stamp = time.strftime("%Y%m%d-%H%M%S")
    a.in_topic, a.out_topic = f"latency-in-{stamp}", f"latency-out-{stamp}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    for f in admin.create_topics([NewTopic(t, a.partitions, 1) for t in (a.in_topic, a.out_topic)],
                                 operation_timeout=60).values():
        f.result()
    values = bid_values(a.data, min(a.rate * a.seconds, 200_000))
    work = Path(tempfile.mkdtemp(prefix="sluice-kafka-latency-"))
    proc = None
    try:
        label = f"{a.engine}" + (f" ({a.delivery})" if a.engine == "sluice" else "")
        print(f"== {label}: {a.in_topic} -> {a.out_topic}, {a.partitions} partitions, "
              f"{a.rate} records/s for {a.seconds} s", flush=True)
        t = time.perf_counter()
        if a.engine == "sluice":
            proc, lines = start_sluice(a, work)
            stop_sig = signal.SIGINT
        else:
            proc, lines = start_spark(a, work)
            stop_sig = signal.SIGTERM
        print(f"  query running after {time.perf_counter() - t:.1f} s", flush=True)

        ctx = mp.get_context("spawn")
        ready, done = ctx.Event(), ctx.Event()
        expected = ctx.Value("q", a.rate * a.seconds)
        pairs_file = work / "pairs.txt"
        cons = ctx.Process(target=consumer_proc, args=(a.bootstrap, a.out_topic, a.partitions, str(pairs_file),
                                                       ready, done, expected, a.drain_timeout))
        cons.start()
        if not ready.wait(60):
            raise RuntimeError("the consumer did not start")
        sent, elapsed = produce(a, values)
        done.set()
        print(f"  produced {sent} records in {elapsed:.1f} s ({sent / elapsed:,.0f}/s)", flush=True)
        cons.join(a.drain_timeout + 120)
        if cons.is_alive():
            cons.terminate()
        stop_engine(proc, stop_sig)
        rows = [tuple(map(int, l.split())) for l in pairs_file.read_text().splitlines()] if pairs_file.exists() else []
        if not rows:
            raise RuntimeError(f"no records came out of {a.out_topic}; engine output:\n{''.join(lines)[-4000:]}")
        first_send = min(s for _, s, _ in rows)
        seen: dict[int, int] = {}
        for q, _, _ in rows:
            seen[q] = seen.get(q, 0) + 1
        missing = sent - len(seen)
        dup = sum(c - 1 for c in seen.values() if c > 1)
        # The first arrival of each record.
        first: dict[int, tuple[int, int]] = {}
        for q, s, r in rows:
            if q not in first or r < first[q][1]:
                first[q] = (s, r)
        pairs = list(first.values())
        received = len(pairs)
        measured = sorted(r - s for s, r in pairs if s >= first_send + a.warmup * 1000)
        mean = sum(measured) / len(measured) if measured else 0
        stats = {k: pct(measured, q) for k, q in
                 [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999)]}
        stats["max"] = measured[-1] if measured else 0
        # Batches of the engine (Sluice's progress lines).
        batch_ms = [int(m.group(1)) for m in re.finditer(r"rows out, \S+ rows/s, (\d+) ms", "".join(lines))]
        batch_rows = [int(m.group(1)) for m in re.finditer(r": (\d+) rows in", "".join(lines))]
        phases = [dict((kv.strip().split(" ")[0], int(kv.strip().split(" ")[1])) for kv in m.group(1).split(",")
                       if kv.strip().count(" ") == 1 and kv.strip().split(" ")[1].isdigit())
                  for m in re.finditer(r"rows out, \S+ rows/s, \d+ ms \(([^)]*)\)", "".join(lines))]
        busy = [(r, ms) for r, ms in zip(batch_rows, batch_ms) if r > 0]
        busy_phases = [ph for r, ph in zip(batch_rows, phases) if r > 0]
        print(f"  received {received} records for {sent} sent: {missing} missing, {dup} duplicates")
        print(f"  latency over {len(measured)} records sent after the first {a.warmup:g} s: "
              + ", ".join(f"{k} {v} ms" for k, v in stats.items()) + f", mean {mean:.1f} ms")
        if busy:
            bms = sorted(ms for _, ms in busy)
            brs = sorted(r for r, _ in busy)
            print(f"  sluice: {len(busy)} batches with rows: rows per batch p50 {brs[len(brs) // 2]}, "
                  f"batch time p50 {bms[len(bms) // 2]} ms, max {bms[-1]} ms; phase p50s: "
                  + ", ".join(f"{k} {sorted(ph.get(k, 0) for ph in busy_phases)[len(busy_phases) // 2]} ms"
                              for k in ("read", "execute", "sink", "commit")))
        for l in lines:
            if l.startswith("spark:"):
                print("  " + l.rstrip())
        # Per 10-second window, to show whether it is steady.
        windows: dict[int, list[int]] = {}
        for s, r in pairs:
            windows.setdefault((s - first_send) // 10000, []).append(r - s)
        print("  per 10 s of sending: " + "; ".join(
            f"{w * 10}-{w * 10 + 10} s p50 {pct(sorted(v), .5)} p99 {pct(sorted(v), .99)}"
            for w, v in sorted(windows.items())))

        a.out.parent.mkdir(parents=True, exist_ok=True)
        new = not a.out.exists()
        with a.out.open("a") as f:
            if new:
                f.write("# Kafka -> Kafka latency (q0-like projection)\n\n"
                        "| run | engine | rate/s | seconds | partitions | sent / missing / duplicates | p50 ms | p90 ms | "
                        "p99 ms | p99.9 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
            f.write(f"| {time.strftime('%Y-%m-%d %H:%M')} | {label} | {a.rate} | {a.seconds} | {a.partitions} | "
                    f"{sent} / {missing} / {dup} | {stats['p50']} | {stats['p90']} | {stats['p99']} | {stats['p99.9']} | "
                    f"{stats['max']} |\n")
        print(f"  appended to {a.out}")
        return 0 if missing == 0 and dup == 0 else 1
    finally:
        if proc is not None:
            stop_engine(proc, signal.SIGINT if a.engine == "sluice" else signal.SIGTERM)
        if not a.keep_topics:
            for f in admin.delete_topics([a.in_topic, a.out_topic], operation_timeout=60).values():
                try:
                    f.result()
                except Exception:  # noqa: BLE001
                    pass
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Sluice vs Spark Structured Streaming reading the Nexmark bids from Kafka.

Both engines read the same topic (written once by kafka_load.py: one JSON
value per bid), decode the value into the bid columns, declare a watermark of
`date_time - 5 seconds` and run a Nexmark query of benches/nexmark with the
available-now trigger and the same cap of records per micro-batch, into a
sink that discards the rows. Prints, and writes as Markdown:

    query | Sluice events/s | Spark events/s | Sluice/Spark

where events are the bid records of the topic and the time is one
available-now drain of the whole topic (see README.md, "Kafka").

With --check, instead runs each query once on both engines counting the rows
out of every micro-batch, and compares them.

Normally started by kafka.sh, which starts the broker if needed, loads the
topic and finds the binaries; see README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402  (compare.py holds the Spark translations)
    REPO, Query, SparkSettings, fmt_rate, fmt_ratio, java_version, load_query, spark_session)

DEFAULT_QUERIES = ["q0", "q1", "tumble_count"]

# The bid columns: Sluice's declared types and Spark's from_json schema.
BID_COLUMNS = [("auction", "BIGINT", "BIGINT"), ("bidder", "BIGINT", "BIGINT"), ("price", "BIGINT", "BIGINT"),
               ("channel", "VARCHAR", "STRING"), ("url", "VARCHAR", "STRING"),
               ("date_time", "TIMESTAMP(6)", "TIMESTAMP"), ("extra", "VARCHAR", "STRING")]


# ---------------------------------------------------------------- Sluice


def sluice_source_sql(a, max_offsets: int) -> str:
    cols = ", ".join(f"{c} {t}" for c, t, _ in BID_COLUMNS)
    return (f"CREATE SOURCE bid ({cols}, WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND) "
            f"WITH (connector = 'kafka', bootstrap_servers = '{a.bootstrap}', topic = '{a.topic}', "
            f"starting_offsets = 'earliest', format = 'json', max_offsets_per_trigger = '{max_offsets}'"
            + "".join(f", {k} = '{v}'" for k, v in (kv.split("=", 1) for kv in a.sluice_option)) + ");")


def query_body(q: Query) -> str:
    body = "\n".join(l for l in q.sql_file.read_text().splitlines() if not l.strip().startswith("--"))
    return body.strip().rstrip(";")


@dataclass
class SluiceRun:
    wall_s: float            # process start to exit
    after_start_s: float     # from the "started query" line to exit
    cpu_s: float             # user + system CPU of the process
    peak_rss_mib: float
    batches: int
    input_rows: int
    batch_rows: list[int] = field(default_factory=list)
    batch_ms: list[int] = field(default_factory=list)
    phases_ms: dict[str, int] = field(default_factory=dict)


PROGRESS = re.compile(r"batch (\d+): (\d+) rows in, (\d+) rows out, \S+ rows/s, (\d+) ms \(([^)]*)\)")


def run_sluice_query(a, q: Query, work: Path, max_offsets: int) -> SluiceRun:
    """`sluice run` of a script with the Kafka source and a console sink that
    prints no rows (num_rows = 0), available-now, a fresh checkpoint."""
    ck = Path(tempfile.mkdtemp(prefix=f"sluice-ck-{q.name}-", dir=work))
    script = work / f"kafka-{q.name}.sql"
    script.write_text(
        sluice_source_sql(a, max_offsets) + "\n"
        f"CREATE SINK kafka_{q.name} WITH (connector = 'console', num_rows = '0', output_mode = '{q.mode}', "
        f"trigger = 'available_now', checkpoint = '{ck}') AS\n{query_body(q)};\n")
    started_at: list[float] = []
    lines: list[str] = []

    def read_stderr(stream):
        for line in stream:
            if not started_at and line.startswith("started query"):
                started_at.append(time.perf_counter())
            lines.append(line)

    t0 = time.perf_counter()
    proc = subprocess.Popen([str(a.sluice), "run", str(script)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=read_stderr, args=(proc.stderr,), daemon=True)
    reader.start()
    _, status, ru = os.wait4(proc.pid, 0)
    t1 = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    shutil.rmtree(ck, ignore_errors=True)
    err = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"sluice run {script} exited with {proc.returncode}:\n{err[-4000:]}")
    rows: dict[int, int] = {}
    ms: dict[int, int] = {}
    phases: dict[str, int] = {}
    input_rows = 0
    for m in PROGRESS.finditer(err):
        b = int(m.group(1))
        rows[b] = int(m.group(3))
        ms[b] = int(m.group(4))
        input_rows += int(m.group(2))
        for part in m.group(5).split(","):
            k, _, v = part.strip().partition(" ")
            if v.isdigit():
                phases[k] = phases.get(k, 0) + int(v)
    if not rows:
        raise RuntimeError(f"no progress lines from sluice run {script}:\n{err[-4000:]}")
    n = max(rows) + 1
    return SluiceRun(wall_s=t1 - t0, after_start_s=t1 - (started_at[0] if started_at else t0),
                     cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_mib=ru.ru_maxrss / 1024, batches=n,
                     input_rows=input_rows, batch_rows=[rows.get(i, 0) for i in range(n)],
                     batch_ms=[ms.get(i, 0) for i in range(n)], phases_ms=phases)


# ---------------------------------------------------------------- Spark


def register_kafka_source(spark, a, max_offsets: int) -> None:
    """Temp view `bid`: the Kafka source, the value decoded with from_json,
    watermark date_time - 5 seconds."""
    from pyspark.sql import functions as F

    schema = ", ".join(f"{c} {t}" for c, _, t in BID_COLUMNS)
    df = (spark.readStream.format("kafka")
          .option("kafka.bootstrap.servers", a.bootstrap)
          .option("subscribe", a.topic)
          .option("startingOffsets", "earliest")
          .option("maxOffsetsPerTrigger", str(max_offsets))
          .load())
    df = df.select(F.from_json(F.col("value").cast("string"), schema).alias("v")).select("v.*")
    df.withWatermark("date_time", "5 seconds").createOrReplaceTempView("bid")


@dataclass
class SparkRun:
    elapsed_s: float
    cpu_s: float
    batches: int
    input_rows: int
    batch_rows: list[int] = field(default_factory=list)


def jvm_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_spark_query(spark, jvm_pid: int, q: Query, work: Path, count_rows: bool = False) -> SparkRun:
    ck = Path(tempfile.mkdtemp(prefix=f"ck-{q.name}-", dir=work))
    df = spark.sql(q.spark_sql)
    w = (df.writeStream.outputMode(q.mode).trigger(availableNow=True)
         .option("checkpointLocation", str(ck)).queryName(f"kafka_{q.name}_{ck.name.replace('-', '_')}"))
    counts: dict[int, int] = {}
    if count_rows:
        def count(batch_df, batch_id):
            counts[batch_id] = batch_df.count()
        w = w.foreachBatch(count)
    else:
        w = w.format("noop")
    c0 = jvm_cpu_s(jvm_pid)
    t0 = time.perf_counter()
    sq = w.start()
    sq.awaitTermination()
    elapsed = time.perf_counter() - t0
    cpu = jvm_cpu_s(jvm_pid) - c0
    if sq.exception() is not None:
        raise RuntimeError(f"{q.name} failed on Spark: {sq.exception()}")
    progress = sq.recentProgress
    shutil.rmtree(ck, ignore_errors=True)
    batches = (max(p["batchId"] for p in progress) + 1) if progress else 0
    input_rows = sum(p.get("numInputRows", 0) for p in progress)
    batch_rows = [counts.get(i, 0) for i in range(max(counts) + 1)] if counts else []
    return SparkRun(elapsed, cpu, batches, input_rows, batch_rows)


def start_spark(a, max_offsets: int):
    extra = [("spark.jars.packages", a.spark_package)]
    for kv in a.spark_conf:
        k, _, v = kv.partition("=")
        extra.append((k, v))
    settings = SparkSettings(driver_memory=a.driver_memory, extra_conf=extra)
    t0 = time.perf_counter()
    spark = spark_session(settings)
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    print(f"  session started in {time.perf_counter() - t0:.1f} s (not counted; {a.spark_package} "
          "resolved through ivy)", flush=True)
    register_kafka_source(spark, a, max_offsets)
    return spark, settings, jvm_pid


# ---------------------------------------------------------------- modes


def trim(rows: list[int]) -> list[int]:
    rows = list(rows)
    while rows and rows[-1] == 0:
        rows.pop()
    return rows


def check(a, queries: list[Query], work: Path, max_offsets: int) -> int:
    print(f"\nrow-count check over topic {a.topic} ({a.records} records, max {max_offsets} per batch; "
          "rows out of each micro-batch, trailing empty batches ignored)", flush=True)
    sluice = {}
    for q in queries:
        try:
            sluice[q.name] = run_sluice_query(a, q, work, max_offsets)
        except Exception as e:  # noqa: BLE001
            sluice[q.name] = e
    spark, _, jvm_pid = start_spark(a, max_offsets)
    passed = failed = 0
    print(f"{'query':<14} {'mode':<7} {'Sluice rows':>12} {'Spark rows':>12}  result")
    for q in queries:
        s = sluice[q.name]
        try:
            if isinstance(s, Exception):
                raise s
            k = run_spark_query(spark, jvm_pid, q, work, count_rows=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"{q.name:<14} {q.mode:<7} {'':>12} {'':>12}  ERROR {str(e).strip()[:2000]}", flush=True)
            continue
        sr, kr = trim(s.batch_rows), trim(k.batch_rows)
        ok = sr == kr and s.input_rows == a.records
        passed += ok
        failed += not ok
        print(f"{q.name:<14} {q.mode:<7} {sum(sr):>12} {sum(kr):>12}  {'same' if ok else 'DIFFERENT'}"
              f"  (input rows: Sluice {s.input_rows}, topic {a.records})", flush=True)
        if not ok:
            print(f"    Sluice per batch: {sr}\n    Spark  per batch: {kr}")
    spark.stop()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--records", type=int, required=True, help="records in the topic (the bids)")
    ap.add_argument("--partitions", type=int, default=0, help="partitions of the topic (for the report)")
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--sluice", type=Path, required=True)
    ap.add_argument("--queries-dir", type=Path, default=REPO / "benches" / "nexmark")
    ap.add_argument("--query", action="append", default=[], help=f"repeatable; default {DEFAULT_QUERIES}")
    ap.add_argument("--max-offsets", type=int, default=0,
                    help="max_offsets_per_trigger / maxOffsetsPerTrigger (default: records / 20, rounded up)")
    ap.add_argument("--runs", type=int, default=1, help="measured runs per query and engine (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded runs per query and engine first (default 1)")
    ap.add_argument("--sluice-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra WITH option of Sluice's kafka source (repeatable), e.g. kafka.fetch.queue.backoff.ms=5")
    ap.add_argument("--skip-sluice", action="store_true")
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--spark-package", default=None,
                    help="spark-sql-kafka coordinate (default: org.apache.spark:spark-sql-kafka-0-10_2.13 of the "
                         "installed pyspark's version)")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "compare" / "kafka-results.md")
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    a.sluice = a.sluice.resolve()
    if a.spark_package is None:
        import pyspark
        a.spark_package = f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"
    max_offsets = a.max_offsets or -(-a.records // 20)
    names = a.query or DEFAULT_QUERIES
    queries = [load_query(a.queries_dir.resolve(), n) for n in names]
    for q in queries:
        if q.spark_sql is None:
            sys.exit(f"{q.name}: {q.note}")

    work = Path(tempfile.mkdtemp(prefix="sluice-kafka-compare-", dir=a.work))
    try:
        if a.check:
            return check(a, queries, work, max_offsets)

        failed: dict[str, list[str]] = {}
        sluice_res: dict[str, SluiceRun] = {}
        if not a.skip_sluice:
            print(f"\n== Sluice: sluice run, kafka source, topic {a.topic} ({a.records} records, "
                  f"max_offsets_per_trigger {max_offsets})", flush=True)
            for q in queries:
                try:
                    warm = [run_sluice_query(a, q, work, max_offsets) for _ in range(a.warmup)]
                    runs = [run_sluice_query(a, q, work, max_offsets) for _ in range(max(1, a.runs))]
                except Exception as e:  # noqa: BLE001
                    msg = str(e).strip()
                    print(f"  {q.name:<14} FAILED: {msg}", flush=True)
                    failed.setdefault(q.name, []).append(f"failed on Sluice: {msg.splitlines()[0]}")
                    continue
                runs.sort(key=lambda r: r.wall_s)
                med = runs[len(runs) // 2]
                sluice_res[q.name] = med
                if med.input_rows != a.records:
                    failed.setdefault(q.name, []).append(
                        f"Sluice read {med.input_rows} records, the topic holds {a.records}")
                batch_p50 = statistics.median(med.batch_ms)
                print(f"  {q.name:<14} warm-up {', '.join(f'{r.wall_s:.2f}' for r in warm) or '-'} s, "
                      f"measured {', '.join(f'{r.wall_s:.2f}' for r in runs)} s (process wall; "
                      f"{med.after_start_s:.2f} s after 'started query'), {med.batches} batches "
                      f"(p50 {batch_p50:.0f} ms, max {max(med.batch_ms)} ms; summed phases "
                      f"{', '.join(f'{k} {v}' for k, v in med.phases_ms.items())} ms), {med.input_rows} input rows, "
                      f"{sum(med.batch_rows)} output rows, CPU {med.cpu_s:.1f} s "
                      f"({med.cpu_s / med.wall_s:.2f} cores), peak RSS {med.peak_rss_mib:.0f} MiB, "
                      f"{a.records / med.wall_s:,.0f} events/s", flush=True)

        spark_res: dict[str, SparkRun] = {}
        pyspark_version = java = "not run"
        settings = SparkSettings(driver_memory=a.driver_memory)
        if not a.skip_spark:
            print(f"\n== Spark Structured Streaming: kafka source, topic {a.topic}", flush=True)
            spark, settings, jvm_pid = start_spark(a, max_offsets)
            pyspark_version, java = spark.version, java_version(spark)
            for q in queries:
                try:
                    warm = [run_spark_query(spark, jvm_pid, q, work) for _ in range(a.warmup)]
                    runs = [run_spark_query(spark, jvm_pid, q, work) for _ in range(max(1, a.runs))]
                except Exception as e:  # noqa: BLE001
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    print(f"  {q.name:<14} FAILED: {msg}", flush=True)
                    failed.setdefault(q.name, []).append(f"failed on Spark: {msg}")
                    continue
                runs.sort(key=lambda r: r.elapsed_s)
                med = runs[len(runs) // 2]
                spark_res[q.name] = med
                if med.input_rows != a.records:
                    failed.setdefault(q.name, []).append(
                        f"Spark read {med.input_rows} records, the topic holds {a.records}")
                print(f"  {q.name:<14} warm-up {', '.join(f'{r.elapsed_s:.2f}' for r in warm) or '-'} s, "
                      f"measured {', '.join(f'{r.elapsed_s:.2f}' for r in runs)} s, {med.batches} batches, "
                      f"{med.input_rows} input rows, JVM CPU {med.cpu_s:.1f} s "
                      f"({med.cpu_s / med.elapsed_s:.2f} cores), {a.records / med.elapsed_s:,.0f} events/s",
                      flush=True)
            spark.stop()

        header = ["query", "Sluice events/s", "Spark events/s", "Sluice/Spark", "Sluice CPU s", "Spark CPU s"]
        rows = []
        for q in queries:
            sl, sk = sluice_res.get(q.name), spark_res.get(q.name)
            s = a.records / sl.wall_s if sl else None
            k = a.records / sk.elapsed_s if sk else None
            rows.append([q.name, fmt_rate(s), fmt_rate(k), fmt_ratio(s, k),
                         f"{sl.cpu_s:.1f}" if sl else "n/a", f"{sk.cpu_s:.1f}" if sk else "n/a"])
        try:
            sluice_version = subprocess.run([str(a.sluice), "--version"], capture_output=True, text=True,
                                            check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            sluice_version = "sluice (version unknown)"
        runs_note = "one measured run" if a.runs <= 1 else f"median of {a.runs} measured runs"
        settings_lines = [
            f"topic: {a.topic} on {a.bootstrap}, {a.partitions or '?'} partitions, {a.records} records "
            "(the Nexmark bids, one JSON value each, written once by kafka_load.py)",
            f"queries: {', '.join(names)} (benches/nexmark; output mode from each file's `-- mode:` line)",
            f"both: starting offsets earliest, {max_offsets} records per micro-batch at most "
            f"({-(-a.records // max_offsets)} batches), available-now trigger, watermark date_time - 5 s, "
            "the value decoded as JSON into the 7 bid columns, a sink that drops the rows",
            f"Sluice: {sluice_version} ({a.sluice}), `sluice run` of a script: kafka source with "
            "format = 'json'" + "".join(f", {kv}" for kv in a.sluice_option) + ", console sink with num_rows = '0'",
            f"Spark: pyspark {pyspark_version}, {a.spark_package}, {settings.master}, "
            f"spark.sql.shuffle.partitions={settings.shuffle_partitions}, driver memory {settings.driver_memory}, "
            "from_json(CAST(value AS STRING)), noop sink, session time zone UTC, default state store"
            + "".join(f", {kv}" for kv in a.spark_conf),
            f"Java: {java}",
            f"events/s = records / time of one available-now drain of the topic; {runs_note} per engine and "
            f"query after {a.warmup} discarded warm-up run(s). Sluice: wall time of the `sluice run` process "
            "(process start, planning and Kafka client set-up included). Spark: start() to the end of "
            "awaitTermination() in a running session (JVM and session start not counted).",
            "CPU s: user + system CPU seconds over that run (Sluice: the process; Spark: the JVM, from /proc), "
            "less sensitive than the wall time to other load on the machine.",
            f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}",
        ]
        notes = [f"{q}: {why}" for q, whys in failed.items() for why in whys]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        print()
        print("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
        for r in rows:
            print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        for n in notes:
            print(f"note: {n}")
        print()
        for line in settings_lines:
            print(line)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        md = ["# Sluice vs Spark Structured Streaming, Nexmark bids from Kafka", "",
              f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} cores.", "",
              "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        if notes:
            md += ["", "Notes:", ""] + [f"- {n}" for n in notes]
        md += ["", "Settings:", ""] + [f"- {line}" for line in settings_lines] + [""]
        a.out.write_text("\n".join(md))
        print(f"\nwrote {a.out}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

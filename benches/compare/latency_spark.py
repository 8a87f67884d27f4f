#!/usr/bin/env python3
"""Spark's side of `sluice bench latency`: end-to-end latency of the rate
source -> query -> a foreach writer that records, per row, the time from the
row's creation (the rate source's `timestamp`) to its delivery.

    ~/.cache/sluice-compare-venv/bin/python benches/compare/latency_spark.py \
        --trigger continuous|default --rate 100000 --seconds 10 [--warmup 5] \
        [--query filter|count] [--interval '1 second']

- filter: `SELECT value, value * 2 AS v2, timestamp WHERE value % 10 <> 9`,
  under `trigger(continuous=interval)` (Spark's continuous processing,
  which supports map-like queries only) or the default micro-batch trigger.
- count: `GROUP BY value % 1000` with `count(*)` and `max(timestamp)`, in
  update mode; Spark's continuous mode refuses aggregations, so only the
  default trigger runs it (the script says so and exits 2 otherwise).

The writer is `java/LatencyWriter.java` (compiled here with javac against
PySpark's jars; PySpark's Python foreach writer cannot run under the
continuous trigger): each task records `now - timestamp` for every row, and
the script reads its files at the end. Rows created during the warm-up are left out. The last line has the
same shape as Sluice's: `p50_ms=… p99_ms=… p999_ms=… max_ms=… rate=…`
(rate: rows delivered per second over the measured seconds; the filter
keeps 9 rows in 10, the count emits one row per changed key).
"""

import argparse
import glob
import os
import subprocess
import shutil
import sys
import tempfile
import time


def compile_writer(work):
    """Compile java/LatencyWriter.java against PySpark's jars into `work`;
    returns the classes directory."""
    import pyspark

    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars", "*")
    classes = os.path.join(work, "classes")
    os.makedirs(classes)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java", "LatencyWriter.java")
    subprocess.run(["javac", "-nowarn", "-cp", jars, "-d", classes, src], check=True)
    return classes


def quantile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(len(sorted_values) * q + 0.999999) - 1))
    return sorted_values[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trigger", choices=["continuous", "default"], default="continuous")
    ap.add_argument("--interval", default="1 second")
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--query", choices=["filter", "count"], default="filter")
    args = ap.parse_args()
    if args.query == "count" and args.trigger == "continuous":
        print("Spark's continuous processing supports map-like queries only (no aggregation): not run")
        sys.exit(2)

    from pyspark.sql import SparkSession, functions as F

    work = tempfile.mkdtemp(prefix="spark-latency-")
    classes = compile_writer(work)
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.extraClassPath", classes)
        .appName("latency")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    out_dir = os.path.join(work, "lat")
    os.makedirs(out_dir)
    measure_from_ms = (time.time() + args.warmup) * 1000.0
    df = spark.readStream.format("rate").option("rowsPerSecond", args.rate).option("numPartitions", 2).load()
    if args.query == "filter":
        q = df.where(F.col("value") % 10 != 9).select("value", (F.col("value") * 2).alias("v2"), "timestamp")
        mode = "append"
    else:
        q = df.groupBy((F.col("value") % 1000).alias("k")).agg(
            F.count("*").alias("n"), F.max("timestamp").alias("timestamp")
        )
        mode = "update"
    jvm = spark.sparkContext._jvm
    writer = jvm.LatencyWriter(out_dir, int(measure_from_ms))
    w = q._jdf.writeStream().outputMode(mode).foreach(writer).option("checkpointLocation", os.path.join(work, "ck"))
    if args.trigger == "continuous":
        w = w.trigger(jvm.org.apache.spark.sql.streaming.Trigger.Continuous(args.interval))
    query = w.start()
    time.sleep(args.warmup + args.seconds)
    query.stop()
    values = []
    for f in glob.glob(os.path.join(out_dir, "lat-*")):
        with open(f) as fh:
            values.extend(int(x) / 1000.0 for x in fh.read().split())
    values.sort()
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    delivered = len(values) / args.seconds
    print(f"samples={len(values)}")
    print(
        f"p50_ms={quantile(values, 0.5):.2f} p99_ms={quantile(values, 0.99):.2f} "
        f"p999_ms={quantile(values, 0.999):.2f} max_ms={values[-1] if values else float('nan'):.2f} "
        f"rate={delivered:.0f}"
    )


if __name__ == "__main__":
    main()

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

The writer runs in Spark's Python workers (local[2]): each task appends
`now - timestamp` in ms for every row, and the driver reads the files at
the end. Rows created during the warm-up are left out. The last line has the
same shape as Sluice's: `p50_ms=… p99_ms=… p999_ms=… max_ms=… rate=…`
(rate: rows delivered per second over the measured seconds; the filter
keeps 9 rows in 10, the count emits one row per changed key).
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time


class LatencyWriter:
    """A ForeachWriter recording creation-to-delivery latency per row."""

    def __init__(self, out_dir, measure_from_ms):
        self.out_dir = out_dir
        self.measure_from_ms = measure_from_ms

    def open(self, partition_id, epoch_id):
        self.path = os.path.join(self.out_dir, f"lat-{os.getpid()}-{partition_id}-{epoch_id}-{time.time_ns()}")
        self.values = []
        return True

    def process(self, row):
        created = row["timestamp"].timestamp() * 1000.0
        if created >= self.measure_from_ms:
            self.values.append(time.time() * 1000.0 - created)

    def close(self, error):
        if self.values:
            with open(self.path, "w") as f:
                f.write("\n".join(f"{v:.3f}" for v in self.values))


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

    # Spark's Python workers run this interpreter (it has pandas and pyarrow).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession, functions as F

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("latency")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    work = tempfile.mkdtemp(prefix="spark-latency-")
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
    w = (
        q.writeStream.outputMode(mode)
        .foreach(LatencyWriter(out_dir, measure_from_ms))
        .option("checkpointLocation", os.path.join(work, "ck"))
    )
    w = w.trigger(continuous=args.interval) if args.trigger == "continuous" else w
    query = w.start()
    time.sleep(args.warmup + args.seconds)
    query.stop()
    values = []
    for f in glob.glob(os.path.join(out_dir, "lat-*")):
        with open(f) as fh:
            values.extend(float(x) for x in fh.read().split())
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

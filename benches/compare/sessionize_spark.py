#!/usr/bin/env python3
"""The sessionization example (examples/sessionize.rs) under Spark 4.3's
applyInPandasWithState with GroupStateTimeout.EventTimeTimeout, and the
check that both write the same sessions.

    benches/compare/sessionize_spark.py --input DIR --sluice-bin PATH [--work DIR]

Runs the Sluice example binary and Spark over the same CSV files
(ts,user_id,action with a header), one file per micro-batch in path order
(both engines take files oldest first; the script gives each file its own
modification second), a 10-second watermark on ts, available-now, and
compares the Parquet rows (user_id, session_start, session_end, num_events)
as sets. Needs pyspark 4.3 with pandas and pyarrow (run.sh's virtualenv plus
`pip install pandas pyarrow`). Exit status 0 when they agree.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

GAP_MS = 30_000


def sessionize(key, pdfs, state):
    """The same function as examples/sessionize.rs, step by step."""
    import pandas as pd

    user = key[0]
    done = []
    if state.hasTimedOut:
        if state.exists:
            done.append(state.get)
        state.remove()
    else:
        watermark = state.getCurrentWatermarkMs()
        open_ = state.get if state.exists else None
        if open_ is not None and open_[1] + GAP_MS < watermark:
            done.append(open_)
            open_ = None
        times = []
        for pdf in pdfs:
            ms = (pdf["ts"].astype("int64") // 1_000_000).tolist()
            times.extend(t for t in ms if t >= watermark)
        for t in sorted(times):
            if open_ is not None and t > open_[1] + GAP_MS:
                done.append(open_)
                open_ = (t, t, 1)
            elif open_ is not None:
                open_ = (min(open_[0], t), max(open_[1], t), open_[2] + 1)
            else:
                open_ = (t, t, 1)
        if open_ is not None:
            state.update(open_)
            state.setTimeoutTimestamp(open_[1] + GAP_MS)
        else:
            state.remove()
    if done:
        yield pd.DataFrame(
            {
                "user_id": [user] * len(done),
                "session_start": pd.to_datetime([s[0] for s in done], unit="ms"),
                "session_end": pd.to_datetime([s[1] for s in done], unit="ms"),
                "num_events": [int(s[2]) for s in done],
            }
        )


def run_spark(input_dir, out_dir, checkpoint):
    # Spark's Python workers run this interpreter (it has pandas and pyarrow).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming.state import GroupStateTimeout

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("sessionize")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    clicks = (
        spark.readStream.format("csv")
        .option("header", "true")
        .option("maxFilesPerTrigger", 1)
        .schema("ts TIMESTAMP, user_id STRING, action STRING")
        .load(input_dir)
        .withWatermark("ts", "10 seconds")
    )
    sessions = clicks.groupBy("user_id").applyInPandasWithState(
        sessionize,
        "user_id STRING, session_start TIMESTAMP, session_end TIMESTAMP, num_events LONG",
        "start LONG, end LONG, n LONG",
        "append",
        GroupStateTimeout.EventTimeTimeout,
    )
    q = (
        sessions.writeStream.format("parquet")
        .option("path", out_dir)
        .option("checkpointLocation", checkpoint)
        .outputMode("append")
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    spark.stop()


def utc_text(t):
    """A timestamp as UTC text without an offset: Spark writes Parquet
    timestamps adjusted to UTC (tz-aware), Sluice writes them without a
    time zone; both mean the same instant here."""
    if t.tzinfo is not None:
        import datetime

        t = t.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return t.isoformat()


def read_rows(path):
    import pyarrow.parquet as pq

    rows = []
    for root, _, files in os.walk(path):
        if "_checkpoint" in root or "_sluice_manifest" in root or "_spark_metadata" in root:
            continue
        for f in files:
            if f.endswith(".parquet"):
                t = pq.read_table(os.path.join(root, f))
                for r in t.to_pylist():
                    rows.append(
                        (
                            r["user_id"],
                            utc_text(r["session_start"]),
                            utc_text(r["session_end"]),
                            int(r["num_events"]),
                        )
                    )
    return sorted(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--sluice-bin", required=True, help="the built examples/sessionize binary")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="sessionize-")
    data = os.path.join(work, "in")
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(args.input, data)
    files = sorted(f for f in os.listdir(data) if f.endswith(".csv"))
    base = 1_700_000_000
    for i, f in enumerate(files):
        os.utime(os.path.join(data, f), (base + i, base + i))
    sluice_out = os.path.join(work, "sluice")
    spark_out = os.path.join(work, "spark")
    for d in (sluice_out, spark_out, os.path.join(work, "spark_ck")):
        shutil.rmtree(d, ignore_errors=True)
    subprocess.run([args.sluice_bin, "--input", data, "--output", sluice_out], check=True)
    run_spark(data, spark_out, os.path.join(work, "spark_ck"))
    a, b = read_rows(sluice_out), read_rows(spark_out)
    print(f"sluice: {len(a)} sessions, spark: {len(b)} sessions")
    if a != b:
        for r in sorted(set(a) - set(b)):
            print("  only sluice:", r)
        for r in sorted(set(b) - set(a)):
            print("  only spark: ", r)
        sys.exit(1)
    for r in a:
        print("  ", r)
    print("same sessions")


if __name__ == "__main__":
    main()

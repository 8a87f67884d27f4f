#!/usr/bin/env python3
"""Capture real Spark StreamingQueryProgress JSON documents as test fixtures.

Runs two small streaming queries on the JSON file source in a local Spark
(local[2], spark.sql.shuffle.partitions=2, UI off; the settings of compare.py)
and writes, pretty-printed but otherwise exactly as Spark produced them
(`StreamingQueryProgress.json()` of the JVM object):

  tests/integration/fixtures/spark-4.3-progress-windowed.json
      withWatermark("ts", "5 seconds")
        .groupBy(window("ts", "10 seconds"), "k").count()
      update mode, memory sink "counts": the progress of a batch with input
      rows, an event-time watermark and a state operator.
  tests/integration/fixtures/spark-4.3-progress-stateless.json
      select("k"), no watermark, memory sink "keys": a progress with input
      rows.

Usage:
  ~/.cache/sluice-compare-venv/bin/python benches/compare/spark_progress.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, SparkSettings, spark_session  # noqa: E402

FIXTURES = REPO / "tests" / "integration" / "fixtures"

# Input files, one per micro-batch, in the order they are added. Event times
# move forward so that each batch after the first runs with a watermark
# (max event time seen - 5 s) past the epoch, and windows stay open in state.
BATCHES = [
    [("2024-01-01T00:00:01Z", "a"), ("2024-01-01T00:00:03Z", "b"), ("2024-01-01T00:00:04Z", "a")],
    [("2024-01-01T00:00:12Z", "a"), ("2024-01-01T00:00:14Z", "c"), ("2024-01-01T00:00:08Z", "b")],
    [("2024-01-01T00:00:21Z", "b"), ("2024-01-01T00:00:25Z", "a"), ("2024-01-01T00:00:18Z", "c"),
     ("2024-01-01T00:00:02Z", "a")],  # late (watermark 9 s), but its window [0 s, 10 s) is still open
    [("2024-01-01T00:00:33Z", "a"), ("2024-01-01T00:00:36Z", "c")],
]


def write_batch(input_dir: Path, staging: Path, i: int, rows) -> None:
    """Write one JSON-lines file, atomically (staged, then renamed in)."""
    name = f"part-{i:03d}.json"
    tmp = staging / name
    tmp.write_text("".join(json.dumps({"ts": ts, "k": k}) + "\n" for ts, k in rows))
    os.replace(tmp, input_dir / name)


def progresses(query) -> list[dict]:
    """Every retained progress, parsed from the JVM's own JSON (checked to
    serialize back to exactly the same text, so the fixture is Spark's
    document with only whitespace added)."""
    out = []
    for p in query._jsq.recentProgress():
        raw = p.json()
        doc = json.loads(raw)
        if json.dumps(doc, separators=(",", ":"), ensure_ascii=False) != raw:
            raise SystemExit(f"progress JSON does not round-trip:\n{raw}")
        out.append(doc)
    return out


def run(spark, tmp: Path, name: str, build, stateful: bool) -> list[dict]:
    input_dir = tmp / f"{name}-in"
    staging = tmp / f"{name}-staging"
    input_dir.mkdir()
    staging.mkdir()
    stream = spark.readStream.schema("ts TIMESTAMP, k STRING").json(str(input_dir))
    query = (build(stream).writeStream
             .outputMode("update" if stateful else "append")
             .format("memory")
             .queryName(name)
             .option("checkpointLocation", str(tmp / f"{name}-checkpoint"))
             .start())
    try:
        for i, rows in enumerate(BATCHES):
            write_batch(input_dir, staging, i, rows)
            query.processAllAvailable()
        # Let any no-data batch (watermark advance) run as well.
        query.processAllAvailable()
        return progresses(query)
    finally:
        query.stop()


def is_epoch(ts: str | None) -> bool:
    return ts is None or ts.startswith("1970-01-01T00:00:00")


def pick_windowed(ps: list[dict]) -> dict:
    good = [p for p in ps
            if p.get("numInputRows", 0) > 0
            and {"watermark", "min", "max", "avg"} <= set(p.get("eventTime", {}))
            and p.get("stateOperators")]
    if not good:
        raise SystemExit("no windowed progress with input rows, a watermark and state:\n"
                         + json.dumps(ps, indent=2))
    # Prefer a batch whose watermark is past the epoch (i.e. really set) and
    # that has state rows; among those, the last one.
    good.sort(key=lambda p: (not is_epoch(p["eventTime"]["watermark"]),
                             p["stateOperators"][0].get("numRowsTotal", 0) > 0,
                             p.get("batchId", 0)))
    return good[-1]


def pick_stateless(ps: list[dict]) -> dict:
    good = [p for p in ps if p.get("numInputRows", 0) > 0]
    if not good:
        raise SystemExit("no stateless progress with input rows:\n" + json.dumps(ps, indent=2))
    return good[-1]


def main() -> None:
    import pyspark
    from pyspark.sql import functions as F

    if not pyspark.__version__.startswith("4.3."):
        raise SystemExit(f"need pyspark 4.3.x, found {pyspark.__version__}")
    spark = spark_session(SparkSettings(driver_memory="1g"))
    print(f"pyspark {pyspark.__version__}, Spark {spark.version}")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sluice-spark-progress-") as d:
        tmp = Path(d)
        windowed = run(
            spark, tmp, "counts",
            lambda s: (s.withWatermark("ts", "5 seconds")
                       .groupBy(F.window("ts", "10 seconds"), "k").count()),
            stateful=True)
        stateless = run(spark, tmp, "keys", lambda s: s.select("k"), stateful=False)
    spark.stop()

    out = [("spark-4.3-progress-windowed.json", pick_windowed(windowed)),
           ("spark-4.3-progress-stateless.json", pick_stateless(stateless))]
    for fname, doc in out:
        path = FIXTURES / fname
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path.relative_to(REPO)} (batchId {doc.get('batchId')})")


if __name__ == "__main__":
    main()

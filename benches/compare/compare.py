#!/usr/bin/env python3
"""Sluice vs Spark Structured Streaming on the Nexmark queries of benches/nexmark.

Runs `sluice bench nexmark --baseline datafusion` over pre-generated Parquet
events, then the same queries on Spark Structured Streaming (PySpark, local
mode) over the same files with the same micro-batching (one file per
trigger, available-now), and prints one table:

    query | Sluice events/s | Spark events/s | Sluice/Spark | DataFusion batch events/s | Sluice/DataFusion

With --check, instead runs every query on both engines with a sink that
counts rows per micro-batch and compares the counts (use a small N).

Normally started by run.sh, which installs PySpark, builds Sluice and
generates the events; see README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every Nexmark query of benches/nexmark, written for Spark SQL.
#
# The streaming tables `person`, `auction` and `bid` are temp views over the
# Parquet file source, with `date_time` (and `expires`) cast from
# TIMESTAMP_NTZ to TIMESTAMP and a watermark of `date_time - 5 seconds`, as
# Sluice's bench runner declares them; `side_input` is the static table the
# runner registers for q13 (key 0..9999, value 'value-<key>'), cached.
#
# Translation rules (Flink-style SQL of the .sql files -> Spark SQL):
# - TUMBLE(bid, date_time, INTERVAL '10' SECOND) + GROUP BY window_start, window_end
#     -> GROUP BY window(date_time, '10 seconds'); window.start / window.end
# - HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)  (slide, size)
#     -> GROUP BY window(date_time, '10 seconds', '2 seconds')      (size, slide)
# - SESSION(bid, date_time, INTERVAL '10' SECOND)
#     -> GROUP BY session_window(date_time, '10 seconds')
# - A decimal literal such as 0.908 is a DOUBLE in DataFusion (Sluice) but a
#   DECIMAL in Spark SQL: written 0.908D so both compute in float64.
# - to_char(date_time, '%Y-%m-%d') -> date_format(date_time, 'yyyy-MM-dd'),
#   to_char(date_time, '%H:%M') -> date_format(date_time, 'HH:mm').
# - count(DISTINCT x) [FILTER (...)] -> size(collect_set(x) [FILTER (...)]):
#   Spark streaming rejects distinct aggregates ("Consider using
#   approx_count_distinct()"); collect_set keeps the distinct values as state
#   and counts them exactly, as Sluice does (`note` marks such queries).
# - split_part, lower, extract(hour FROM ...), count(*) FILTER (WHERE ...),
#   % : the same in Spark SQL (split_part returns '' past the last part in
#   both engines).
#
# `source_sha256` is the SHA-256 of the .sql file the translation was written
# from: when the file changes, the run warns that the translation needs review.
# The statistics columns shared by q15 and q16 (Nexmark defines them alike).
_DAILY_BID_STATS = """  count(*) AS total_bids,
  count(*) FILTER (WHERE price < 10000) AS rank1_bids,
  count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
  count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
  size(collect_set(bidder)) AS total_bidders,
  size(collect_set(bidder) FILTER (WHERE price < 10000)) AS rank1_bidders,
  size(collect_set(bidder) FILTER (WHERE price >= 10000 AND price < 1000000)) AS rank2_bidders,
  size(collect_set(bidder) FILTER (WHERE price >= 1000000)) AS rank3_bidders,
  size(collect_set(auction)) AS total_auctions,
  size(collect_set(auction) FILTER (WHERE price < 10000)) AS rank1_auctions,
  size(collect_set(auction) FILTER (WHERE price >= 10000 AND price < 1000000)) AS rank2_auctions,
  size(collect_set(auction) FILTER (WHERE price >= 1000000)) AS rank3_auctions
"""

SPARK_QUERIES: dict[str, dict[str, str]] = {
    "q0": {
        "source_sha256": "595e388c38c0eb4a864721822d912d1f9f772f639a0a8cb31cfef5d47d3fcd55",
        "sql": "SELECT auction, bidder, price, date_time, extra FROM bid",
    },
    "q1": {
        "source_sha256": "c51966b766edda0b169ce1c7330ab73f23b90e4c3cf2c009f510fbb01ec61f0a",
        "sql": "SELECT auction, bidder, 0.908D * price AS price, date_time, extra FROM bid",
    },
    "q2": {
        "source_sha256": "d3d8698a5a7f6452a735aa55c9f821c07202449aaa8d7368cc98acc1d75881b5",
        "sql": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    },
    "q11": {
        "source_sha256": "d5a93e9e7393fedf34b7b761367a549d99c1342b0448942c96827e862b2a4348",
        "sql": """
SELECT bidder, count(*) AS bid_count,
  session_window.start AS starttime, session_window.end AS window_end
FROM bid
GROUP BY bidder, session_window(date_time, '10 seconds')""",
    },
    "q13": {
        "source_sha256": "58b7ba83766e66adc1e5ebf59017c07da1a401288fbc81d68d6b54af2ce6e592",
        "sql": """
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key""",
    },
    "q14": {
        "source_sha256": "c5d3d6037b8670a4e0c49fb43b08e1b25c7120990beabd40598777402f27d486",
        "sql": """
SELECT auction, bidder, 0.908D * price AS price,
  CASE
    WHEN extract(hour FROM date_time) >= 8 AND extract(hour FROM date_time) <= 18 THEN 'dayTime'
    WHEN extract(hour FROM date_time) <= 6 OR extract(hour FROM date_time) >= 20 THEN 'nightTime'
    ELSE 'otherTime'
  END AS bid_time_type,
  date_time, extra
FROM bid
WHERE 0.908D * price > 1000000 AND 0.908D * price < 50000000""",
    },
    "q15": {
        "source_sha256": "c2af72a1612050ecef9764cf86b909441a6bd93905477f2a9b8b6c4c2319f8ab",
        "note": "count(DISTINCT x) -> size(collect_set(x)): Spark streaming rejects distinct aggregates",
        "sql": """
SELECT date_format(date_time, 'yyyy-MM-dd') AS day,
""" + _DAILY_BID_STATS + """FROM bid
GROUP BY date_format(date_time, 'yyyy-MM-dd')""",
    },
    "q16": {
        "source_sha256": "2ba62d70e0f78b53e297574063ca4a6102cb8836027fae72d20cc46b5990ad6a",
        "note": "count(DISTINCT x) -> size(collect_set(x)): Spark streaming rejects distinct aggregates",
        "sql": """
SELECT channel, date_format(date_time, 'yyyy-MM-dd') AS day,
  max(date_format(date_time, 'HH:mm')) AS minute,
""" + _DAILY_BID_STATS + """FROM bid
GROUP BY channel, date_format(date_time, 'yyyy-MM-dd')""",
    },
    "q17": {
        "source_sha256": "9f199b653214dc6c6af5f7da78dcb94141d4a8953c4fdd4144612930c703a086",
        "sql": """
SELECT auction, date_format(date_time, 'yyyy-MM-dd') AS day,
  count(*) AS total_bids,
  count(*) FILTER (WHERE price < 10000) AS rank1_bids,
  count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
  count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
  min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, sum(price) AS sum_price
FROM bid
GROUP BY auction, date_format(date_time, 'yyyy-MM-dd')""",
    },
    "q21": {
        "source_sha256": "872e6bc9bc6e5e7062726f43b0496848ba28ec15bbeeb3bc6df49df22efba7b1",
        "sql": """
SELECT auction, bidder, price, channel,
  CASE
    WHEN lower(channel) = 'apple' THEN '0'
    WHEN lower(channel) = 'google' THEN '1'
    WHEN lower(channel) = 'facebook' THEN '2'
    WHEN lower(channel) = 'baidu' THEN '3'
    ELSE split_part(split_part(url, 'channel_id=', 2), '&', 1)
  END AS channel_id
FROM bid
WHERE split_part(split_part(url, 'channel_id=', 2), '&', 1) <> ''
   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')""",
    },
    "q22": {
        "source_sha256": "8b1f7ebbcc85993eeb14ce7da4e92ee7cc156a4864f11294cff03fe539d4f261",
        "sql": """
SELECT auction, bidder, price, channel,
  split_part(url, '/', 4) AS dir1, split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3
FROM bid""",
    },
    "q5_hop_count": {
        "source_sha256": "6bcc88a8426749b3b3c28205cf3b0a3496b56521051892300a70a7636c95d786",
        "sql": """
SELECT auction, count(*) AS num, window.start AS window_start, window.end AS window_end
FROM bid
GROUP BY auction, window(date_time, '10 seconds', '2 seconds')""",
    },
    "q3": {
        "source_sha256": "60e23f7ab0a74448bd671775210820cf98ecc1311b939eb4fdaf14a20ba84b5f",
        "sql": """
SELECT p.name, p.city, p.state, a.id
FROM auction a INNER JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')""",
    },
    "q20": {
        "source_sha256": "81205579ee783b7ddceafec6f1a817f658f8a073ee3d8d797fd502d89b17dbe8",
        "sql": """
SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_time, a.item_name, a.description,
       a.initial_bid, a.reserve, a.date_time AS auction_time, a.expires, a.seller, a.category
FROM bid b INNER JOIN auction a ON b.auction = a.id
WHERE a.category = 10""",
    },
    # Joined on the window struct, which carries the watermark in Spark (its
    # state is then evicted by the watermark, as Sluice's on window_end).
    "q8": {
        "source_sha256": "d38ced5ac1a4c91802b5685acfcbfa3410ca63fe9ca427b0c588e85a57d99dc4",
        "sql": """
SELECT p.id, p.name, p.window.start AS window_start, p.window.end AS window_end
FROM (SELECT id, name, window FROM person GROUP BY id, name, window(date_time, '10 seconds')) p
JOIN (SELECT seller, window FROM auction GROUP BY seller, window(date_time, '10 seconds')) a
  ON p.id = a.seller AND p.window = a.window""",
    },
    "q5": {
        "source_sha256": "719dedc1440db200769b45fd9c00a260f8fac3f8858faa7ab00a0c8fef7ea1b4",
        "sql": """
SELECT a.auction, a.num, a.window.start AS window_start, a.window.end AS window_end
FROM (SELECT auction, count(*) AS num, window FROM bid GROUP BY auction, window(date_time, '10 seconds', '2 seconds')) a
JOIN (SELECT max(num) AS maxn, window
      FROM (SELECT auction, count(*) AS num, window FROM bid
            GROUP BY auction, window(date_time, '10 seconds', '2 seconds')) c
      GROUP BY window) m
  ON a.window = m.window AND a.num >= m.maxn""",
    },
    "q7": {
        "source_sha256": "24facf19a84c73c95b893fdc16735fd77cd6cfad428fbe76838dc679b9939fda",
        "sql": """
SELECT b.auction, b.price, b.bidder, b.date_time, m.window_end
FROM bid b
JOIN (SELECT max(price) AS maxprice, window.end AS window_end FROM bid GROUP BY window(date_time, '10 seconds')) m
  ON b.price = m.maxprice
 AND b.date_time BETWEEN m.window_end - INTERVAL '10' SECOND AND m.window_end""",
    },
    "join_range": {
        "source_sha256": "e53540acaa4a90ed0d40112da50230d28d3352d1d2bb6870fc2a7191b87d510b",
        "sql": """
SELECT b.auction, b.bidder, b.price, b.date_time AS bid_time, a.date_time AS auction_time, a.seller
FROM bid b JOIN auction a
  ON b.auction = a.id AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '10' SECOND""",
    },
    "q10": {
        "source_sha256": "1f9e9c4c1369fc26742d586f6faabf2cf285156de6525dc04b28a0ac60fa90c7",
        "sql": """
SELECT auction, bidder, price, date_time, extra,
       date_format(date_time, 'yyyy-MM-dd') AS dt, date_format(date_time, 'HH:mm') AS hm
FROM bid""",
    },
    # Spark's processing time is current_timestamp(), the micro-batch's time.
    "q12": {
        "source_sha256": "5b9a7895b2d35ccb10147f4b2946a4a71f2e742e96226632c3cda19e81175900",
        "sql": """
SELECT bidder, count(*) AS bid_count, window.start AS starttime, window.end AS endtime
FROM (SELECT bidder, current_timestamp() AS p_time FROM bid)
GROUP BY bidder, window(p_time, '10 seconds')""",
    },
    # The queries below are given to Spark as written; Spark refuses them
    # (no streaming aggregation of an update-mode aggregation, no window
    # functions but time windows on a stream), and its error is the note.
    "q4": {
        "source_sha256": "58a6769e434e3c97f9c521554d9b844bd98247996e3aa1b080702342125244d9",
        "refused_by_spark": "yes",
        "sql": """
SELECT q.category, AVG(q.final) AS avg_final FROM (
  SELECT MAX(b.price) AS final, a.category
  FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
  GROUP BY a.id, a.category
) q GROUP BY q.category""",
    },
    "q6": {
        "source_sha256": "1a811f60f95bb90986a549c8d918c35383a8fc5d033393422571cb917cd7f2f9",
        "refused_by_spark": "yes",
        "sql": """
SELECT id, seller, final,
       AVG(final) OVER (PARTITION BY seller ORDER BY expires, id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM (
  SELECT a.id, a.seller, a.expires, MAX(b.price) AS final
  FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
  GROUP BY a.id, a.seller, a.expires
) q""",
    },
    "q9": {
        "source_sha256": "87befd9aeff014e8f8acee462685a1541ea3016bf1d128c9c3eb30df70cc8dd1",
        "refused_by_spark": "yes",
        "sql": """
SELECT id, item_name, seller, category, price, bidder, bid_time FROM (
  SELECT a.id, a.item_name, a.seller, a.category, b.price, b.bidder, b.date_time AS bid_time,
         ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time, b.bidder) AS rownum
  FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
) WHERE rownum <= 1""",
    },
    "q18": {
        "source_sha256": "b4edcf203cf0ffd9bf33d831bff9da4165e93344e5eb5984585a9f224ebf8edf",
        "refused_by_spark": "yes",
        "sql": """
SELECT auction, bidder, price, date_time FROM (
  SELECT auction, bidder, price, date_time,
         ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC) AS rank_number
  FROM bid
) WHERE rank_number <= 1""",
    },
    "q19": {
        "source_sha256": "5493a74b14412bc3f23a2e07839207e2215c35d12b8b52a7797f2899571eef87",
        "refused_by_spark": "yes",
        "sql": """
SELECT auction, bidder, price, date_time, rank_number FROM (
  SELECT auction, bidder, price, date_time,
         ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time, bidder) AS rank_number
  FROM bid
) WHERE rank_number <= 10""",
    },
    "tumble_count": {
        "source_sha256": "0b3f0d820db70a2ac963cc4eda2acc3e864c8e2eaee779605b9c09797ddf9a13",
        "sql": """
SELECT auction, count(*) AS num, window.start AS window_start, window.end AS window_end
FROM bid
GROUP BY auction, window(date_time, '10 seconds')""",
    },
}


# ---------------------------------------------------------------- queries


@dataclass
class Query:
    name: str
    mode: str  # append | update | complete
    sql_file: Path
    spark_sql: str | None
    note: str = ""
    # Spark is expected to refuse the query: its error is reported as a
    # note, not a failure.
    refused_by_spark: bool = False


def query_names(queries_dir: Path) -> list[str]:
    return sorted(p.stem for p in queries_dir.glob("*.sql"))


def load_query(queries_dir: Path, name: str) -> Query:
    path = queries_dir / f"{name}.sql"
    text = path.read_text()
    mode = "append"
    for line in text.splitlines():
        m = re.match(r"\s*--\s*mode:\s*(\S+)", line)
        if m:
            mode = m.group(1).lower()
            break
    spark = SPARK_QUERIES.get(name)
    if spark is None:
        note = "no Spark translation in compare.py"
    else:
        note = spark.get("note", "")
        digest = hashlib.sha256(text.encode()).hexdigest()
        want = spark.get("source_sha256")
        if want and want != digest:
            print(
                f"WARNING: {path} changed since its Spark translation was written "
                f"(sha256 {digest}); review SPARK_QUERIES['{name}'] in {__file__}",
                file=sys.stderr,
            )
    refused = bool(spark and spark.get("refused_by_spark"))
    return Query(name, mode, path, spark["sql"] if spark else None, note, refused)


# ---------------------------------------------------------------- Sluice


@dataclass
class SluiceRow:
    events_per_s: float | None
    batches: str = ""
    datafusion_per_s: float | None = None


def num(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None  # "n/a", "-"


def sluice_bench_once(sluice: Path, data: Path, events: int, queries: list[str], queries_dir: Path,
                      rows: dict[str, SluiceRow], extra: list[str]) -> int:
    cmd = [str(sluice), "bench", "nexmark", "--events", str(events), "--data", str(data),
           "--baseline", "datafusion", "--queries-dir", str(queries_dir)] + extra
    for q in queries:
        cmd += ["--query", q]
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print("  " + line.rstrip(), flush=True)
        tok = line.split()
        if not tok or tok[0] == "query" or tok[0] not in queries:
            continue
        # query events/s events/s/core batches p50 p99 peakMiB datafusion/s ratio
        rows[tok[0]] = SluiceRow(events_per_s=num(tok[1]), batches=tok[3] if len(tok) > 3 else "",
                                 datafusion_per_s=num(tok[-2]))
    return proc.wait()


def run_sluice_bench(sluice: Path, data: Path, events: int, queries: list[str], queries_dir: Path,
                     failed: dict[str, str], extra: list[str]) -> dict[str, SluiceRow]:
    """All queries in one `sluice bench nexmark` process, as the bench is
    normally run. The bench runs them in order and stops at the first that
    fails: that one goes into `failed` and the rest run again in a new
    process."""
    rows: dict[str, SluiceRow] = {}
    while True:
        todo = [q for q in queries if q not in rows and q not in failed]
        if not todo:
            return rows
        code = sluice_bench_once(sluice, data, events, todo, queries_dir, rows, extra)
        left = [q for q in todo if q not in rows]
        if not left:
            return rows
        failed[left[0]] = f"failed on Sluice (exit {code}; see its output above)"


# ---------------------------------------------------------------- Spark


TABLE_COLUMNS = {
    "person": [("id", "bigint"), ("name", "string"), ("email_address", "string"), ("credit_card", "string"),
               ("city", "string"), ("state", "string"), ("date_time", "timestamp_ntz"), ("extra", "string")],
    "auction": [("id", "bigint"), ("item_name", "string"), ("description", "string"), ("initial_bid", "bigint"),
                ("reserve", "bigint"), ("date_time", "timestamp_ntz"), ("expires", "timestamp_ntz"),
                ("seller", "bigint"), ("category", "bigint"), ("extra", "string")],
    "bid": [("auction", "bigint"), ("bidder", "bigint"), ("price", "bigint"), ("channel", "string"),
            ("url", "string"), ("date_time", "timestamp_ntz"), ("extra", "string")],
}


# Rows of the static `side_input` table (src/bench/mod.rs SIDE_INPUT_KEYS).
SIDE_INPUT_KEYS = 10_000


@dataclass
class SparkSettings:
    driver_memory: str = "4g"
    master: str = "local[2]"
    shuffle_partitions: int = 2
    extra_conf: list[tuple[str, str]] = field(default_factory=list)


def spark_session(s: SparkSettings):
    # Bind the driver to loopback (no network needed in local mode).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    b = (SparkSession.builder.appName("sluice-compare").master(s.master)
         .config("spark.driver.memory", s.driver_memory)
         .config("spark.sql.shuffle.partitions", str(s.shuffle_partitions))
         .config("spark.ui.enabled", "false")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.ui.showConsoleProgress", "false")
         # Streaming queries never use adaptive execution; Spark turns it off
         # for each of them with a warning, so it is off here from the start.
         .config("spark.sql.adaptive.enabled", "false"))
    for k, v in s.extra_conf:
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # "Disabling AQE since AQE is not supported in stateful workloads", once
    # per stateful query, whatever spark.sql.adaptive.enabled says.
    jvm = spark.sparkContext._jvm
    for logger in ("org.apache.spark.sql.execution.streaming.MicroBatchExecution",
                   "org.apache.spark.sql.execution.streaming.runtime.MicroBatchExecution"):
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            logger, jvm.org.apache.logging.log4j.Level.ERROR)
    return spark


def spark_alive(spark) -> bool:
    """Whether the session's JVM still answers."""
    try:
        spark.sparkContext._jvm.java.lang.System.currentTimeMillis()
        return True
    except Exception:  # noqa: BLE001 - any failure to reach it means it is gone
        return False


def register_sources(spark, data: Path) -> None:
    """Temp views person/auction/bid: the file source, one file per trigger,
    NTZ timestamps cast to TIMESTAMP, watermark date_time - 5 seconds."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    for table, cols in TABLE_COLUMNS.items():
        schema = StructType.fromDDL(", ".join(f"{c} {t}" for c, t in cols))
        df = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(data / table))
        df = df.select(*[F.col(c).cast("timestamp").alias(c) if t == "timestamp_ntz" else F.col(c)
                         for c, t in cols])
        df.withWatermark("date_time", "5 seconds").createOrReplaceTempView(table)
    # The static table of q13, as src/bench/mod.rs side_input_table() makes it.
    (spark.range(SIDE_INPUT_KEYS).selectExpr("id AS key", "concat('value-', CAST(id AS STRING)) AS value")
     .cache().createOrReplaceTempView("side_input"))


@dataclass
class SparkRun:
    elapsed_s: float
    batches: int
    input_rows: int
    batch_rows: list[int] = field(default_factory=list)


def run_spark_query(spark, q: Query, work: Path, count_rows: bool = False) -> SparkRun:
    """One available-now run of `q` from a fresh checkpoint, timed from
    start() to the end of awaitTermination(). With count_rows, the sink is a
    foreachBatch counting rows per micro-batch instead of noop."""
    ck = Path(tempfile.mkdtemp(prefix=f"ck-{q.name}-", dir=work))
    df = spark.sql(q.spark_sql)
    w = (df.writeStream.outputMode(q.mode).trigger(availableNow=True)
         .option("checkpointLocation", str(ck)).queryName(f"{q.name}_{ck.name.replace('-', '_')}"))
    counts: dict[int, int] = {}
    if count_rows:
        def count(batch_df, batch_id):
            counts[batch_id] = batch_df.count()
        w = w.foreachBatch(count)
    else:
        w = w.format("noop")
    t0 = time.perf_counter()
    sq = w.start()
    sq.awaitTermination()
    elapsed = time.perf_counter() - t0
    if sq.exception() is not None:
        raise RuntimeError(f"{q.name} failed on Spark: {sq.exception()}")
    progress = sq.recentProgress
    shutil.rmtree(ck, ignore_errors=True)
    batches = (max(p["batchId"] for p in progress) + 1) if progress else 0
    input_rows = sum(p.get("numInputRows", 0) for p in progress)
    batch_rows = [counts.get(i, 0) for i in range(max(counts) + 1)] if counts else []
    return SparkRun(elapsed, batches, input_rows, batch_rows)


# ---------------------------------------------------------------- check mode


SLUICE_TYPES = {"bigint": "BIGINT", "string": "VARCHAR", "timestamp_ntz": "TIMESTAMP(6)"}


def sluice_rows_per_batch(sluice: Path, data: Path, q: Query, work: Path) -> list[int]:
    """Run `q` with `sluice run` into a memory sink (same sources, trigger and
    mode as the bench runner) and read the rows out of each micro-batch from
    its progress lines."""
    body = "\n".join(l for l in q.sql_file.read_text().splitlines() if not l.strip().startswith("--"))
    body = body.strip().rstrip(";")
    stmts = [f"CREATE TABLE side_input AS SELECT CAST(value AS BIGINT) AS key, "
             f"concat('value-', CAST(value AS VARCHAR)) AS value FROM generate_series(0, {SIDE_INPUT_KEYS - 1});"]
    for table, cols in TABLE_COLUMNS.items():
        coldefs = ", ".join(f"{c} {SLUICE_TYPES[t]}" for c, t in cols)
        stmts.append(
            f"CREATE SOURCE {table} ({coldefs}, WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND) "
            f"WITH (connector = 'files', path = '{data / table}', format = 'parquet', max_files_per_trigger = '1');")
    ck = Path(tempfile.mkdtemp(prefix=f"sluice-ck-{q.name}-", dir=work))
    stmts.append(f"CREATE SINK check_{q.name} WITH (connector = 'memory', output_mode = '{q.mode}', "
                 f"trigger = 'available_now', checkpoint = '{ck}') AS\n{body};")
    script = work / f"check-{q.name}.sql"
    script.write_text("\n".join(stmts) + "\n")
    res = subprocess.run([str(sluice), "run", str(script)], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"sluice run {script} failed:\n{res.stdout}\n{res.stderr}")
    per_batch: dict[int, int] = {}
    for m in re.finditer(r"batch (\d+): \d+ rows in, (\d+) rows out", res.stderr):
        per_batch[int(m.group(1))] = int(m.group(2))
    shutil.rmtree(ck, ignore_errors=True)
    if not per_batch:
        raise RuntimeError(f"no progress lines from sluice run {script}:\n{res.stderr}")
    return [per_batch.get(i, 0) for i in range(max(per_batch) + 1)]


def check(args, queries: list[Query], spark_settings: SparkSettings, work: Path) -> int:
    spark = spark_session(spark_settings)
    register_sources(spark, args.data)
    passed = failed = skipped = 0
    print(f"\nrow-count check over {args.events} events (rows out of each micro-batch; "
          "trailing empty batches ignored)")
    print(f"{'query':<14} {'mode':<7} {'Sluice rows':>12} {'Spark rows':>12}  result")
    for q in queries:
        if q.spark_sql is None or q.refused_by_spark:
            skipped += 1
            why = q.note or "Spark refuses it"
            print(f"{q.name:<14} {q.mode:<7} {'':>12} {'':>12}  skipped ({why})")
            continue
        try:
            s = sluice_rows_per_batch(args.sluice, args.data, q, work)
            k = run_spark_query(spark, q, work, count_rows=True).batch_rows
        except Exception as e:  # noqa: BLE001 - report it and go on with the other queries
            failed += 1
            print(f"{q.name:<14} {q.mode:<7} {'':>12} {'':>12}  ERROR {str(e).strip()[:2000]}", flush=True)
            continue
        while s and s[-1] == 0:
            s.pop()
        while k and k[-1] == 0:
            k.pop()
        ok = s == k
        passed += ok
        failed += not ok
        print(f"{q.name:<14} {q.mode:<7} {sum(s):>12} {sum(k):>12}  {'same' if ok else 'DIFFERENT'}"
              + (f"  ({q.note})" if q.note else ""), flush=True)
        if not ok:
            print(f"    Sluice per batch: {s}\n    Spark  per batch: {k}")
    spark.stop()
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


# ---------------------------------------------------------------- report


def fmt_rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def java_version(spark) -> str:
    sysprop = spark.sparkContext._jvm.java.lang.System.getProperty
    return f"{sysprop('java.vm.name')} {sysprop('java.version')}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, required=True, help="events in the generated stream (N)")
    ap.add_argument("--data", type=Path, required=True, help="directory written by `sluice nexmark generate`")
    ap.add_argument("--sluice", type=Path, required=True, help="the sluice binary")
    ap.add_argument("--queries-dir", type=Path, default=REPO / "benches" / "nexmark")
    ap.add_argument("--query", action="append", default=[], help="query name (repeatable); default all")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "compare" / "results.md")
    ap.add_argument("--skip-sluice", action="store_true")
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--check", action="store_true", help="compare rows per micro-batch instead of timing")
    ap.add_argument("--spark-runs", type=int, default=1,
                    help="measured Spark runs per query after the warm-up; the median is reported (default 1)")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Spark setting (repeatable)")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir for checkpoints (default: a temp dir)")
    ap.add_argument("--sluice-arg", action="append", default=[], metavar="ARG",
                    help="extra argument of `sluice bench nexmark` (repeatable), e.g. "
                         "--sluice-arg=--state-checkpoint-interval=10")
    args = ap.parse_args()

    args.data = args.data.resolve()
    args.sluice = args.sluice.resolve()
    queries_dir = args.queries_dir.resolve()
    names = args.query or query_names(queries_dir)
    unknown = [n for n in names if not (queries_dir / f"{n}.sql").exists()]
    if unknown:
        sys.exit(f"no such query in {queries_dir}: {unknown}")
    queries = [load_query(queries_dir, n) for n in names]
    for q in queries:
        if q.spark_sql is None:
            print(f"WARNING: {q.name}: {q.note}; Spark is skipped for it", file=sys.stderr)

    extra = []
    for kv in args.spark_conf:
        k, _, v = kv.partition("=")
        extra.append((k, v))
    settings = SparkSettings(driver_memory=args.driver_memory, extra_conf=extra)

    work = Path(tempfile.mkdtemp(prefix="sluice-compare-", dir=args.work))
    try:
        if args.check:
            return check(args, queries, settings, work)

        failed: dict[str, list[str]] = {}
        sluice_rows: dict[str, SluiceRow] = {}
        if not args.skip_sluice:
            print(f"\n== Sluice: sluice bench nexmark over {args.events} events", flush=True)
            sluice_failed: dict[str, str] = {}
            sluice_rows = run_sluice_bench(args.sluice, args.data, args.events, names, queries_dir, sluice_failed,
                                           args.sluice_arg)
            for q, why in sluice_failed.items():
                failed.setdefault(q, []).append(why)

        spark_rates: dict[str, float] = {}
        pyspark_version = java = "not run"
        if not args.skip_spark:
            print(f"\n== Spark Structured Streaming over {args.events} events", flush=True)
            t0 = time.perf_counter()
            spark = spark_session(settings)
            print(f"  session started in {time.perf_counter() - t0:.1f} s (not counted)", flush=True)
            pyspark_version, java = spark.version, java_version(spark)
            register_sources(spark, args.data)
            for q in queries:
                if q.spark_sql is None:
                    continue
                try:
                    warm = run_spark_query(spark, q, work)
                    runs = [run_spark_query(spark, q, work) for _ in range(max(1, args.spark_runs))]
                except Exception as e:  # noqa: BLE001 - report it and go on with the other queries
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    if not spark_alive(spark):
                        # The JVM died (out of memory, most often): this query
                        # failed, and a new session runs the rest.
                        msg = (f"the Spark driver died while running it ({msg}); its log above says why, "
                               f"often java.lang.OutOfMemoryError with --driver-memory {settings.driver_memory}")
                        print(f"  {q.name:<14} FAILED: {msg}", flush=True)
                        failed.setdefault(q.name, []).append(f"failed on Spark: {msg}")
                        spark = spark_session(settings)
                        register_sources(spark, args.data)
                        continue
                    if q.refused_by_spark:
                        print(f"  {q.name:<14} refused by Spark (as expected): {msg}", flush=True)
                        q.note = f"Spark refuses it: {msg}"
                        continue
                    print(f"  {q.name:<14} FAILED: {msg}", flush=True)
                    failed.setdefault(q.name, []).append(f"failed on Spark: {msg}")
                    continue
                if q.refused_by_spark:
                    q.note = "expected Spark to refuse this query, but it ran: review its translation"
                elapsed = statistics.median(r.elapsed_s for r in runs)
                spark_rates[q.name] = args.events / elapsed
                times = ", ".join(f"{r.elapsed_s:.2f}" for r in runs)
                print(f"  {q.name:<14} warm-up {warm.elapsed_s:6.2f} s, measured {times} s, "
                      f"{runs[-1].batches} batches, {runs[-1].input_rows} input rows, "
                      f"{spark_rates[q.name]:,.0f} events/s", flush=True)
            spark.stop()

        header = ["query", "Sluice events/s", "Spark events/s", "Sluice/Spark",
                  "DataFusion batch events/s", "Sluice/DataFusion"]
        rows = []
        for q in queries:
            sl = sluice_rows.get(q.name)
            s_rate = sl.events_per_s if sl else None
            df_rate = sl.datafusion_per_s if sl else None
            k_rate = spark_rates.get(q.name)
            rows.append([q.name, fmt_rate(s_rate), fmt_rate(k_rate), fmt_ratio(s_rate, k_rate),
                         fmt_rate(df_rate), fmt_ratio(s_rate, df_rate)])
        notes = []
        for q in queries:
            for why in ([q.note] if q.note else []) + failed.get(q.name, []):
                notes.append(f"{q.name}: {why}")

        try:
            sluice_version = subprocess.run([str(args.sluice), "--version"], capture_output=True, text=True,
                                            check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            sluice_version = "sluice (version unknown)"
        runs_note = "one measured run" if args.spark_runs <= 1 else f"median of {args.spark_runs} measured runs"
        settings_lines = [
            f"events (N): {args.events} (data: {args.data})",
            f"queries: {', '.join(names)} (benches/nexmark; output mode from each file's `-- mode:` line)",
            f"Sluice: {sluice_version} ({args.sluice}), `sluice bench nexmark --baseline datafusion`, "
            "max_files_per_trigger=1, available-now, watermark date_time - 5 s",
            f"Spark: pyspark {pyspark_version}, {settings.master}, spark.sql.shuffle.partitions="
            f"{settings.shuffle_partitions}, driver memory {settings.driver_memory}, maxFilesPerTrigger=1, "
            "trigger availableNow, noop sink, watermark date_time - 5 s, session time zone UTC, "
            "default (HDFS-backed) state store" + "".join(f", {k}={v}" for k, v in settings.extra_conf),
            f"Java: {java}",
            "events/s = N / wall time of one available-now run over all N events (each engine reads only "
            f"the tables its query uses). Spark: start() to awaitTermination(), after a discarded warm-up run, "
            f"{runs_note}; session start not counted. Sluice: after a discarded warm-up run"
            + (f", with {' '.join(args.sluice_arg)}" if args.sluice_arg else "") + ". DataFusion batch: after a warm-up run.",
        ]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        print()
        print("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
        for r in rows:
            print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if notes:
            print()
            for n in notes:
                print(f"note: {n}")
        print()
        for line in settings_lines:
            print(line)

        args.out.parent.mkdir(parents=True, exist_ok=True)
        md = ["# Sluice vs Spark Structured Streaming, Nexmark", "",
              f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} cores.", "",
              "| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        if notes:
            md += ["", "Notes:", ""] + [f"- {n}" for n in notes]
        md += ["", "Settings:", ""] + [f"- {line}" for line in settings_lines] + [""]
        args.out.write_text("\n".join(md))
        print(f"\nwrote {args.out}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

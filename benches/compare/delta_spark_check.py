#!/usr/bin/env python3
"""Read the Delta tables of the Delta crash-restart harness with Apache
Spark and Delta Lake's own jars: an independent check of Sluice's Delta
sink, next to tests/crash/delta_check.py (which reads with delta-rs).

  delta_spark_check.py OUT_DIR ROWS      e.g.  /tmp/dkeep/out 400

OUT_DIR is the OUT of tests/crash/delta_crash_test.sh, holding the tables
OUT_DIR/rows (id BIGINT, k STRING partition column, v2 BIGINT) and
OUT_DIR/totals (k STRING, n BIGINT, s BIGINT). For input ids 0..ROWS-1,
with v(i) = i*7 % 1001 and k(i) = "k" + str(i % 5), it checks exactly what
delta_check.py checks:
  - `rows` holds every id with v(i) % 10 != 0 exactly once, with k = k(i)
    and v2 = 2*v(i), and no other id;
  - `totals` holds one row per k with n = the count of ids 0..ROWS-1 with
    that k and s = the sum of v(i) over them.
It also prints DESCRIBE HISTORY of `rows` (first and last few versions:
version, operation, operationParameters, engineInfo, and the txn
(appId, version) action of each commit as read from its log file), the
number of versions, and the txn that Delta's snapshot reports. Last line:

  spark+delta: rows=N lost=N duplicated=N wrong=N totals=exact|WRONG

Exit 1 on any problem (or if Spark cannot read a table).

Spark: pyspark 4.2.0 (Delta Lake 4.4.0 is built against Spark 4.2.0),
Delta: io.delta:delta-spark_2.13:4.4.0 from Maven Central via
spark.jars.packages (delta-storage comes transitively); local[2], UI off.
Needs Java 17. Set up the venv once and run:

  python3 -m venv ~/.cache/sluice-compare-venv-4.2.0 &&
    ~/.cache/sluice-compare-venv-4.2.0/bin/pip install pyspark==4.2.0
  ~/.cache/sluice-compare-venv-4.2.0/bin/python \\
    benches/compare/delta_spark_check.py /tmp/dkeep/out 400

It only reads the tables: it never writes to OUT_DIR.
"""
import collections
import json
import os
import sys

DELTA_PACKAGE = "io.delta:delta-spark_2.13:4.4.0"
HISTORY_EDGE = 3  # versions shown at each end of the history


def v_of(i):
    return i * 7 % 1001


def session():
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("sluice-delta-spark-check")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.jars.packages", DELTA_PACKAGE)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog",
            "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        )
        .getOrCreate()
    )


def txn_of_version(table_path, version):
    """The txn actions of one commit, read from its log file."""
    path = os.path.join(table_path, "_delta_log", f"{version:020d}.json")
    txns = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    action = json.loads(line)
                    if "txn" in action:
                        txns.append((action["txn"].get("appId"), action["txn"].get("version")))
    except OSError as e:  # e.g. the version is only in a checkpoint
        return f"(log file unreadable: {e})"
    return txns


def print_history(spark, path):
    hist = spark.sql(f"DESCRIBE HISTORY delta.`{path}`")
    rows = sorted(hist.collect(), key=lambda r: r["version"])
    print(f"DESCRIBE HISTORY {path}: {len(rows)} versions "
          f"({rows[0]['version']}..{rows[-1]['version']})" if rows else "no history")
    shown = rows if len(rows) <= 2 * HISTORY_EDGE else rows[:HISTORY_EDGE] + [None] + rows[-HISTORY_EDGE:]
    for r in shown:
        if r is None:
            print("  ...")
            continue
        params = dict(r["operationParameters"] or {})
        metrics = dict(r["operationMetrics"] or {})
        print(f"  version={r['version']} operation={r['operation']} "
              f"operationParameters={params} isBlindAppend={r['isBlindAppend']} "
              f"engineInfo={r['engineInfo']} txn={txn_of_version(path, r['version'])} "
              f"num_added_rows={metrics.get('num_added_rows', metrics.get('numOutputRows'))}")
    versions = [r["version"] for r in rows]
    gaps = versions != list(range(versions[0], versions[0] + len(versions))) if versions else True
    return len(rows), gaps


def snapshot_txns(spark, path):
    """appId -> version of the txn actions in Delta's own snapshot."""
    jvm = spark._jvm
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    none = jvm.scala.Option.empty()
    for args in ((False, none, none), (False, none), ()):  # update()'s arity differs by release
        try:
            snap = log.update(*args)
            break
        except Exception:  # py4j: no method of that arity
            snap = None
    if snap is None:
        snap = log.unsafeVolatileSnapshot()
    out = {}
    it = snap.transactions().iterator()
    while it.hasNext():
        kv = it.next()
        out[kv._1()] = kv._2()
    return snap.version(), out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, nrows = sys.argv[1], int(sys.argv[2])
    rows_path = os.path.abspath(os.path.join(out, "rows"))
    totals_path = os.path.abspath(os.path.join(out, "totals"))

    import pyspark

    spark = session()
    spark.sparkContext.setLogLevel("ERROR")
    print(f"pyspark {pyspark.__version__}, Spark {spark.version}, Delta {DELTA_PACKAGE}")
    problems = []

    df = spark.read.format("delta").load(rows_path)
    schema = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    print(f"rows schema: {schema}")
    if schema != {"id": "bigint", "k": "string", "v2": "bigint"}:
        problems.append(f"rows schema {schema}")
    table = df.select("id", "k", "v2").collect()
    seen = collections.Counter(r["id"] for r in table)
    wrong = sum(1 for r in table if r["k"] != f"k{r['id'] % 5}" or r["v2"] != 2 * v_of(r["id"]))
    expected = {i for i in range(nrows) if v_of(i) % 10 != 0}
    lost = sum(1 for i in expected if seen[i] == 0)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    unexpected = sum(n for i, n in seen.items() if i not in expected)

    tdf = spark.read.format("delta").load(totals_path)
    tschema = {f.name: f.dataType.simpleString() for f in tdf.schema.fields}
    print(f"totals schema: {tschema}")
    if tschema != {"k": "string", "n": "bigint", "s": "bigint"}:
        problems.append(f"totals schema {tschema}")
    totals = tdf.select("k", "n", "s").collect()
    want = collections.defaultdict(lambda: [0, 0])
    for i in range(nrows):
        want[f"k{i % 5}"][0] += 1
        want[f"k{i % 5}"][1] += v_of(i)
    got = {r["k"]: [r["n"], r["s"]] for r in totals}
    totals_ok = len(totals) == len(got) and got == dict(want)

    nversions, gaps = print_history(spark, rows_path)
    if gaps:
        problems.append("rows history versions are not contiguous")
    try:
        snap_version, txns = snapshot_txns(spark, rows_path)
        print(f"rows snapshot: version={snap_version} txn={txns}")
    except Exception as e:  # only informative: the JVM API is internal to Delta
        print(f"rows snapshot: txn not read ({type(e).__name__}: {str(e).splitlines()[0]})")
    tversions = spark.sql(f"DESCRIBE HISTORY delta.`{totals_path}`").count()
    print(f"totals: {tversions} versions")

    print(f"rows table: {len(table)} rows ({len(expected)} expected), {unexpected} unexpected, "
          f"{wrong} wrong; totals table: "
          f"{'exact' if totals_ok else f'WRONG {got} != {dict(want)}'}")
    if lost or duplicated or wrong or unexpected or not totals_ok:
        problems.append("data")
    for p in problems:
        print(f"PROBLEM: {p}")
    print(f"spark+delta: rows={len(table)} lost={lost} duplicated={duplicated} wrong={wrong} "
          f"totals={'exact' if totals_ok else 'WRONG'}")
    spark.stop()
    sys.exit(1 if problems else 0)


main()

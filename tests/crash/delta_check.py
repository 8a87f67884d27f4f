#!/usr/bin/env python3
"""Independent checker of the Delta crash-restart harness
(tests/crash/delta_crash_test.sh); run it with scripts/delta-py.sh.

  delta_check.py OUT ROWS CYCLES KILLS

reads OUT/rows and OUT/totals with the `deltalake` package (delta-rs's
Python reader, not Sluice) and compares them with what the queries of
delta_queries.sql must give for input ids 0..ROWS-1: every id with
v % 10 <> 0 exactly once in `rows` (with k and v2 = 2v), and the exact
count and sum per key in `totals`. Prints
`cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`; exit 1 if
anything is lost, duplicated or wrong.
"""
import collections, os, sys

from deltalake import DeltaTable


def v_of(i):
    return i * 7 % 1001


def main():
    out, rows, cycles, kills = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    table = DeltaTable(f"{out}/rows").to_pyarrow_table().to_pydict()
    seen = collections.Counter(table["id"])
    wrong = 0
    for i, k, v2 in zip(table["id"], table["k"], table["v2"]):
        if k != f"k{i % 5}" or v2 != 2 * v_of(i):
            wrong += 1
    expected = [i for i in range(rows) if v_of(i) % 10 != 0]
    lost = sum(1 for i in expected if seen[i] == 0)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    unexpected = sum(n for i, n in seen.items() if i not in set(expected))
    totals = DeltaTable(f"{out}/totals").to_pyarrow_table().to_pydict()
    want = collections.defaultdict(lambda: [0, 0])
    for i in range(rows):
        want[f"k{i % 5}"][0] += 1
        want[f"k{i % 5}"][1] += v_of(i)
    got = {k: [n, s] for k, n, s in zip(totals["k"], totals["n"], totals["s"])}
    totals_ok = len(totals["k"]) == len(got) and got == dict(want)
    print(f"rows table: {len(table['id'])} rows, {unexpected} unexpected, {wrong} wrong; totals table: "
          f"{'exact' if totals_ok else f'WRONG {got} != {dict(want)}'}")
    print(f"cycles={cycles} kills={kills} rows_in={rows} rows_out={len(table['id'])} lost={lost} duplicated={duplicated}")
    ok = lost == 0 and duplicated == 0 and wrong == 0 and unexpected == 0 and totals_ok
    # Leave without the interpreter's teardown: deltalake's native runtime
    # can abort while its threads are torn down ("terminate called without
    # an active exception"), which would turn a verdict into a crash.
    sys.stdout.flush()
    os._exit(0 if ok else 1)


main()

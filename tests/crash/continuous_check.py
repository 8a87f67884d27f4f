#!/usr/bin/env python3
"""Check the continuous crash harness's committed output: every value of
the rate source's rows `0..max` that the filter keeps (value % 3 != 1)
appears exactly once, where max is the largest value committed. Reads only
the files named by the files sink's manifest entries (see check.py).
Prints `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`; exit 1
on any loss or duplicate, or when too little was committed.

    continuous_check.py OUT_DIR CYCLES KILLS
"""
import collections, sys

from check import committed_rows


def main():
    out, cycles, kills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    values = [int(r[0]) for r in committed_rows(out)]
    counts = collections.Counter(values)
    top = max(values) if values else -1
    expected = [v for v in range(top + 1) if v % 3 != 1]
    lost = sum(1 for v in expected if v not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    wrong = sum(1 for v in counts if v % 3 == 1)
    print(f"cycles={cycles} kills={kills} rows_in={top + 1} rows_out={len(values)} lost={lost} duplicated={duplicated + wrong}")
    if lost or duplicated or wrong or top < 0:
        sys.exit(1)


if __name__ == "__main__":
    main()

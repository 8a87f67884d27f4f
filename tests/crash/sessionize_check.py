#!/usr/bin/env python3
"""Compare the sessions the crashed sessionize runs committed with those of
an uninterrupted run: only the Parquet files named by the files sink's
`_sluice_manifest/<batch>` entries count. Prints
`cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`; exit 0 only
with nothing lost and nothing duplicated."""
import collections, json, os, sys, zlib

import pyarrow.parquet as pq


def committed(out_dir):
    rows = []
    manifest = os.path.join(out_dir, "_sluice_manifest")
    if not os.path.isdir(manifest):
        return rows
    for name in sorted((n for n in os.listdir(manifest) if n.isdigit()), key=int):
        version, crc, body = open(os.path.join(manifest, name)).read().split("\n", 2)
        body = body.rstrip("\n")
        assert version == "v1", f"{name}: bad version"
        assert int(crc.split(":")[1], 16) == zlib.crc32(body.encode()), f"{name}: bad checksum"
        for f in json.loads(body)["files"]:
            path = f["path"] if os.path.isabs(f["path"]) else os.path.join(out_dir, f["path"])
            for r in pq.read_table(path).to_pylist():
                rows.append((r["user_id"], str(r["session_start"]), str(r["session_end"]), r["num_events"]))
    return rows


def main():
    crashed, reference, rows_in, cycles, kills = sys.argv[1:6]
    got, want = collections.Counter(committed(crashed)), collections.Counter(committed(reference))
    lost = sum((want - got).values())
    duplicated = sum((got - want).values())
    for r in sorted((want - got).elements())[:5]:
        print("lost:", r)
    for r in sorted((got - want).elements())[:5]:
        print("duplicated or extra:", r)
    print(f"cycles={cycles} kills={kills} rows_in={rows_in} rows_out={sum(got.values())} lost={lost} duplicated={duplicated}")
    sys.exit(0 if lost == 0 and duplicated == 0 and want else 1)


main()

#!/usr/bin/env python3
"""Compare the committed output of the crashed run with an uninterrupted one.

Reads each files-sink output directory the way an outside consumer must:
only the data files named by the `_sluice_manifest/<batch>` entries
(format: a `v1` line, a `crc32:<hex>` line, then JSON with `files`),
independently of the engine's own bookkeeping. Prints
`cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`.
"""
import collections, csv, json, os, re, sys, zlib


def committed_rows(out_dir):
    rows = []
    manifest = os.path.join(out_dir, "_sluice_manifest")
    if not os.path.isdir(manifest):
        return rows
    for name in sorted(os.listdir(manifest), key=lambda n: int(n) if n.isdigit() else -1):
        if not name.isdigit():
            continue
        text = open(os.path.join(manifest, name)).read()
        version, crc, body = text.split("\n", 2)
        body = body.rstrip("\n")
        assert version == "v1", f"{name}: bad version"
        assert int(crc.split(":")[1], 16) == zlib.crc32(body.encode()), f"{name}: bad checksum"
        for f in json.loads(body)["files"]:
            path = f["path"] if os.path.isabs(f["path"]) else os.path.join(out_dir, f["path"])
            with open(path) as fh:
                reader = csv.reader(fh)
                next(reader, None)  # header
                rows.extend(tuple(r) for r in reader)
    return rows


def console_batches(path):
    """Complete `Batch: N` tables printed by the console sink, by batch id
    (a process killed mid-print leaves an incomplete table: ignored)."""
    batches = collections.defaultdict(list)
    if not os.path.exists(path):
        return batches
    lines = open(path, errors="replace").read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^Batch: (\d+)$", lines[i])
        if m and i + 5 < len(lines) and lines[i + 2].startswith("+"):
            rows, k, complete = [], i + 5, False
            if lines[i + 4].startswith("+"):
                while k < len(lines):
                    if lines[k].startswith("+"):
                        complete = True
                        break
                    if not lines[k].startswith("|"):
                        break
                    rows.append(tuple(c.strip() for c in lines[k].strip().strip("|").split("|")))
                    k += 1
            if complete:
                batches[int(m.group(1))].append(sorted(rows))
            i = k
        i += 1
    return batches


def apply_once(batches):
    """Apply each batch id once, in order (update mode: latest row per key).
    Returns the final table and the number of batch ids whose replays differ."""
    final, inconsistent = {}, 0
    for bid in sorted(batches):
        versions = batches[bid]
        if any(v != versions[0] for v in versions[1:]):
            inconsistent += 1
        for row in versions[0]:
            final[row[0]] = row
    return final, inconsistent


def main():
    crashed, reference, rows_in, cycles, kills = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    lost = duplicated = rows_out = 0
    for sink in ("etl", "win", "pairs"):
        got = collections.Counter(committed_rows(os.path.join(crashed, sink)))
        want = collections.Counter(committed_rows(os.path.join(reference, sink)))
        rows_out += sum(got.values())
        lost += sum((want - got).values())
        duplicated += sum((got - want).values())
        if not want:
            print(f"reference run of {sink} produced nothing: the harness is broken", file=sys.stderr)
            lost += 1
    got, inconsistent = apply_once(console_batches(crashed + ".console"))
    want, _ = apply_once(console_batches(reference + ".console"))
    if not want:
        print("reference run of totals printed nothing: the harness is broken", file=sys.stderr)
        lost += 1
    rows_out += len(got)
    lost += sum(1 for k, row in want.items() if got.get(k) != row)
    duplicated += inconsistent + sum(1 for k in got if k not in want)
    print(f"cycles={cycles} kills={kills} rows_in={rows_in} rows_out={rows_out} lost={lost} duplicated={duplicated}")
    sys.exit(0 if lost == 0 and duplicated == 0 else 1)


if __name__ == "__main__":
    main()

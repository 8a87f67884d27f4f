#!/usr/bin/env python3
"""List import cycles between the top-level modules of a crate.

A module is a top-level `mod` of `src/lib.rs` (a file `src/x.rs` or a folder
`src/x/`). Module A depends on B when a file of A names `crate::B`. Prints
each strongly connected component with more than one module and exits 1 if
there is one. Usage: module-cycles.py [crate_src_dir ...] (default engine/src).
"""
import pathlib
import re
import sys


def modules(src):
    lib = (src / "lib.rs").read_text()
    return re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", lib, re.M)


def files_of(src, name):
    f = src / f"{name}.rs"
    d = src / name
    out = [f] if f.exists() else []
    if d.is_dir():
        out += sorted(d.rglob("*.rs"))
    return out


def graph(src):
    mods = modules(src)
    edges = {m: set() for m in mods}
    for m in mods:
        for f in files_of(src, m):
            text = f.read_text()
            # Drop comments so doc links do not count as imports.
            text = re.sub(r"//[^\n]*", "", text)
            for other in re.findall(r"crate::(\w+)", text):
                if other in edges and other != m:
                    edges[m].add(other)
            # `use crate::{a, b::c}` groups.
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                for other in re.findall(r"(?:^|[,{\s])(\w+)", group):
                    if other in edges and other != m:
                        edges[m].add(other)
    return edges


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    dirs = [pathlib.Path(p) for p in sys.argv[1:]] or [pathlib.Path("engine/src")]
    bad = False
    for src in dirs:
        edges = graph(src)
        for comp in sccs(edges):
            bad = True
            inner = {m: sorted(edges[m] & set(comp)) for m in comp}
            print(f"{src}: cycle among {', '.join(comp)}")
            for m, deps in inner.items():
                print(f"  {m} -> {', '.join(deps)}")
    if not bad:
        print("no module cycles in " + ", ".join(str(d) for d in dirs))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

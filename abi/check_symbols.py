#!/usr/bin/env python3
"""Exported symbols = header declarations = version-script entries, all surelock_-prefixed.

Also checks the header's hygiene: it includes nothing but <stddef.h> and <stdint.h>.
Usage: check_symbols.py HEADER MAPFILE LIBRARY
"""
import re
import subprocess
import sys


def header_declarations(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    includes = set(re.findall(r"^\s*#\s*include\s*<([^>]+)>", text, flags=re.M))
    # Declarations only: preprocessor lines (the macro's own definition) are not API.
    code = re.sub(r"^\s*#.*$", "", text, flags=re.M)
    decls = set(re.findall(r"\bSURELOCK_API\b[^;{]*?\b(\w+)\s*\(", code, flags=re.S))
    return decls, includes


def map_entries(path):
    text = re.sub(r"/\*.*?\*/", "", open(path, encoding="utf-8").read(), flags=re.S)
    names = set()
    for block in re.findall(r"global:(.*?)(?:local:|\})", text, flags=re.S):
        names |= set(re.findall(r"\b(\w+)\s*;", block))
    return names


def exported(path):
    out = subprocess.run(["nm", "-D", "--defined-only", path], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] != "A":  # "A" entries are version nodes
            names.add(parts[2].split("@")[0])
    return names


def main():
    header, mapfile, library = sys.argv[1:4]
    decls, includes = header_declarations(header)
    entries = map_entries(mapfile)
    exports = exported(library)
    failures = []
    for label, names in (("header", decls), ("map", entries), ("library", exports)):
        bad = sorted(n for n in names if not n.startswith("surelock_"))
        if bad:
            failures.append(f"{label} has names without the surelock_ prefix: {bad}")
    pairs = (("declared in the header", decls, "in the version script", entries),
             ("declared in the header", decls, "exported by the library", exports),
             ("in the version script", entries, "exported by the library", exports))
    for a_label, a, b_label, b in pairs:
        for name in sorted(a - b):
            failures.append(f"{name}: {a_label} but not {b_label}")
        for name in sorted(b - a):
            failures.append(f"{name}: {b_label} but not {a_label}")
    extra = sorted(includes - {"stddef.h", "stdint.h"})
    if extra:
        failures.append(f"the header includes more than <stddef.h> and <stdint.h>: {extra}")
    if not decls:
        failures.append("no SURELOCK_API declarations found in the header")
    for f in failures:
        print("FAIL:", f)
    print(f"{len(decls)} declarations, {len(entries)} map entries, {len(exports)} exports")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

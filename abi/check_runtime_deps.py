#!/usr/bin/env python3
"""The shared library needs nothing but libc: no libstdc++ in NEEDED, no C++ runtime symbols
(operator new/delete, __cxa_*, __gxx_personality) imported, and no static constructors in any
of its object files (.ctors / .init_array sections).
Usage: check_runtime_deps.py LIBRARY
"""
import glob
import os
import re
import subprocess
import sys


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    library = sys.argv[1]
    failures = []
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", run("readelf", "-d", library))
    for lib in needed:
        if "stdc++" in lib or "c++" in lib:
            failures.append(f"NEEDED {lib}")
    for line in run("nm", "-D", "--undefined-only", library).splitlines():
        name = line.split()[-1].split("@")[0]
        # __cxa_finalize is libc's, called by the crt files of every shared object.
        if name.startswith(("_Z", "__cxa_", "__gxx_")) and name != "__cxa_finalize":
            failures.append(f"imports the C++ runtime symbol {name}")
    # Meson keeps a target's objects in "<file name>.p" beside it.
    objects = glob.glob(os.path.join(library + ".p", "*.o"))
    if not objects:
        failures.append(f"no object files found in {library}.p to check for static constructors")
    for obj in objects:
        sections = run("objdump", "-h", obj)
        for section in (".ctors", ".init_array"):
            if re.search(r"\s" + re.escape(section) + r"(\.|\s)", sections):
                failures.append(f"{os.path.basename(obj)} has a {section} section "
                                "(a static constructor)")
    for f in failures:
        print("FAIL:", f)
    print(f"NEEDED: {', '.join(needed)}; {len(objects)} objects checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

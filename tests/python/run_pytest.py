"""Runs one test file of the surelock Python package under pytest; exit 77 (meson: skipped)
when pytest, pytest-asyncio or hypothesis is not installed."""
import importlib.util
import sys

for module in ("pytest", "pytest_asyncio", "hypothesis"):
    if importlib.util.find_spec(module) is None:
        print("%s is not installed: skipped (Debian: python3-pytest python3-pytest-asyncio "
              "python3-hypothesis)" % module)
        sys.exit(77)

import pytest  # noqa: E402

sys.exit(pytest.main(["-p", "no:cacheprovider", "-q", "-rs", "--tb=short", *sys.argv[1:]]))

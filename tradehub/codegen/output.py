"""
Write a generated file, or check that the committed one is current: one
behaviour for every generator, so `make docs` and CI treat them alike.
"""

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, command: str, check: bool) -> int:
    """Write C{text} to C{path}; with C{check}, write nothing and return 1 when the file differs."""
    if check:
        if path.exists() and path.read_text() == text:
            print(f"{path} is current")
            return 0
        print(f"{path} is out of date: run {command}", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0

"""python -m tests.checks.mistakes [--write]: print (or write into book/instructor_guide.md) the guide's section
listing the mistakes every check knows."""
import sys

from . import GUIDE, render, write_guide

if "--write" in sys.argv[1:]:
    print(f"{'wrote' if write_guide() else 'unchanged:'} {GUIDE}")
else:
    print(render(), end="")

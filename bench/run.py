"""`make bench`: runs bench/run.sh (the benchmark is a bash script; see bench/README.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().parent / "run.sh"
    os.execvp("bash", ["bash", str(script), *sys.argv[1:]])

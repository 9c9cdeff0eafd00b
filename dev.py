#!/usr/bin/env python3
"""The two newcomer commands, with nothing but Python 3.11 on the machine.

    python3 dev.py demo   # set up .venv, then start the demo on http://127.0.0.1:5000
    python3 dev.py test   # set up .venv with test tools, then run the whole suite (pytest)
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _setup(extras: str) -> None:
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extras}]" if extras else "."
    subprocess.run([BIN / "python", "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([BIN / "python", "-m", "pip", "install", "-q", "-e", spec], check=True, cwd=ROOT)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command == "demo":
        _setup("")
        return subprocess.call([BIN / "broker", "demo", *sys.argv[2:]], cwd=ROOT)
    if command == "test":
        _setup("test")
        # Browser tests drive Debian's Chromium; installed here when missing and we are root.
        subprocess.run([sys.executable, str(ROOT / "scripts" / "install_chromium.py")], check=False)
        steps = [
            [BIN / "ruff", "check", "."],
            [BIN / "lint-imports"],
            [BIN / "pytest", "-n", "2", *sys.argv[2:]],
        ]
        for step in steps:
            code = subprocess.call(step, cwd=ROOT)
            if code != 0:
                return code
        return 0
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    sys.exit(main())

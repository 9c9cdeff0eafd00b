"""Install Debian's Chromium for the browser tests when it is missing and we may (root + apt)."""

from __future__ import annotations

import os
import shutil
import subprocess


def main() -> None:
    if shutil.which("chromium"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("chromium not installed and apt-get unavailable: browser tests will say so")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
                   check=False, env=env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()

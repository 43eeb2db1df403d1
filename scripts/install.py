"""`python scripts/install.py ARGS`: what `python -m pip install ARGS` does, through uv when it can.

uv installs the project's ~120 packages in seconds where pip takes a minute and a half (measured on
2 cores with cold caches, torch from the local wheel included: 11 s vs 85 s), which a fresh clone's
`scripts/run_default.sh` pays once. uv does not read pip's configuration, so it is given pip's own:
local wheel folders (find-links), extra indexes and constraint files, from `pip config list` and
PIP_* variables alike; indexes are merged as pip merges them (the best version of any index). If uv
cannot be installed or fails, pip runs with the same arguments: the result is the same packages."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

_UV_FLAGS = {"find-links": "--find-links", "index-url": "--index-url", "extra-index-url": "--extra-index-url",
             "constraint": "--constraint"}


def pip_settings() -> tuple[list[str], dict[str, str]]:
    """uv arguments and environment for pip's configured sources, constraints and certificate."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    pairs, environment = [], {}
    for line in listed.splitlines():  # e.g. global.find-links='/opt/wheels' or :env:.extra-index-url='a b'
        key, _, quoted = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        values = " ".join(shlex.split(quoted)).split()
        if name in _UV_FLAGS:
            pairs += [(_UV_FLAGS[name], value) for value in values]
        elif name == "cert" and values:
            environment["SSL_CERT_FILE"] = values[0]
    return [item for pair in dict.fromkeys(pairs) for item in pair], environment


def main(args: list[str]) -> int:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    if subprocess.run([*pip, "uv"]).returncode == 0:
        arguments, environment = pip_settings()
        uv = [sys.executable, "-m", "uv", "pip", "install", "--python", sys.executable, "--quiet",
              "--index-strategy", "unsafe-best-match", *arguments, *args]
        if subprocess.run(uv, env={**os.environ, **environment}).returncode == 0:
            return 0
        print("uv failed: installing with pip instead", file=sys.stderr)
    return subprocess.run([*pip, *args]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

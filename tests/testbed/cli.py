"""`python -m tests.testbed build|run`: the shell's way into the test bed."""

from __future__ import annotations

import argparse

from tests.testbed import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find in the cache) the control-plane binaries")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build.main()
    return 2

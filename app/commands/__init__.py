"""Implementations of the `wattflow` subcommands that are not the live run.

Each module has `run(args: argparse.Namespace) -> int` (0 ok, 2 a usage or input error).
These may use rich: they are the terminal front end, not the core.
"""

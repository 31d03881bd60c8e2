"""Parrot (microsoft/ParrotServe) through its HTTP API, with workflow stages mapped to
semantic function calls so that Parrot sees the DAG."""

from engines.parrot.engine import ParrotEngine, ParrotOptions, build_template, parse_options

__all__ = ["ParrotEngine", "ParrotOptions", "build_template", "parse_options"]

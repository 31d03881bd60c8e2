"""The `dcgm` meter: GPUs (and node_exporter's RAPL CPU/DRAM counters) of remote nodes,
scraped from their exporters' Prometheus pages. docs/fleet.md says how to set it up."""

"""`wattflow serve`: the simulated twin as an OpenAI-compatible HTTP server.

The sim engine (one `SimEngine` and its `GpuTwin` per simulated GPU) timed on the wall
clock behind vLLM's HTTP API, with vLLM's Prometheus metrics and dcgm-exporter's GPU
metrics on `/metrics`. docs/serve.md describes it.
"""

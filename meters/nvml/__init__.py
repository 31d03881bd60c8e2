"""NVIDIA GPUs through NVML (`meters.nvml.meter`; `pynvml` itself is imported only in
`NvmlMeter.open`). Registered lazily in `meters`."""

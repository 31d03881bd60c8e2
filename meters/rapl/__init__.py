"""CPU package and DRAM energy through Linux powercap (RAPL): `meters.rapl.meter`.
Registered lazily in `meters`."""

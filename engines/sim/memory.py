"""Where one GPU's memory goes when a vLLM-style engine starts, and what is left for
the KV cache.

vLLM takes `gpu_memory_utilization` (0.9) of the GPU's memory and fills it at start:
the weights (1/N of them under tensor parallelism), the peak of a profiling forward
pass at max_num_batched_tokens (activations) and of the sampler at max_num_seqs
(fp32 logits), memory outside PyTorch (CUDA context, cuBLAS workspaces, NCCL buffers
with N > 1), the CUDA graphs captured for decode batch sizes; the KV cache gets the
rest. The activation and graph sizes here are estimates from the shapes (the same
tensors vLLM's profile run allocates), not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.sim.specs import GIB, GpuSpec, ModelSpec

MIB = 1024**2
CUDA_CONTEXT_BYTES = 500 * MIB
_NCCL_BYTES = 512 * MIB  # NCCL and custom all-reduce buffers with N > 1
_GRAPH_SIZES = 67  # decode batch sizes vLLM captures (1, 2, 4, 8, 16, ..., 512)
_GRAPH_BYTES_PER_LAYER_SIZE = 256 * 1024  # captured nodes and their private pool


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Bytes per GPU."""

    budget: float  # total x gpu_memory_utilization
    weights: float
    activations: float
    non_torch: float
    cuda_graphs: float

    @property
    def kv_cache(self) -> float:
        return self.budget - self.weights - self.activations - self.non_torch \
            - self.cuda_graphs

    def lines(self) -> dict[str, float]:
        """The plan in GiB, for the engine's info()."""
        return {k: round(v / GIB, 2) for k, v in (
            ("budget_gib", self.budget), ("weights_gib", self.weights),
            ("activations_gib", self.activations), ("non_torch_gib", self.non_torch),
            ("cuda_graphs_gib", self.cuda_graphs), ("kv_cache_gib", self.kv_cache))}


def plan_memory(gpu: GpuSpec, model: ModelSpec, *, tensor_parallel_size: int = 1,
                max_num_seqs: int = 1024, max_num_batched_tokens: int = 8192,
                gpu_memory_utilization: float = 0.9) -> MemoryPlan:
    tp = max(1, tensor_parallel_size)
    b = model.dtype_bytes
    tokens = max_num_batched_tokens
    # Peak of the profiling pass: the MLP's gate/up output and its activation (3 x
    # intermediate), the residual stream, normed input and attention output (4 x hidden).
    act = tokens * b * (3 * model.intermediate / tp + 4 * model.hidden)
    # The sampler's dummy run: fp32 logits and probabilities for max_num_seqs rows.
    act += min(max_num_seqs, tokens) * model.vocab * 4 * 2
    non_torch = CUDA_CONTEXT_BYTES + (_NCCL_BYTES if tp > 1 else 0)
    graphs = model.layers * _GRAPH_SIZES * _GRAPH_BYTES_PER_LAYER_SIZE
    return MemoryPlan(
        budget=gpu.mem_bytes * gpu_memory_utilization,
        weights=model.weight_bytes / tp,
        activations=float(act),
        non_torch=float(non_torch),
        cuda_graphs=float(graphs),
    )

"""Optional abilities are declared (protocols), not probed: the runner hands an engine's
tokenizer to the workloads, the poller takes a meter's messages and final sample, and
engines never import workloads."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any, ClassVar

import engines
import workloads.text
from app.core.clock import ManualClock, run_async
from app.core.events import ErrorEvent, Event, Sample
from app.core.poller import MeterPoller
from app.core.runner import RunConfig, Runner
from engines.base import EngineContext, HasTokenizer, Request, Restartable
from engines.tokens import TokenCounter
from meters.base import DrainsMessages, MeterInfo, SamplesFinal
from tests.fakes.fake_engine import FakeEngine

ROOT = Path(__file__).resolve().parents[2]


def _two_chars_a_token(text: str) -> int:
    return max(1, len(text) // 2)


class TokenizingEngine(FakeEngine):
    """A fake engine with a tokenizer far from the words-based estimate."""

    seen: ClassVar[list[Request]] = []

    def tokenizer(self) -> TokenCounter | None:
        return _two_chars_a_token

    def generate(self, request: Request) -> Any:
        TokenizingEngine.seen.append(request)
        return super().generate(request)

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> TokenizingEngine:
        return cls(ctx)


def test_the_runner_hands_the_engines_tokenizer_to_the_workloads_for_the_run() -> None:
    engines.register("tokenizing", lambda: TokenizingEngine.from_options)
    TokenizingEngine.seen = []
    cfg = RunConfig(workload="sequential", engine="tokenizing", meters=["none"], workflows=1,
                    workload_params={"chunks": 2, "chunk_tokens": 64, "output_tokens": 2})
    out = run_async(Runner(cfg).run(), virtual=True)
    assert out.reason == "completed", out.message
    assert TokenizingEngine.seen
    for r in TokenizingEngine.seen:
        assert r.prompt_tokens == _two_chars_a_token(r.prompt)  # counted with the engine's
    assert workloads.text._tokenizer is None  # and taken back at the end


def test_abilities_are_protocols_the_builtin_plugins_declare() -> None:
    from engines.sim.engine import SimEngine
    from engines.transformers.engine import TransformersEngine
    from engines.vllm.engine import VLLMEngine
    from meters.nvml.meter import NvmlMeter
    from meters.rapl.meter import RaplMeter
    from meters.sim.meter import SimMeter

    ctx = EngineContext(ManualClock(), lambda ev: None)
    sim = SimEngine.from_options(ctx, {})
    assert isinstance(sim, Restartable) and not isinstance(sim, HasTokenizer)
    assert isinstance(VLLMEngine.from_options(ctx, {"model": "m"}), Restartable)
    tf = TransformersEngine.from_options(ctx, {})
    assert isinstance(tf, HasTokenizer) and not isinstance(tf, Restartable)
    assert not isinstance(FakeEngine(ctx), Restartable | HasTokenizer)
    for meter in (NvmlMeter(), RaplMeter()):
        assert isinstance(meter, SamplesFinal) and isinstance(meter, DrainsMessages)
    assert not isinstance(SimMeter(sim), SamplesFinal | DrainsMessages)


class _Reporting:
    """A meter with both abilities: a message per read, and a distinct final sample."""

    name = "reporting"

    def info(self) -> MeterInfo:
        return MeterInfo(name=self.name, blocking=False, poll_interval_s=1.0)

    def sample(self, t_s: float) -> list[Sample]:
        return [Sample(t_s=t_s, meter=self.name, device="gpu0", component="gpu")]

    def sample_final(self, t_s: float) -> list[Sample]:
        return [Sample(t_s=t_s, meter=self.name, device="gpu0", component="gpu", power_w=1.0)]

    def drain_errors(self) -> list[str]:
        return ["gpu0 lost"]

    def drain_notes(self) -> list[str]:
        return ["counter reset"]


def test_the_poller_uses_declared_meter_abilities() -> None:
    events: list[Event] = []

    async def main() -> None:
        poller = MeterPoller([_Reporting()], ManualClock(), events.append)  # type: ignore[list-item]
        poller.start()
        await asyncio.sleep(0)
        await poller.stop()

    asyncio.run(main())
    messages = [e.message for e in events if isinstance(e, ErrorEvent)]
    assert messages[:2] == ["gpu0 lost", "counter reset"]
    samples = [e for e in events if isinstance(e, Sample)]
    assert samples[-1].power_w == 1.0  # the final reading is the meter's sample_final


def test_engines_never_import_workloads() -> None:
    offenders = []
    for path in (ROOT / "engines").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] == "workloads"]
    assert offenders == []

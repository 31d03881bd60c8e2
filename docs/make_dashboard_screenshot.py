"""docs/dashboard.svg (160x45) and docs/dashboard-80x24.svg: the default composite
workload on the H100 twin, on wall time (a drain lasts seconds, as it would on a GPU),
a mark dropped, the power cap lowered to 500 W, and the batch limit cut from 64 to 4
(the knobs panel says "draining"). About a minute and a half. Run from the repository
root:
PYTHONPATH=. python docs/make_dashboard_screenshot.py docs"""

import asyncio
import sys
from pathlib import Path

from app.core.runner import RunConfig, Runner
from app.ui.app import DashboardApp
from app.ui.backends import LiveBackend

out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
sess = Path("/tmp/shot-session/composite-sim-20250101-120000.jsonl")
sess.parent.mkdir(exist_ok=True)
sess.unlink(missing_ok=True)
runner = Runner(RunConfig(workload="composite", engine="sim", meters=["sim"], duration_s=3600.0,
                          session_path=sess))
backend = LiveBackend(runner, virtual=False)
app = DashboardApp(backend, handle_signals=False)


async def wait_t(pilot, t):
    while app.frame is None or app.frame.now_s < t:
        await pilot.pause(0.01)


async def cut_batch_and_shoot(pilot, path: Path) -> None:
    """64 -> 4, and the screenshot as soon as the knobs panel says "draining"."""
    for _ in range(4):
        await app.run_action("batch(-1)")
    for _ in range(500):  # 5 s at most
        if app.frame is not None and "batch_limit" in app.frame.knob_status:
            break
        await pilot.pause(0.01)
    app.save_screenshot(str(path))


async def main():
    async with app.run_test(size=(80, 24)) as pilot:
        while not backend.ready:
            await pilot.pause(0.02)
        await wait_t(pilot, 20)
        await app.run_action("mark")
        for _ in range(8):
            await app.run_action("cap(-1)")
        await wait_t(pilot, 40)
        await cut_batch_and_shoot(pilot, out / "dashboard-80x24.svg")
        for _ in range(4):
            await app.run_action("batch(1)")
        await pilot.resize_terminal(160, 45)
        await wait_t(pilot, app.frame.now_s + 30)
        await app.run_action("mark")
        await cut_batch_and_shoot(pilot, out / "dashboard.svg")
        await pilot.press("q")
        while not backend.done:
            await pilot.pause(0.05)
    await backend.wait_done()


asyncio.run(main())

"""docs/dashboard.svg: the default composite workload on the H100 twin, virtual time,
with the power cap lowered to 500 W a minute in and a mark dropped.
Run from the repository root: PYTHONPATH=. python docs/make_dashboard_screenshot.py docs/dashboard.svg"""
import asyncio, sys, time
from pathlib import Path
from app.core.runner import RunConfig, Runner
from app.ui.app import DashboardApp
from app.ui.backends import LiveBackend

out = Path(sys.argv[1])
sess = Path("/tmp/shot-session/composite-sim-20250101-120000.jsonl")
sess.parent.mkdir(exist_ok=True); sess.unlink(missing_ok=True)
runner = Runner(RunConfig(workload="composite", engine="sim", meters=["sim"], duration_s=3600.0,
                          session_path=sess))
backend = LiveBackend(runner, virtual=True)
app = DashboardApp(backend, handle_signals=False)

async def wait_t(pilot, t):
    while app.frame is None or app.frame.now_s < t:
        await pilot.pause(0.01)

async def main():
    async with app.run_test(size=(140, 45)) as pilot:
        while not backend.ready:
            await pilot.pause(0.02)
        # Actions run directly: Pilot.press waits for the screen to settle, which on a
        # virtual-time run takes a long (virtual) while.
        await wait_t(pilot, 70)
        await app.run_action("mark")
        for _ in range(8):
            await app.run_action("cap(-1)")
        await wait_t(pilot, 110)
        await app.run_action("batch(0.5)")
        await wait_t(pilot, 150)
        await pilot.pause(0.25)
        app.save_screenshot(str(out))
        await pilot.press("q")
        while not backend.done:
            await pilot.pause(0.05)
    await backend.wait_done()
asyncio.run(main())

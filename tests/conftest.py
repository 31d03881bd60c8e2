from __future__ import annotations

import engines
import meters
from tests.fakes.fake_engine import FakeEngine
from tests.fakes.fake_meter import FakeMeter

engines.register("fake", lambda: FakeEngine.from_options)
meters.register("fake", lambda: FakeMeter.from_options)

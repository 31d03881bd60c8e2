"""Power-cap control: the ability a meter declares (`control`), the run's controller of
every cappable GPU (`controller`), the guard that never leaves a real GPU capped
(`guard`), and how limits are put back after a crash (`restorers`, `result`)."""

from meters.powercap.control import PowerCapControl
from meters.powercap.controller import CapDevice, PowerCapController
from meters.powercap.guard import (
    PowerCapGuard,
    StateFileError,
    default_state_path,
    holder_alive,
    read_state,
    restore_file,
)
from meters.powercap.result import RestoreResult

__all__ = [
    "CapDevice",
    "PowerCapControl",
    "PowerCapController",
    "PowerCapGuard",
    "RestoreResult",
    "StateFileError",
    "default_state_path",
    "holder_alive",
    "read_state",
    "restore_file",
]

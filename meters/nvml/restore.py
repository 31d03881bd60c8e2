"""Put saved GPU power limits back without a meter: used by `wattflow restore` after a
killed run, and by the guard when the run's meter is already closed."""

from __future__ import annotations

import contextlib
from typing import Any

from meters.powercap.result import RestoreResult


def restore_limits(entries: list[dict[str, Any]]) -> list[RestoreResult]:
    try:
        import pynvml
    except ImportError:
        return [_fail(e, "nvidia-ml-py is not installed") for e in entries]
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError) as exc:
        return [_fail(e, f"no NVIDIA driver ({exc})") for e in entries]
    try:
        return [_restore_one(pynvml, e) for e in entries]
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _restore_one(nv: Any, entry: dict[str, Any]) -> RestoreResult:
    try:
        # The UUID identifies the card even if indices moved (a reboot, a GPU gone).
        if entry.get("uuid"):
            h = nv.nvmlDeviceGetHandleByUUID(entry["uuid"])
        else:
            h = nv.nvmlDeviceGetHandleByIndex(int(entry["index"]))
        nv.nvmlDeviceSetPowerManagementLimit(h, round(float(entry["limit_w"]) * 1000))
    except nv.NVMLError_NoPermission:
        return _fail(entry, "setting the power limit needs root (or CAP_SYS_ADMIN)")
    except nv.NVMLError_NotFound:
        return _fail(entry, "GPU not found (removed, or the UUID changed)")
    except nv.NVMLError as exc:
        return _fail(entry, str(exc))
    return RestoreResult(
        device=_label(entry), limit_w=float(entry["limit_w"]), ok=True, message="restored"
    )


def _label(entry: dict[str, Any]) -> str:
    uuid = entry.get("uuid") or ""
    return f"{entry.get('device', '?')} ({uuid})" if uuid else str(entry.get("device", "?"))


def _fail(entry: dict[str, Any], why: str) -> RestoreResult:
    return RestoreResult(
        device=_label(entry), limit_w=float(entry.get("limit_w", 0.0)), ok=False, message=why
    )

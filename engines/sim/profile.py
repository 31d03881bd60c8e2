"""A twin profile: the coefficients `wattflow calibrate` fitted to sessions recorded on
a real engine and GPU, in a JSON file that `--engine sim -E profile=FILE` loads.

    {"kind": "wattflow-twin-profile", "version": 1,
     "gpu": "h100", "model": "llama-1b",            # what the sessions ran (defaults)
     "calibration": {...Calibration fields...},     # any subset; the rest stay default
     "power": {...PowerCoefficients fields...},
     "fit": {...}}                                  # how it was made (sessions, errors)

A bad file is one line (ProfileError), never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.sim.power import PowerCoefficients
from engines.sim.roofline import Calibration

KIND = "wattflow-twin-profile"
VERSION = 1


class ProfileError(ValueError):
    """A profile that cannot be read or used; the message is one line."""


@dataclass(slots=True)
class TwinProfile:
    calibration: Calibration = field(default_factory=Calibration)
    power: PowerCoefficients = field(default_factory=PowerCoefficients)
    gpu: str | None = None
    model: str | dict[str, Any] | None = None
    fit: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "version": VERSION, "gpu": self.gpu, "model": self.model,
                "calibration": self.calibration.to_dict(), "power": self.power.to_dict(),
                "fit": self.fit}


def _coefficients(cls: Any, raw: Any, what: str, path: Path) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: '{what}' must be a table of numbers")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ProfileError(f"{path}: unknown {what} coefficient(s): {', '.join(unknown)}")
    vals: dict[str, float] = {}
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or v < 0:
            raise ProfileError(f"{path}: {what}.{k} must be a finite number >= 0, not {v!r}")
        vals[k] = float(v)
    return cls(**vals)


def load_profile(path: str | Path) -> TwinProfile:
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"profile {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile {p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{p} is not a twin profile (bad JSON at line {exc.lineno})") \
            from None
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise ProfileError(f"{p} is not a twin profile (no \"kind\": \"{KIND}\")")
    if raw.get("version") != VERSION:
        raise ProfileError(f"{p}: profile version {raw.get('version')!r} is not supported "
                           f"(this wattflow reads {VERSION})")
    cal = _coefficients(Calibration, raw.get("calibration"), "calibration", p)
    pw = _coefficients(PowerCoefficients, raw.get("power"), "power", p)
    for name in ("eff_compute", "eff_mem", "eff_attn", "eff_kv", "eff_link", "smooth_k",
                 "mem_clock_knee"):
        if not getattr(cal, name) > 0:
            raise ProfileError(f"{p}: calibration.{name} must be more than 0")
    gpu = raw.get("gpu")
    model = raw.get("model")
    if gpu is not None and not isinstance(gpu, str):
        raise ProfileError(f"{p}: 'gpu' must be a name")
    if model is not None and not isinstance(model, str | dict):
        raise ProfileError(f"{p}: 'model' must be a name or a table")
    fit_raw = raw.get("fit")
    fit: dict[str, Any] = fit_raw if isinstance(fit_raw, dict) else {}
    return TwinProfile(calibration=cal, power=pw, gpu=gpu, model=model, fit=fit)


def save_profile(profile: TwinProfile, path: str | Path) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(profile.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(p)

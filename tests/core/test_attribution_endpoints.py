"""Energy attribution across endpoints: a remote GPU's energy goes to the requests served
by the endpoints it serves, its node's idle energy apart; the mapping from endpoints to
devices by names, address or host."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.attribution import EnergyAttributor, endpoint_map
from app.core.events import Sample


def _dev(device: str, node: str, component: str = "gpu", **labels: str) -> dict[str, Any]:
    return {"device": device, "node": node, "component": component, "labels": labels}


ENDPOINTS = [{"name": "a", "url": "http://10.0.0.1:8000"},
             {"name": "b", "url": "http://10.0.0.2:8000"}]


def test_devices_map_by_address_then_node_name_then_host() -> None:
    devices = [
        _dev("n1/gpu0", "n1", instance="10.0.0.1:8000"),  # serve: same host:port
        _dev("b/gpu0", "b", instance="192.168.0.9:9400"),  # node named as the endpoint
        _dev("n3/gpu0", "n3", instance="10.0.0.2:9400"),  # same host as b, exporter port
        _dev("n1/cpu0", "n1", component="cpu"),  # the node's CPU serves its GPUs' endpoints
        _dev("n9/gpu0", "n9", instance="10.9.9.9:9400"),  # serves nobody known: shared
        {"device": "gpu0", "component": "gpu", "node": ""},  # a local GPU: not mapped
    ]
    m = endpoint_map(ENDPOINTS, devices)
    assert m == {"n1/gpu0": ("n1", frozenset({"a"})), "b/gpu0": ("b", frozenset({"b"})),
                 "n1/cpu0": ("n1", frozenset({"a"}))}
    # The host rule applies when neither the address nor the name matches.
    m2 = endpoint_map([{"name": "x", "url": "http://10.0.0.2:8000"}], devices)
    assert m2["n3/gpu0"] == ("n3", frozenset({"x"}))
    # An endpoints file names them outright.
    m3 = endpoint_map([{"name": "a", "url": "http://h:1", "devices": ["n9", "n3/gpu0"]}],
                      devices)
    assert set(m3) == {"n9/gpu0", "n3/gpu0"}


def _s(t: float, mj: float, device: str) -> Sample:
    return Sample(t_s=t, device=device, component="gpu", energy_mj=mj)


def test_a_gpu_shares_its_energy_among_its_endpoints_requests_and_idles_per_node() -> None:
    attr = EnergyAttributor()
    devices = [_dev("na/gpu0", "na", instance="10.0.0.1:8000"),
               _dev("nb/gpu0", "nb", instance="10.0.0.2:8000")]
    assert attr.map_endpoints({"endpoints": ENDPOINTS}, [{"devices": devices}])
    for d in ("na/gpu0", "nb/gpu0"):
        attr.on_sample(_s(0.0, 0.0, d))
    for rid, ep in (("r1", "a"), ("r2", "a"), ("r3", "b")):
        attr.on_admit(rid, 10)
        attr.on_endpoint(rid, ep)
    attr.on_work("r1", 0, 30)
    attr.on_work("r2", 0, 10)
    attr.on_work("r3", 0, 1)
    attr.on_sample(_s(1.0, 400_000.0, "na/gpu0"))  # 400 J: a's requests, 3:1
    attr.on_sample(_s(1.0, 100_000.0, "nb/gpu0"))  # 100 J: all r3's, however little work
    assert attr.take("r1") == {"gpu": pytest.approx(300.0)}
    assert attr.take("r2") == {"gpu": pytest.approx(100.0)}
    assert attr.take("r3") == {"gpu": pytest.approx(100.0)}
    # Only b works now: a's GPU idles (its node's idle energy), however busy b is.
    attr.on_done("r1")
    attr.on_done("r2")
    attr.on_work("r3", 0, 5)
    attr.on_sample(_s(2.0, 480_000.0, "na/gpu0"))
    attr.on_sample(_s(2.0, 400_000.0, "nb/gpu0"))
    assert attr.take("r3") == {"gpu": pytest.approx(300.0)}
    assert attr.idle_by_node_j == {"na": pytest.approx(80.0), "nb": 0.0}
    assert attr.idle_j["gpu"] + attr.attributed_j["gpu"] == pytest.approx(
        attr.measured_j()["gpu"])


def test_a_silent_request_in_prefill_is_charged_only_where_it_runs() -> None:
    attr = EnergyAttributor()
    devices = [_dev("na/gpu0", "na", instance="10.0.0.1:8000"),
               _dev("nb/gpu0", "nb", instance="10.0.0.2:8000")]
    attr.map_endpoints({"endpoints": ENDPOINTS}, [{"devices": devices}])
    for d in ("na/gpu0", "nb/gpu0"):
        attr.on_sample(_s(0.0, 0.0, d))
    attr.on_admit("long", 5000)
    attr.on_endpoint("long", "b")
    attr.on_sample(_s(1.0, 90_000.0, "na/gpu0"))  # nobody of a's inside: idle
    attr.on_sample(_s(1.0, 200_000.0, "nb/gpu0"))  # the long prompt prefilling on b
    assert attr.take("long") == {"gpu": pytest.approx(200.0)}
    assert attr.idle_by_node_j["na"] == pytest.approx(90.0)


def test_one_endpoint_or_no_remote_device_changes_nothing() -> None:
    attr = EnergyAttributor()
    assert attr.map_endpoints({"url": "http://h:1"}, [{"devices": [_dev("h/gpu0", "h")]}]) == {}
    attr.on_sample(_s(0.0, 0.0, "h/gpu0"))
    attr.on_admit("r", 1)
    attr.on_endpoint("r", "x")
    attr.on_work("r", 0, 1)
    attr.on_sample(_s(1.0, 50_000.0, "h/gpu0"))
    assert attr.take("r") == {"gpu": pytest.approx(50.0)}
    assert not attr.idle_by_node_j

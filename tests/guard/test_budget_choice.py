"""``[guard] policy``: auto picks the budget where it can work; budget elsewhere is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpuguard import ConfigError
from gpuguard.devices import Devices, FakeDevices
from gpuguard.guard.policies import EXCLUSIVE, Budget, choose_policy
from gpuguard.settings import build_guard, load_settings

GIB = 1024**3
HEADROOM = 2 * GIB


def h200() -> FakeDevices:
    return FakeDevices.with_gpus(143_771, name="NVIDIA H200")


def test_auto_chooses_the_budget_on_a_big_nvidia_gpu_in_the_process_scope() -> None:
    devices = h200()
    choice = choose_policy(
        "auto", scope="process", read=lambda: devices.info(0), headroom_bytes=HEADROOM
    )
    assert isinstance(choice.policy, Budget)
    assert choice.policy.headroom_bytes == HEADROOM
    assert "auto chose it" in choice.reason
    assert "140.4 GiB" in choice.reason


@pytest.mark.parametrize(
    ("devices", "scope", "why"),
    [
        (None, "process", "no NVIDIA GPU that NVML can read"),
        (FakeDevices.with_gpus(8 * 1024), "process", "8.0 GiB is too small to share"),
    ],
)
def test_auto_falls_back_to_exclusive_and_says_why(
    devices: FakeDevices | None, scope: str, why: str
) -> None:
    read = None if devices is None else devices.info
    choice = choose_policy(
        "auto", scope=scope, read=None if read is None else lambda: read(0), headroom_bytes=HEADROOM
    )
    assert choice.policy is EXCLUSIVE
    assert why in choice.reason


def test_auto_on_a_gpu_whose_memory_cannot_be_read_is_exclusive() -> None:
    devices = h200()
    devices.fail("NVML_ERROR_NOT_SUPPORTED")  # unified memory: NVML reports no memory
    choice = choose_policy(
        "auto", scope="process", read=lambda: devices.info(0), headroom_bytes=HEADROOM
    )
    assert choice.policy is EXCLUSIVE
    assert "NOT_SUPPORTED" in choice.reason


@pytest.mark.parametrize(
    ("read", "scope", "why"),
    [
        (None, "process", "no NVIDIA GPU that NVML can read"),
        (lambda: FakeDevices.with_gpus(1024).info(0), "process", "the headroom"),
    ],
)
def test_budget_where_it_cannot_work_is_refused_saying_why(
    read: object, scope: str, why: str
) -> None:
    with pytest.raises(ConfigError, match="policy = 'budget' cannot work here") as caught:
        choose_policy("budget", scope=scope, read=read, headroom_bytes=HEADROOM)  # type: ignore[arg-type]
    assert why in str(caught.value)


def test_budget_asked_for_on_a_small_gpu_is_granted() -> None:
    devices = FakeDevices.with_gpus(8 * 1024)
    choice = choose_policy(
        "budget", scope="process", read=lambda: devices.info(0), headroom_bytes=GIB
    )
    assert isinstance(choice.policy, Budget)


def test_the_settings_take_the_budget_in_every_scope() -> None:
    redis = {"scope": "redis", "redis_url": "redis://127.0.0.1:6379/0"}
    for guard in ({"scope": "process"}, {"scope": "host"}, redis):
        assert load_settings(guard={"policy": "budget", **guard}).guard.policy == "budget"
    with pytest.raises(ConfigError, match="policy"):
        load_settings(guard={"policy": "sometimes"})


def test_the_built_guard_runs_the_chosen_policy_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard.guard")
    settings = load_settings(guard={"policy": "auto", "scope": "process", "headroom_mb": 4096})
    asked: list[int] = []

    def detect() -> Devices:
        asked.append(1)
        return h200()

    guard = build_guard(settings.guard, detect=detect)
    assert guard.policy == "budget"
    assert asked == [1]
    said = [r.getMessage() for r in caplog.records if "policy" in r.getMessage()]
    assert said == [
        "GPU gpu0 runs the budget policy: budget (auto chose it): 140.4 GiB, 4096 MiB kept free"
    ]


def test_the_default_host_scope_shares_a_big_gpu_by_budget(tmp_path: Path) -> None:
    settings = load_settings(guard={"lock_dir": str(tmp_path)})
    asked: list[int] = []

    def detect() -> Devices:
        asked.append(1)
        return h200()

    guard = build_guard(settings.guard, detect=detect)
    assert (guard.scope, guard.policy, asked) == ("host", "budget", [1])
    assert build_guard(settings.guard, detect=lambda: None).policy == "exclusive"


def test_a_budget_guard_built_where_no_gpu_is_found_is_refused() -> None:
    settings = load_settings(guard={"policy": "budget", "scope": "process"})
    with pytest.raises(ConfigError, match="no NVIDIA GPU"):
        build_guard(settings.guard, detect=lambda: None)

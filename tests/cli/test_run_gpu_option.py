"""``gpuguard run --gpu K`` refuses a GPU that ``[guard] gpus`` does not name, before any wait.

The programs that run on a GPU are real processes: tests/host/test_run_on_a_gpu.py.
"""

from __future__ import annotations

from typer.testing import CliRunner

from gpuguard.cli import app

runner = CliRunner()


def test_a_gpu_outside_the_configured_ones_exits_2_naming_them() -> None:
    result = runner.invoke(
        app, ["run", "--gpu", "2", "--", "true"], env={"GPUGUARD_GUARD__GPUS": "[0, 1]"}
    )
    assert result.exit_code == 2, result.output
    assert "GPU 2 is not one of the GPUs gpuguard leases here (0, 1); see [guard] gpus" in (
        " ".join(result.stderr.split())
    )


def test_a_negative_gpu_is_a_usage_error() -> None:
    result = runner.invoke(app, ["run", "--gpu", "-1", "--", "true"])
    assert result.exit_code == 2
    assert "--gpu" in result.stderr


def test_the_help_names_the_option() -> None:
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "--gpu" in result.output

"""What the server's console says: the facts of its start-up, then every failure and why.

:func:`log_start_up` writes one line per fact an operator checks first (backend, model,
guard scope and lock directory, policy, embedders); :class:`EventLog` turns the events that
matter to an operator (jobs started and ended, model loads and failures, hung or refused GPU
operations) into log lines of the ``gpuguard.server`` logger, so that a console handler
(``gpuguard serve``), the page's log panel and ``GET /admin/logs`` all show them. Every
value passes through the record factory of :mod:`gpuguard._logging` (escaped, secrets
masked).
"""

from __future__ import annotations

import logging

from .._events import Event, GpuEvent, GpuStatus, JobEvent, ModelEvent
from ..gateway import ModelGateway
from ..settings import Settings, lock_dir_of

__all__ = ["EventLog", "log_start_up"]

logger = logging.getLogger("gpuguard.server")

# GPU transitions worth an operator's attention, and how loudly.
_GPU_LEVELS = {
    GpuStatus.FAILED: logging.WARNING,
    GpuStatus.TIMED_OUT: logging.WARNING,
    GpuStatus.REJECTED: logging.WARNING,
    GpuStatus.HUNG: logging.ERROR,
    GpuStatus.RECOVERED: logging.INFO,
}
_JOB_LEVELS = {
    "started": logging.INFO,
    "completed": logging.INFO,
    "cancelled": logging.INFO,
    "failed": logging.ERROR,
}
_MODEL_LEVELS = {"loaded": logging.INFO, "unloaded": logging.INFO, "failed": logging.ERROR}


def log_start_up(settings: Settings, gateway: ModelGateway) -> None:
    """One INFO line per start-up fact."""
    llm = settings.llm
    where = llm.base_url or (settings.model_path if llm.backend == "llama-cpp" else None)
    logger.info(
        "backend %s, model %s%s",
        llm.backend,
        gateway.model or "(none)",
        f" ({where})" if where else "",
    )
    limits = settings.guard
    for guard in gateway.gpus:  # one line per GPU, the first under [guard] name
        lock_dir = lock_dir_of(limits) if guard.scope == "host" else None
        logger.info(
            "GPU lease %s: scope %s%s, policy %s, wait timeout %s",
            limits.name if guard is gateway.guard else guard.name,
            guard.scope,
            f", lock dir {lock_dir}" if lock_dir is not None else "",
            guard.policy,
            "none" if limits.wait_timeout_s is None else f"{limits.wait_timeout_s:g} s",
        )
    spec = settings.embeddings
    gpu = f"{spec.gpu_engine} {spec.gpu_model}" if spec.gpu_engine else "none"
    logger.info("embeddings: GPU %s, CPU %s %s", gpu, spec.cpu_engine, spec.cpu_model)
    logger.info("vector store %s", settings.store_path)


class EventLog:
    """Logs the events an operator needs while it is :meth:`attach`-ed to a bus."""

    def __call__(self, event: Event) -> None:
        """One log line for ``event`` if it is one that matters (the bus calls this)."""
        if isinstance(event, JobEvent):
            self._job(event)
        elif isinstance(event, ModelEvent):
            self._model(event)
        elif isinstance(event, GpuEvent):
            self._gpu(event)

    @staticmethod
    def _job(event: JobEvent) -> None:
        if event.issue:
            logger.warning("job %s (%s) skipped %s", event.job_id, event.job, event.issue)
        level = _JOB_LEVELS.get(event.status)
        if level is not None:
            detail = f": {event.detail}" if event.detail else ""
            logger.log(level, "job %s (%s) %s%s", event.job_id, event.job, event.status, detail)

    @staticmethod
    def _model(event: ModelEvent) -> None:
        level = _MODEL_LEVELS.get(event.status)
        if level is not None:
            detail = f": {event.detail}" if event.detail else ""
            logger.log(
                level, "model %s %s on %s%s", event.model, event.status, event.backend, detail
            )

    @staticmethod
    def _gpu(event: GpuEvent) -> None:
        level = _GPU_LEVELS.get(event.status)
        if level is not None:
            model = f" [{event.model}]" if event.model else ""
            holder = f" (held by {event.holder})" if event.holder else ""
            detail = f": {event.detail}" if event.detail else ""
            logger.log(
                level, "GPU %s %s%s%s%s", event.operation, event.status, model, holder, detail
            )

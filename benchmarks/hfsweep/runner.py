"""Run many (model type, tool) pairs, each in a forked child with a time limit, a few at a time.

A child that hangs (Torch-Pruning on Llama) is killed at the limit; one that dies is recorded with its
exit code. The outcome then depends on the stage the child last reported.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .outcome import CANNOT_BUILD, CANNOT_RUN, CRASH, TIMEOUT, Record

EARLY = {"build": CANNOT_BUILD, "dense": CANNOT_RUN}


def _quiet() -> None:
    import torch
    from transformers.utils import logging

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _preload() -> None:
    """Import the heavy modules once, before forking, so each child starts in a fraction of a second."""
    import transformers.modeling_utils  # noqa: F401

    from . import pipeline  # noqa: F401  (secateur and the builders)

    try:
        import torch_pruning  # noqa: F401
    except ImportError:  # the bench extra is not installed: only secateur runs
        pass


def _child(model_type: str, tool: str, conn) -> None:
    from .pipeline import run

    _quiet()
    record = run(model_type, tool, progress=lambda stage: conn.send(("stage", stage)))
    conn.send(("done", record.to_dict()))


@dataclass
class _Job:
    model_type: str
    tool: str
    process: mp.Process
    conn: object
    started: float
    stage: str = "build"

    def poll(self) -> dict | None:
        """The finished record, if the child has sent it (stage reports are absorbed)."""
        while self.conn.poll():
            try:
                kind, payload = self.conn.recv()
            except EOFError:
                return None
            if kind == "done":
                return payload
            self.stage = payload
        return None

    def stopped(self, why: str, outcome: str) -> dict:
        record = Record(self.model_type, self.tool)
        record.fail(self.stage, EARLY.get(self.stage, outcome), why)
        record.seconds = round(time.perf_counter() - self.started, 2)
        return record.to_dict()


def _start(ctx, model_type: str, tool: str) -> _Job:
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(model_type, tool, send), daemon=True)
    process.start()
    send.close()
    return _Job(model_type, tool, process, receive, time.perf_counter())


def _finish(job: _Job, limit: float) -> dict | None:
    """The job's record once it is over (done, dead or past ``limit``), else None."""
    if (record := job.poll()) is not None:
        job.process.join()
        return record
    if not job.process.is_alive():
        job.process.join()
        return job.poll() or job.stopped(f"the process died (exit code {job.process.exitcode}) in {job.stage}", CRASH)
    if time.perf_counter() - job.started > limit:
        job.process.kill()
        job.process.join()
        return job.stopped(f"stopped after {limit:.0f} s in {job.stage}", TIMEOUT)
    return None


def sweep(pairs: Iterable[tuple[str, str]], jobs: int = 2, limit: float = 180,
          on_record: Callable[[dict], None] = lambda r: None) -> list[dict]:
    """Run every (model type, tool) pair, ``jobs`` at once; each record is passed to ``on_record`` as it ends."""
    _preload()
    ctx, todo, running, done = mp.get_context("fork"), list(pairs), [], []
    while todo or running:
        while todo and len(running) < jobs:
            running.append(_start(ctx, *todo.pop(0)))
        time.sleep(0.05)
        for job in list(running):
            if (record := _finish(job, limit)) is not None:
                running.remove(job)
                done.append(record)
                on_record(record)
    return done

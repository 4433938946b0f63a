"""`vmkeep worker`: a proxy of the scaled tier (docs/scale-out.md).

    vmkeep worker --config FILE [--queue Q]... [--slots N] [--identity ID]

Runs the executor's unit of work as Temporal activities — snapshot, export, delete, plus
planning, compensation, GC and verification — with the same `ActionRunner` the embedded
thread pool uses. It serves the task queues named by `--queue` (proxy queues from
`proxies:`, or the default queue by its name); without `--queue` it serves the default
queue, where the workflows themselves and the work of VMs no proxy claims run. At least one
worker of an installation serves the default queue. `--slots N` is how many activities this
worker runs at once (default 4); the slots of a proxy queue, host or datastore across the
whole estate are the limiter workflow's (`reconciler/engine/limits.py`). SIGTERM or SIGINT
stops polling and lets running activities finish (up to 30 s; the engine retries the rest
elsewhere).

Exit codes: 0 stopped by a signal, 1 bad configuration (no `engine:`, an unknown queue).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from reconciler import wiring
from reconciler.errors import UsageError

__all__ = ["register", "run"]


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "worker",
        parents=[common_parser],
        help="run actions for the Temporal engine (a proxy)",
        description="Serve task queues of the Temporal engine named in the host config: "
        "snapshots, exports, deletions, GC and verification as activities.",
    )
    parser.add_argument("--queue", action="append", default=[], metavar="Q",
                        help="a task queue to serve (repeatable; default: the default queue)")
    parser.add_argument("--slots", type=int, default=4, metavar="N",
                        help="activities run at once by this worker (default 4)")
    parser.add_argument("--identity", metavar="ID",
                        help="this worker's name in the engine and in export manifests "
                        "(default: HOST/PID)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = wiring.load_host_config(args.config)
    if config.engine is None:
        raise UsageError(
            f"{config.path}: vmkeep worker needs `engine:` in the host config "
            "(see docs/scale-out.md)")
    if args.slots < 1:
        raise UsageError("--slots must be 1 or more")
    default = config.engine.task_queue
    queues = list(dict.fromkeys(args.queue or [default]))
    unknown = [q for q in queues if q != default and q not in config.proxies]
    if unknown:
        known = ", ".join([default, *sorted(config.proxies)])
        raise UsageError(f"unknown task queue {unknown[0]!r}: the host config has {known}")
    identity = args.identity or f"{socket.gethostname()}/{os.getpid()}"
    return asyncio.run(_serve(config, queues, args.slots, identity))


async def _serve(config: Any, queues: list[str], slots: int, identity: str) -> int:
    from temporalio.worker import Worker

    from reconciler.engine.activities import WorkerActivities
    from reconciler.engine.connection import connect
    from reconciler.engine.limits import LimitsWorkflow
    from reconciler.engine.workflows import BatchWorkflow, MaintenanceWorkflow, ReconcileWorkflow

    client = await connect(config.engine)
    activities = WorkerActivities(config, identity).open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    executor = ThreadPoolExecutor(max_workers=slots * len(queues) + 1,
                                  thread_name_prefix="vmkeep-activity")
    workers = []
    for queue in queues:
        is_default = queue == config.engine.task_queue
        workers.append(Worker(
            client,
            task_queue=queue,
            identity=identity,
            activities=activities.all(),
            workflows=[ReconcileWorkflow, BatchWorkflow, MaintenanceWorkflow, LimitsWorkflow]
            if is_default else [],
            activity_executor=executor,
            max_concurrent_activities=slots,
            graceful_shutdown_timeout=timedelta(seconds=30),
        ))
    print(f"vmkeep: worker {identity} serving {', '.join(queues)} on "
          f"{config.engine.address} ({slots} slots)", file=sys.stderr, flush=True)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            await stop.wait()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        activities.close()
    return 0

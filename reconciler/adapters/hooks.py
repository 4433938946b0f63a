"""Host-config hooks: argv commands defined on the management host, run by name.

A policy can only name a hook; the command, its arguments and its timeout come from the host
config, so a pull request cannot make vmkeep run code. The command runs without a shell,
with the caller's environment plus `VMKEEP_*` variables describing the VM and phase, and is
killed (with its process group) when it outlives its timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping

from reconciler.errors import HookError
from reconciler.model import HookConfig

__all__ = ["SubprocessHooks"]

#: How much of a failing hook's output goes into the error message.
OUTPUT_TAIL = 400


class SubprocessHooks:
    def __init__(self, hooks: Mapping[str, HookConfig]) -> None:
        self._hooks = dict(hooks)

    def run(self, name: str, environment: Mapping[str, str]) -> None:
        hook = self._hooks.get(name)
        if hook is None:
            raise HookError(f"hook {name!r} is not defined in the host config")
        env = {**os.environ, **environment}
        # Output goes to a file, not a pipe: a daemon the hook leaves behind (`ssh` with
        # ControlPersist, say) would hold a pipe open, and waiting for its end would outlast
        # the hook's exit and its timeout.
        with tempfile.TemporaryFile() as output:
            try:
                proc = subprocess.Popen(
                    list(hook.command),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise HookError(
                    f"hook {name!r}: cannot start {hook.command[0]!r}: {exc.strerror}"
                ) from None
            try:
                proc.wait(timeout=hook.timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                raise HookError(
                    f"hook {name!r} did not finish within {hook.timeout_seconds:g}s and was "
                    "killed"
                ) from None
            if proc.returncode != 0:
                size = output.seek(0, os.SEEK_END)
                output.seek(max(0, size - 4 * OUTPUT_TAIL))
                tail = output.read().decode("utf-8", "replace").strip()[-OUTPUT_TAIL:]
                detail = f": {tail}" if tail else ""
                raise HookError(f"hook {name!r} exited with status {proc.returncode}{detail}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)

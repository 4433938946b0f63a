"""Host-config hooks: argv commands defined on the management host, run by name.

A policy can only name a hook; the command, its arguments and its timeout come from the host
config, so a pull request cannot make vmkeep run code. The command runs without a shell and
is killed (with its process group) when it outlives its timeout.

Its environment is minimal, never vmkeep's own: `PATH`, `LANG` and `TZ` (when set), the
hook's `env:` from the host config, and the `VMKEEP_*` variables describing the VM and phase
(these win). A vCenter password is therefore never in it (the host config refuses an `env:`
naming a `passwordEnv` variable), and whatever of a registered secret a failing hook still
prints is masked (`errors.mask`) before its output goes into the error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping

from reconciler.errors import HookError, mask
from reconciler.model import HOOK_PASSTHROUGH, HookConfig

__all__ = ["SubprocessHooks", "hook_environment"]

#: How much of a failing hook's output goes into the error message.
OUTPUT_TAIL = 400


class SubprocessHooks:
    def __init__(self, hooks: Mapping[str, HookConfig]) -> None:
        self._hooks = dict(hooks)

    def run(self, name: str, environment: Mapping[str, str]) -> None:
        hook = self._hooks.get(name)
        if hook is None:
            raise HookError(f"hook {name!r} is not defined in the host config")
        env = hook_environment(hook, environment)
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
                tail = mask(output.read().decode("utf-8", "replace")).strip()[-OUTPUT_TAIL:]
                detail = f": {tail}" if tail else ""
                raise HookError(f"hook {name!r} exited with status {proc.returncode}{detail}")


def hook_environment(
    hook: HookConfig, variables: Mapping[str, str], inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of one hook run (`inherited` defaults to `os.environ`)."""
    own = os.environ if inherited is None else inherited
    env = {name: own[name] for name in HOOK_PASSTHROUGH if name in own}
    env.setdefault("PATH", os.defpath)
    env.update(hook.env)
    env.update(variables)
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)

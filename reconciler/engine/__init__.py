"""The scaled tier on Temporal (docs/scale-out.md).

- `codec` — actions and outcomes as JSON values for workflow and activity payloads;
- `workflows` — the reconcile workflow per vCenter and the maintenance workflow per target
  (deterministic code only: no I/O, no clock but the workflow's);
- `activities` — the executor's unit of work (`ActionRunner.run`), planning, compensation,
  GC and verification, run by `vmkeep worker` processes (proxies);
- `connection` — a client for `engine:` of the host config;
- `submit` — what `vmkeep apply`/`run` do when the host config has an engine.
"""

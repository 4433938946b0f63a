"""Adapters: one module per outside system (vSphere, Git, export repository, state DB).

Adapters depend on the base layer (`model`, `errors`, `ports`) only.
"""

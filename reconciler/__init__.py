"""vmkeep: a declarative GitOps backup reconciler for VMware vSphere."""

#: The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

__all__ = ["__version__"]

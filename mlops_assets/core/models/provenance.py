"""What a reproducible run records about where it ran: code version and installed packages."""

import functools
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "mlops-assets",
    "dagster",
    "polars",
    "pandas",
    "numpy",
    "scikit-learn",
    "scipy",
    "pandera",
    "deltalake",
    "mlflow",
    "skops",
    "pyarrow",
)


def git_commit(folder: Path | None = None) -> str:
    """The commit of the project checkout (with '+dirty' for uncommitted changes), or 'unknown' outside git."""
    cwd = folder or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# What loading and running a registered model needs: scikit-learn's pipeline, serialized with skops.
MODEL_PACKAGES = ("scikit-learn", "skops", "numpy", "pandas", "scipy")


def model_requirements(modules: Iterable[str]) -> list[str]:
    """The pinned pip requirements of a model whose classes come from `modules` (dotted names): MODEL_PACKAGES and
    the distribution of any other package among them (an estimator from a spec's `code_packages`).

    Given explicitly, MLflow does not infer them by loading the model in a subprocess, seconds per version."""
    distributions = _distributions()
    names = set(MODEL_PACKAGES) | {d for m in modules for d in distributions.get(m.split(".")[0], [])}
    return sorted(f"{name}=={metadata.version(name)}" for name in names)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Top-level module -> distributions, read once a process (a scan of every installed package)."""
    return dict(metadata.packages_distributions())

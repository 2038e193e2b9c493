"""What a reproducible run records about where it ran: code version and installed packages."""

import subprocess
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

"""Starting the servers a person looks at or calls: the pipeline's bento (BentoML), the Dagster UI and MLflow's UI.
Each checks its port first, so a second server fails with a sentence and never disturbs a running one."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
from pathlib import Path

from mlops_assets.app.workspace import AppError, Workspace, project_instance
from mlops_assets.core.serving.bundle import SERVICE, bento_name
from mlops_assets.core.serving.privacy import PiiKeyMissing, PiiRule
from mlops_assets.settings import LAKE_URI_ENV, TRACKING_URI_ENV, mlflow_settings, mlflow_ui_url


def port_problem(host: str, port: int) -> str | None:
    """Why nothing could listen on host:port (taken, or an address not of this machine), or None when it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: a closing port is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is in use (another server listens there): stop it, or choose another --port"
                )
            return f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host and --port"
    return None


def require_port(host: str, port: int) -> None:
    problem = port_problem(host, port)
    if problem:
        raise AppError(problem)


def metrics_folder(data_dir: Path, pipeline: str, port: int) -> Path:
    """This serve process's Prometheus folder: data/serving/PIPELINE/metrics/HOST-PORT-PID. Folders of processes now
    gone (killed) are removed; those of running ones are never touched, so no other server changes their /metrics."""
    root = data_dir / "serving" / pipeline / "metrics"
    machine = socket.gethostname()
    for folder in root.glob(f"{machine}-*-*"):
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / f"{machine}-{port}-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)  # a pid reused from a killed server
    mine.mkdir(parents=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def serve(
    workspace: Workspace, pipeline: str, host: str, port: int, from_source: bool = False, bento: str | None = None
) -> None:
    """Serve the pipeline's latest bento (or, `from_source`, this checkout's service; or the bento archived at
    `bento`, s3://... or a file, imported first into this data folder's BentoML home) until stopped."""
    if from_source and bento:
        raise AppError("--from-source and --bento exclude each other: serve this checkout, or a bento")
    spec = workspace.spec(pipeline)
    try:  # as the service itself does when it starts, but said here in a sentence, before BentoML starts
        PiiRule.of(spec, os.environ)
    except PiiKeyMissing as exc:
        raise AppError(str(exc)) from None
    env = {
        "MLOPS_DATA_DIR": str(workspace.root),
        "BENTOML_HOME": os.environ.get("BENTOML_HOME", str(workspace.root / "bentoml")),
    }
    if workspace.lake_uri:  # the served bento writes its prediction log beside the lake
        env[LAKE_URI_ENV] = workspace.lake_uri
    target = f"{bento_name(pipeline)}:latest"
    if from_source:
        target, env["MLOPS_PIPELINE"] = SERVICE, pipeline
        if workspace.specs_dir:
            env["MLOPS_SPECS_DIR"] = str(Path(workspace.specs_dir).resolve())
    elif bento is None and not (Path(env["BENTOML_HOME"]) / "bentos" / bento_name(pipeline) / "latest").exists():
        raise AppError(f"no bento of {pipeline!r} in {env['BENTOML_HOME']}: `mlops materialize {pipeline}` builds one")
    require_port(host, port)
    metrics = metrics_folder(workspace.root, pipeline, port)
    try:
        _serve_bentoml(target, host, port, env, metrics, workspace.debug, pull=bento)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


def _pull(uri: str, target: str) -> str:
    """The tag of the bento archived at `uri`, imported into this process's BentoML home; it must be `target`'s."""
    from mlops_assets.core.serving.bundle import BundleError, pull_bento

    try:
        tag = pull_bento(uri)
    except BundleError as exc:
        raise AppError(str(exc)) from None
    name = target.partition(":")[0]
    if not tag.startswith(f"{name}:"):
        raise AppError(f"the bento at {uri} is {tag}, not a bento of this pipeline ({name})")
    return tag


def _serve_bentoml(
    target: str, host: str, port: int, env: dict[str, str], metrics: Path, debug: bool, pull: str | None = None
) -> None:
    """`bentoml serve TARGET` in this process (it becomes BentoML's arbiter; the workers inherit `env`), with the
    Prometheus folder of this process. BentoML 1.4 would use BENTOML_HOME/prometheus_multiproc_dir and empty it at
    every start, so a second server of the same home, even one that fails, would wipe a running one's metrics.
    `pull`: the archive of the bento to serve, imported into BENTOML_HOME first."""
    import click

    os.environ.update(env)  # before BentoML reads its configuration
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli as bentoml_cli

    BentoMLContainer.bentoml_home.set(env["BENTOML_HOME"])
    BentoMLContainer.prometheus_multiproc_dir.set(str(metrics))
    if pull is not None:
        target = _pull(pull, target)
    args = ["serve", target, "--host", host, "--port", str(port)]
    try:
        bentoml_cli.main(args, prog_name="bentoml", standalone_mode=False)
    except click.ClickException as exc:  # BentoML's own start-up failure (its CLI wraps it), said in its words
        if exc.__cause__ is not None and debug:
            raise exc.__cause__ from None
        message = exc.__cause__ or click.unstyle(exc.format_message())
        raise AppError(f"BentoML could not start {target}: {message}") from None


def dagster_ui(workspace: Workspace, host: str, port: int) -> None:
    """`dagster dev` (webserver and daemon) on the project-local instance for these specs and data; never returns."""
    project_instance()
    require_port(host, port)
    env = {**os.environ, "MLOPS_DATA_DIR": str(workspace.root)}
    if workspace.lake_uri:  # the UI's definitions and the runs it launches use the same lake
        env[LAKE_URI_ENV] = workspace.lake_uri
    if workspace.specs_dir:
        env["MLOPS_SPECS_DIR"] = str(Path(workspace.specs_dir).resolve())
    dagster = Path(sys.executable).with_name("dagster")
    os.execve(str(dagster), [str(dagster), "dev", "-m", "mlops_assets.code_location", "-h", host, "-p", str(port)], env)


def mlflow_ui(workspace: Workspace, host: str, port: int) -> str | None:
    """MLflow's UI on the embedded store (never returns); with a tracking server, its address is returned instead."""
    uri, artifact_root = mlflow_settings(workspace.data_dir)
    if not artifact_root:  # a tracking server keeps its own artifacts: it is the UI
        return f"MLflow runs as a server ({TRACKING_URI_ENV}): open {mlflow_ui_url(uri)}"
    require_port(host, port)
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(str(mlflow), [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)])

"""Benchmark: the commands a person runs to look (`mlops --help`, `check`, `status`, `report`), each a fresh process.

Data: a data folder whose embedded registry (MLflow on SQLite) holds `--versions` versions of the built-in fraud
pipeline, each with a training run and its metrics, a champion and a challenger, and the champion's card; specs:
the built-in example. Each command runs `--repeat` times in a fresh interpreter (what a person waits for: start,
imports, reading, printing); the table gives the median and the best.

Baselines, in the same run: `python -c pass` (the interpreter's floor), and the answer `mlops status` gives read as
a competent engineer would with MLflow's client: `MlflowClient(uri).get_registered_model("fraud")`, then each live
version and its run's metrics.

Target (issue 18): every command < 2 s median on the embedded default. The ratio to MLflow's client is printed for
information: `status` and `report` read the SQLite store directly (mlops_assets/core/models/registry_view.py).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 2.0
MLFLOW_CLIENT = """
import sys
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1], sys.argv[1])
for alias, version in client.get_registered_model("fraud").aliases.items():
    mv = client.get_model_version("fraud", version)
    print(alias, version, mv.tags.get("promoted_at"), client.get_run(mv.run_id).data.metrics)
"""


def registry_folder(root: Path, versions: int) -> Path:
    from mlops_assets.core.models.registry import open_registry

    data = root / "data"
    client = open_registry(data).client
    experiment = client.create_experiment("fraud")
    client.create_registered_model("fraud")
    for i in range(versions):
        run = client.create_run(experiment)
        for name, value in {"roc_auc": 0.9, "pr_auc": 0.5, "log_loss": 0.2, "precision": 0.4, "recall": 0.6}.items():
            client.log_metric(run.info.run_id, name, value + i / 1000)
        client.create_model_version("fraud", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("fraud", "champion", str(versions - 1))
    client.set_model_version_tag("fraud", str(versions - 1), "promoted_at", "2026-01-01T00:00:00+00:00")
    client.set_registered_model_alias("fraud", "challenger", str(versions))
    (data / "model_cards" / "fraud").mkdir(parents=True)
    (data / "model_cards" / "fraud" / f"v{versions - 1}.md").write_text("# card")
    return data


def timed(command: list[str], repeat: int, cwd: Path) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = registry_folder(root, args.versions)
        uri = f"sqlite:///{data / 'mlflow.db'}"
        mlops = [sys.executable, "-m", "mlops_assets.cli", "--data-dir", str(data)]
        commands = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "MLflow's client (baseline)": [sys.executable, "-c", MLFLOW_CLIENT, uri],
            "mlops --help": [*mlops, "--help"],
            "mlops check": [*mlops, "check"],
            "mlops status": [*mlops, "status"],
            "mlops report fraud": [*mlops, "report", "fraud"],
        }
        results = {name: timed(command, args.repeat, root) for name, command in commands.items()}

    baseline = statistics.median(results["MLflow's client (baseline)"])
    print(f"{'command':<28} {'median s':>9} {'best s':>7} {'vs MLflow client':>17}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<28} {median:>9.2f} {min(times):>7.2f} {median / baseline:>16.2f}x")
    for name, times in results.items():
        if name.startswith("mlops"):
            median = statistics.median(times)
            verdict = "PASS" if median < TARGET_SECONDS else "FAIL"
            print(f"{verdict} {name}: median {median:.2f} s (target < {TARGET_SECONDS:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a run records about where it ran, and what a registered model needs to load."""

from importlib.metadata import version

from mlops_assets.core.models.provenance import MODEL_PACKAGES, model_requirements, package_versions


def test_a_models_requirements_are_pinned_and_follow_its_classes() -> None:
    sklearn_only = model_requirements(["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", "builtins"])
    assert sklearn_only == sorted(f"{name}=={version(name)}" for name in MODEL_PACKAGES)
    # A class from another installed package (an estimator of a spec's code_packages) brings its distribution.
    assert f"polars=={version('polars')}" in model_requirements(["polars.dataframe.frame"])
    assert f"polars=={version('polars')}" not in sklearn_only


def test_package_versions_name_what_is_installed() -> None:
    versions = package_versions()
    assert versions["scikit-learn"] == version("scikit-learn") and versions["mlflow"] == version("mlflow")

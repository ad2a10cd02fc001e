"""Where the tests find the reference data kept beside the checkout: the z2jh chart, its values schema, Flux CRDs.

The data is not part of the repository (``../shared/reference`` next to the checkout, see its README);
``HUBFLEET_REFERENCE`` points elsewhere.  Tests that need it take ``needs_reference`` so they skip, saying why,
only where it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(os.environ.get("HUBFLEET_REFERENCE") or Path(__file__).resolve().parents[3] / "shared" / "reference")


def present() -> bool:
    """Whether the chart, its values schema and the Flux CRDs are all there."""
    return (chart_dir() / "Chart.yaml").is_file() and values_schema_path().is_file() and \
        any(flux_crds_dir().glob("*.yaml"))


def chart_dir() -> Path:
    """The z2jh chart's source directory (templates, files, values.schema.yaml; no values.schema.json)."""
    return REFERENCE / "z2jh-chart"


def flux_crds_dir() -> Path:
    """The Flux CustomResourceDefinitions (HelmRelease v2, HelmRepository/HelmChart/OCIRepository v1)."""
    return REFERENCE / "flux-crds"


def values_schema_path() -> Path:
    """The z2jh chart's values schema as published (YAML)."""
    return REFERENCE / "z2jh-values.schema.yaml"


def values_defaults_path() -> Path:
    """The z2jh chart's default values.yaml."""
    return REFERENCE / "z2jh-values.defaults.yaml"


MISSING = ("the z2jh chart and Flux CRDs are not beside the checkout (../shared/reference); "
           f"set HUBFLEET_REFERENCE (looked in {REFERENCE})")
needs_reference = pytest.mark.skipif(not present(), reason=MISSING)

"""
The detector's evaluation metrics: `dfd_metrics/`, a local `evaluate` module shipped inside the package, so that
training and `--do_eval` compute them offline and from an installed wheel alike.
"""

from pathlib import Path

import evaluate


DFD_METRICS_DIR = Path(__file__).resolve().parent / "dfd_metrics"


def load_dfd_metrics(**kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the `dfd_metrics` module by its path in this package (a Hub name would need the network)."""
    return evaluate.load(str(DFD_METRICS_DIR), **kwargs)

"""Run by a model-runtime venv (tests/model_runtime.py): load a registered model through
``mlflow.pyfunc`` and print its predictions on its own input example as JSON.

Usage: python serve_without_graft.py MODEL_URI OUT_DIR  (MLFLOW_TRACKING_URI in the env)
"""

import importlib.util
import json
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np

missing = [name for name in ("torch", "graft") if importlib.util.find_spec(name) is not None]
if missing:
    sys.exit(f"this environment must not have {missing}")
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = np.asarray(model.input_example, dtype=np.float32)
answer = model.predict(rows)
out = Path(sys.argv[2])
np.save(out / "rows.npy", rows)
(out / "answer.json").write_text(
    json.dumps(
        {
            "label": [str(label) for label in answer["label"]],
            "probabilities": np.asarray(answer["probabilities"]).tolist(),
        }
    )
)

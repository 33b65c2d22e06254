"""One local Ray for a whole local run (graft.io.ray_runtime.one_local_ray): the stages join it
through the environment, so the settings every task gets are the same from run to run and
KFP's cache can serve a rerun. Each run starts its own Ray, in a process of its own (a Ray this
test process ran would be someone else's to stop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# a stage's process: joins with the settings it was handed, says where it landed
JOIN = """
import sys, ray
from graft.config import RayConfig
from graft.io.ray_runtime import ensure_ray
ensure_ray(RayConfig.model_validate_json(sys.argv[1]))
print(ray.get_runtime_context().gcs_address)
"""

RUNS = f"""
import json, os, subprocess, sys
import ray
from graft.config import load_config
from graft.io.ray_runtime import one_local_ray
seen = []
for _ in range(2):
    with one_local_ray(load_config(preset="tiny").ray) as settings:
        stage = subprocess.run(
            [sys.executable, "-c", {JOIN!r}, settings.model_dump_json()],
            capture_output=True, text=True, check=True,
        )
        seen.append({{
            "settings": settings.model_dump_json(),
            "address": ray.get_runtime_context().gcs_address,
            "joined": stage.stdout.strip().splitlines()[-1],
        }})
    seen[-1]["ray_address_after"] = os.environ.get("RAY_ADDRESS")
print(json.dumps(seen))
"""


def test_every_local_run_hands_its_stages_the_same_settings_and_they_join_its_ray() -> None:
    # a RAY_ADDRESS the user had set: the run's Ray takes its place, then it comes back
    env = {**os.environ, "RAY_ADDRESS": "ray://elsewhere.example:10001"}
    done = subprocess.run(
        [sys.executable, "-c", RUNS], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert first["address"] != second["address"]  # two Ray instances, two GCS addresses
    assert first["settings"] == second["settings"]  # ... yet the same settings in the config
    settings = json.loads(first["settings"])
    assert (settings["mode"], settings["address"], settings["submit"]) == (
        "address",
        None,
        "driver",
    )
    assert first["joined"] == first["address"] and second["joined"] == second["address"]
    assert first["ray_address_after"] == second["ray_address_after"] == env["RAY_ADDRESS"]

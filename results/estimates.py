"""The compute each shipped study would take on this machine, as the sweep estimates it before it
trains (every run going to its max_epochs, measured on a step of each group shape), into
results/estimates.json; the README's table of studies quotes it (tests/test_results.py).

    python results/estimates.py            # a few minutes on 2 CPU cores

`frankle` needs CIFAR-10, which is not on this machine: its shapes are timed on generated batches in
CIFAR-10's format and size (the time of a step does not depend on the pixels).
"""
from __future__ import annotations

import datetime
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from bnonly.config.layers import shipped_configs
from bnonly.config.layers import load_sweep
from bnonly.engine.device import EngineOptions, device_name
from bnonly.sweeps.grouping import estimate_seconds, plan_groups
from bnonly.version import code_version, label

OUT = Path(__file__).resolve().parent / "estimates.json"


def cifar_like(root: Path) -> Path:
    """Generated batches in CIFAR-10's python format: 5 x 10,000 training and 10,000 test images."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, 10000).tolist()}, f)
    return d


def main() -> None:
    out = {"machine": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "code": label(code_version()), "command": "python results/estimates.py",
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "studies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cifar = cifar_like(Path(tmp))
        for name in shipped_configs():
            runs = load_sweep(name).runs()
            groups = plan_groups(runs, EngineOptions.for_device("cpu"))
            data_dir = str(cifar) if name == "frankle" else None
            seconds, shapes, left_out, _ = estimate_seconds(groups, "cpu", data_dir, batches=1)
            out["studies"][name] = {"runs": len(runs), "groups": len(groups), "shapes": shapes,
                                    "seconds": seconds, "groups_left_out": left_out}
            print(f"{name}: {len(runs)} runs, about {seconds / 3600:.1f} h", flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

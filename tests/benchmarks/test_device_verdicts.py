"""benchmarks/device_verdicts.py on the CPU: the packaged quick-start model, twice on the CPU, no verdict differs."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_device_verdicts_compares_two_cpu_evaluations():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_verdicts.py"), "--limit", "40",
                          "--devices", "cpu,cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("| cpu vs cpu")]
    assert len(lines) == 2 and all(line.endswith("| 0 | 0 | 0 |") for line in lines), res.stdout

"""Paper-schedule rows on one lent GPU, side by side, packed so that they come back and resume anywhere.

    PYTHONPATH=src python benchmarks/gpu_rows.py start DATA_DIR WORK SPEC...   # launch the rows, detached
    PYTHONPATH=src python benchmarks/gpu_rows.py collect WORK OUT SECONDS      # wait, stop, pack

``SPEC`` is ``NAME=EXPERIMENT/ROW[,KEY=VALUE...]``: ``ctxbudget reproduce EXPERIMENT --rows ROW
--schedule paper --device cuda --set KEY=VALUE...`` with output folder ``WORK/NAME`` and log
``WORK/NAME.log``. ``start`` launches every row in its own process session (so a row outlives the
command that started it, on a machine kept warm between two calls) and returns at once.

``collect`` waits until every row has exited or ``SECONDS`` have passed, stops the rest (SIGTERM; each
epoch's checkpoint is written atomically, so a stopped row loses at most its current epoch), and
writes ``OUT/rows.tar.part-NN`` (at most 15 MiB each; ``cat rows.tar.part-* | tar x`` joins them)
and ``OUT/rows.md`` (epochs reached, state, test errors of the last epoch per row). The archive holds
every row's folder without ``checkpoints/``, plus ``final.pt`` (finished rows) or
``checkpoints/last.pt`` (unfinished ones, to resume with ``ctxbudget reproduce … --out``), in the
order of the specs, as long as the whole stays under ``--max-mib`` (default 60): a checkpoint that
does not fit is left out and ``rows.md`` says so.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PART = 15 * 2**20


def parse_spec(spec: str) -> tuple[str, str, str, list[str]]:
    """'NAME=EXP/ROW,K=V,...' → (name, experiment, row, ['K=V', ...]); ValueError when malformed."""
    name, sep, rest = spec.partition("=")
    target, *sets = rest.split(",")
    exp, slash, row = target.partition("/")
    if not (sep and slash and name and exp and row) or any("=" not in s for s in sets):
        raise ValueError(f"bad row spec {spec!r}: expected NAME=EXPERIMENT/ROW[,KEY=VALUE...]")
    return name, exp, row, sets


def start(data_dir: str, work: Path, specs: list[str], device: str) -> None:
    rows = [parse_spec(s) for s in specs]
    work.mkdir(parents=True, exist_ok=True)
    pids = {}
    for name, exp, row, sets in rows:
        cmd = [sys.executable, "-m", "ctxbudget", "reproduce", exp, "--rows", row, "--schedule", "paper",
               "--out", str(work / name), "--data-dir", data_dir, "--device", device]
        for s in sets:
            cmd += ["--set", s]
        log = open(work / f"{name}.log", "ab")
        log.write((" ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        pids[name] = {"pid": proc.pid, "experiment": exp, "row": row, "started": time.time()}
        print(f"started {name}: pid {proc.pid}: {' '.join(cmd)}")
    (work / "rows.json").write_text(json.dumps(pids, indent=1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not reaped: its parent was the `start` command) counts as exited
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _last_test_line(run_dir: Path) -> dict:
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s.strip()] \
        if (run_dir / "metrics.jsonl").is_file() else []
    tests = [d for d in lines if d.get("split") == "test"]
    return tests[-1] if tests else {}


def collect(work: Path, out: Path, seconds: float, max_mib: float) -> None:
    rows = json.loads((work / "rows.json").read_text())
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(r["pid"]) for r in rows.values()):
        time.sleep(5)
    for r in rows.values():
        if _alive(r["pid"]):
            os.killpg(r["pid"], signal.SIGTERM)
            r["stopped"] = True
    time.sleep(3)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    report = ["| row | experiment/row | state | epochs | test clean | test verified | archived checkpoint |",
              "|---|---|---|---|---|---|---|"]
    run_dirs = {name: [p.parent for p in (work / name).rglob("config.yaml")] for name in rows}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in rows:   # logs, tables, metrics and figures: every file but the checkpoints
            top = work / name
            tar.add(work / f"{name}.log", arcname=f"{name}.log")
            for f in sorted(top.rglob("*")):
                if f.is_file() and f.suffix != ".pt" and "checkpoints" not in f.relative_to(top).parts:
                    tar.add(f, arcname=str(f.relative_to(work)))
        for name, r in rows.items():
            if not run_dirs[name]:
                report.append(f"| {name} | {r['experiment']}/{r['row']} | no run (see {name}.log) | 0 | – | – | none |")
            for run_dir in run_dirs[name]:
                final = run_dir / "final.pt"
                ckpt = final if final.is_file() else run_dir / "checkpoints" / "last.pt"
                line = _last_test_line(run_dir)
                state = "stopped" if r.get("stopped") else ("finished" if (run_dir / "results.json").is_file()
                                                          else "exited")
                kept = "none"
                if ckpt.is_file():
                    if buf.tell() + ckpt.stat().st_size + 2**20 < max_mib * 2**20:
                        tar.add(ckpt, arcname=str(ckpt.relative_to(work)))
                        kept = ckpt.name
                    else:
                        kept = f"{ckpt.name} left out (size)"
                clean, verified = (f"{100 * line[k]:.2f} %" if k in line else "–" for k in ("clean_err", "verified_err"))
                report.append(f"| {name} | {r['experiment']}/{r['row']} | {state} | {line.get('epoch', 0)} | "
                              f"{clean} | {verified} | {kept} |")
    data = buf.getvalue()
    for i in range(0, len(data), PART):
        (out / f"rows.tar.part-{i // PART:02d}").write_bytes(data[i:i + PART])
    (out / "rows.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("data_dir")
    s.add_argument("work", type=Path)
    s.add_argument("specs", nargs="+")
    s.add_argument("--device", default="cuda")
    c = sub.add_parser("collect")
    c.add_argument("work", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("seconds", type=float)
    c.add_argument("--max-mib", type=float, default=60.0)
    args = ap.parse_args()
    try:
        if args.cmd == "start":
            start(args.data_dir, args.work, args.specs, args.device)
        else:
            collect(args.work, args.out, args.seconds, args.max_mib)
    except ValueError as e:
        ap.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())

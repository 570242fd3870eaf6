"""Training speed on a busy machine: OpenMP threads that spin vs threads that sleep while they wait.

A reader's laptop is rarely idle. This benchmark starts busy-loop processes (a reproducible
load: by default none, one per CPU, then two per CPU), then trains the chapter-2 Transformer
(the recipe's model, 120 steps) in a fresh process for each setting:

* GNU OpenMP's default, torch's default number of threads: a waiting thread spins for a long
  while (about 300,000 iterations) before it sleeps;
* ``GOMP_SPINCOUNT=1000``, the same threads: a short spin, then sleep (the course's default,
  set by the Makefile, the notebooks' kernel spec and ``import companion``);
* ``OMP_WAIT_POLICY=PASSIVE``: no spin at all, waiting threads sleep at once;
* one thread (no barriers at all);

under each load. It prints the wall-clock and CPU seconds of each and writes
them as JSON. Run::

    .venv/bin/python benchmarks/busy_machine.py --json benchmarks/results/busy_machine.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from provenance import provenance

TRAIN = """
import json, os, sys, time, torch
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
from companion.recipes import transformer as rt
cfg = rt.Config(steps=int(sys.argv[2]), seed=0)
model = rt.build_model(cfg)
t0, c0 = time.perf_counter(), time.process_time()
rt.train(cfg, model, progress=False)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "threads": torch.get_num_threads()}))
"""

SETTINGS = {  # name: (extra environment, threads; 0 = torch's default)
    "OpenMP default (long spin)": ({}, 0),
    "short spin (GOMP_SPINCOUNT=1000)": ({"GOMP_SPINCOUNT": "1000"}, 0),
    "no spin (OMP_WAIT_POLICY=PASSIVE)": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "one thread": ({}, 1),
}


def train_once(extra: dict, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", TRAIN, str(threads), str(steps)], env=env, check=True,
                         capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="training steps per measurement")
    cpus = os.cpu_count() or 1
    parser.add_argument("--busy", type=int, nargs="+", default=[0, cpus, 2 * cpus],
                        help="numbers of busy-loop processes to measure under")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    rows = []
    for n_busy in args.busy:
        busy = []
        if n_busy:  # bounded: killed in the finally below, and each ends by itself after 30 minutes
            loop = "import time\nend = time.time() + 1800\nwhile time.time() < end: pass"
            busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(n_busy)]
            time.sleep(2)
        try:
            for name, (extra, threads) in SETTINGS.items():
                r = train_once(extra, threads, args.steps)
                row = {"setting": name, "busy_loops": n_busy, "load": f"{n_busy} busy loops" if n_busy else "none",
                       "load_average": os.getloadavg()[0], **r}
                rows.append(row)
                print(f"{row['load']:>14s} | {name:34s} | {r['threads']} threads | wall {r['wall']:6.1f} s | "
                      f"CPU {r['cpu']:6.1f} s", flush=True)
        finally:
            for p in busy:
                p.kill()
            for p in busy:
                p.wait()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"provenance": provenance(), "steps": args.steps, "rows": rows}, indent=1)
                             + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

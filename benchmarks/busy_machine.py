"""Training speed on a busy machine: OpenMP threads that spin vs threads that sleep while they wait.

A reader's laptop is rarely idle. This benchmark starts one busy-loop process per CPU (a
reproducible load), then trains the chapter-2 Transformer (the recipe's model, 60 steps) in a
fresh process for each setting:

* ``OMP_WAIT_POLICY=ACTIVE``, torch's default number of threads: OpenMP's default, threads spin
  at every barrier;
* ``OMP_WAIT_POLICY=PASSIVE``, the same threads: waiting threads sleep (the course's default,
  set by the Makefile, the notebooks' kernel spec and ``import companion``);
* one thread (no barriers at all);

and the same three without the load. It prints the wall-clock and CPU seconds of each and writes
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

SETTINGS = {  # name: (OMP_WAIT_POLICY, threads; 0 = torch's default)
    "spinning threads (OpenMP default)": ("ACTIVE", 0),
    "sleeping threads (OMP_WAIT_POLICY=PASSIVE)": ("PASSIVE", 0),
    "one thread": ("PASSIVE", 1),
}


def train_once(policy: str, threads: int, steps: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run([sys.executable, "-c", TRAIN, str(threads), str(steps)], env=env, check=True,
                         capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--busy", type=int, default=os.cpu_count(), help="busy-loop processes for the load")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    rows = []
    for loaded in (False, True):
        busy = []
        if loaded:  # bounded: killed in the finally below, and each ends by itself after 30 minutes
            loop = "import time\nend = time.time() + 1800\nwhile time.time() < end: pass"
            busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(args.busy)]
            time.sleep(2)
        try:
            for name, (policy, threads) in SETTINGS.items():
                r = train_once(policy, threads, args.steps)
                row = {"setting": name, "load": f"{args.busy} busy loops" if loaded else "none",
                       "load_average": os.getloadavg()[0], **r}
                rows.append(row)
                print(f"{row['load']:>14s} | {name:45s} | {r['threads']} threads | wall {r['wall']:6.1f} s | "
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

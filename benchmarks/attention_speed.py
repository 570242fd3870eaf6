"""Speed and memory of the two attention paths of ``companion.attention`` against torch's SDPA.

For T in {64, 256, 1024} (one run), with no mask and with a causal bool mask:

* time of the explicit path (:func:`companion.attention.scaled_dot_product_attention`) and of the
  fast path (:func:`companion.attention.fused_attention`, the one ``MultiHeadAttention`` uses
  when the weights are not requested), each as a ratio to
  :func:`torch.nn.functional.scaled_dot_product_attention` on the same inputs
  (goal: fast path within 1.1x of SDPA);
* peak tensor memory allocated during a forward pass and during a forward + backward pass
  (above the inputs; from torch's allocator via the profiler), and how it grows with T.

Timings interleave the three functions call by call and report the minimum over the samples
(the one least disturbed by other processes), so a change of machine load hits all three
alike; the ratios are what to compare across machines. The load average is printed too.

Run: ``.venv/bin/python benchmarks/attention_speed.py [--json out.json] [--threads N] [--repeats R] [--clock cpu]``
(on a machine shared with other jobs, ``--threads 1 --clock cpu`` measures the work, not the waiting).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from companion.attention import causal_mask, fused_attention, scaled_dot_product_attention

B, H, D_K = 4, 8, 64
TS = (64, 256, 1024)


def explicit(q, k, v, mask):
    return scaled_dot_product_attention(q, k, v, mask)[0]


def fast(q, k, v, mask):
    return fused_attention(q, k, v, mask)


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


PATHS = {"explicit": explicit, "fast": fast, "sdpa": sdpa}


def _inputs(T: int, grad: bool = False):
    g = torch.Generator().manual_seed(T)
    return [torch.randn(B, H, T, D_K, generator=g).requires_grad_(grad) for _ in range(3)]


def time_paths(T: int, mask: torch.Tensor | None, repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Seconds per forward call of each path: the minimum over ``repeats`` interleaved samples.

    The minimum is the sample least disturbed by other processes; interleaving (in a rotating
    order) exposes the three paths to the same load and the same cache state.
    """
    q, k, v = _inputs(T)
    n_inner = max(1, 2048 // T)  # several calls per sample for the short, fast cases
    samples = {name: [] for name in PATHS}
    with torch.no_grad():
        for fn in PATHS.values():  # warm-up
            fn(q, k, v, mask)
        names = list(PATHS)
        for r in range(repeats):
            # rotate the order, so that no path always runs right after the memory-hungry explicit one
            for name in names[r % 3:] + names[: r % 3]:
                fn = PATHS[name]
                t0 = clock()
                for _ in range(n_inner):
                    fn(q, k, v, mask)
                samples[name].append((clock() - t0) / n_inner)
    return {name: min(s) for name, s in samples.items()}


def peak_memory(fn, T: int, mask: torch.Tensor | None, backward: bool) -> int:
    """Peak bytes of tensor memory allocated during the call, above the inputs.

    Read from torch's own allocator: the profiler with ``profile_memory=True`` records every
    allocation and free with the running total allocated since profiling began.
    """
    from torch.profiler import ProfilerActivity, profile

    q, k, v = _inputs(T, grad=backward)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if backward:
            fn(q, k, v, mask).sum().backward()
        else:
            with torch.no_grad():
                fn(q, k, v, mask)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    mem = [e["args"] for e in events if e.get("name") == "[memory]"]
    if not mem:
        return 0
    # the running total may include memory from earlier sessions: measure from where this one began
    start = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return max(0, max(m["Total Allocated"] for m in mem) - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=25, help="timed samples per path and size")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (robust on a busy machine "
                             "when used with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"q, k, v: ({B}, {H}, T, {D_K}) float32; {args.clock} times: minimum of {args.repeats} interleaved samples\n")
    results = {"B": B, "H": H, "d_k": D_K, "threads": torch.get_num_threads(), "clock": args.clock,
               "load_average": load, "rows": []}
    header = (f"{'mask':>7} {'T':>5} {'SDPA ms':>9} {'explicit/SDPA':>14} {'fast/SDPA':>10}"
              f" | peak MB fwd: {'expl':>6} {'fast':>6} {'sdpa':>6} | fwd+bwd: {'expl':>6} {'fast':>6} {'sdpa':>6}")
    print(header)
    print("-" * len(header))
    for mask_kind in ("none", "causal"):
        for T in TS:
            mask = causal_mask(T) if mask_kind == "causal" else None
            t = time_paths(T, mask, args.repeats, clock)
            row = {"mask": mask_kind, "T": T, "sdpa_ms": 1e3 * t["sdpa"],
                   "explicit_ratio": t["explicit"] / t["sdpa"], "fast_ratio": t["fast"] / t["sdpa"]}
            for bwd, tag in ((False, "fwd"), (True, "fwd_bwd")):
                for name, fn in PATHS.items():
                    row[f"peak_mb_{tag}_{name}"] = peak_memory(fn, T, mask, bwd) / 2**20
            results["rows"].append(row)
            mem = " ".join(f"{row[f'peak_mb_fwd_{n}']:6.1f}" for n in PATHS)
            mem2 = " ".join(f"{row[f'peak_mb_fwd_bwd_{n}']:6.1f}" for n in PATHS)
            print(f"{mask_kind:>7} {T:>5} {row['sdpa_ms']:9.3f} {row['explicit_ratio']:14.2f} "
                  f"{row['fast_ratio']:10.2f} | {'':13}{mem} | {'':8} {mem2}")
    worst = max(r["fast_ratio"] for r in results["rows"])
    print(f"\nfast path: worst ratio to SDPA {worst:.3f} (goal <= 1.1: {'met' if worst <= 1.1 else 'NOT met'})")
    for mask_kind in ("none", "causal"):
        rows = [r for r in results["rows"] if r["mask"] == mask_kind]
        for name in PATHS:
            a, b = rows[0][f"peak_mb_fwd_bwd_{name}"], rows[-1][f"peak_mb_fwd_bwd_{name}"]
            print(f"  mask {mask_kind:>6}, {name:>8}: fwd+bwd peak {a:7.2f} MB at T = {TS[0]}, {b:7.1f} MB at "
                  f"T = {TS[-1]}: x{b / a:.0f} (T grew x{TS[-1] // TS[0]}, T^2 x{(TS[-1] // TS[0]) ** 2})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

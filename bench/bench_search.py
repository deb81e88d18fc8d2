"""How good and how fast the search is, on the built-in profiles and on random ones.

    python bench/bench_search.py

For 8 GPUs on one machine and a REDDIT-sized epoch (1,121 batches, the full re-check run):
the best hand-written family and its period, the schedule found, its period, its lower bound
and gap, the candidates simulated and pruned, and the search time (target: under 10 s on 2
cores). Random profiles draw every op's cost from 0.1-5 ms and a memory budget of 0 or 1.
"""

from __future__ import annotations

import dataclasses
import random

from tgpipe.dag import OPS, OpCost, builtin_profiles, load_profile
from tgpipe.schedules.search import search

GPUS, BATCHES = 8, 1_121


def random_profile(seed: int):
    rng = random.Random(seed)
    base = load_profile("gpu-illustrative")
    ops = {op: OpCost(rng.uniform(1e-4, 5e-3), 0.0, base.ops[op].bytes) for op in OPS}
    return dataclasses.replace(base, name=f"random-{seed}", source="illustrative", ops=ops)


def main() -> None:
    mtgnn = [p for p in map(load_profile, builtin_profiles()) if p.workload == "mtgnn"]
    cases = [(profile, 0) for profile in mtgnn]  # snapshot profiles: bench_snapshot.py
    cases.append((load_profile("gpu-illustrative"), 1))
    cases += [(random_profile(seed), seed % 2) for seed in range(4)]
    print(f"{GPUS} GPUs on one machine, full re-check on {BATCHES:,} batches")
    header = (
        f"{'profile':<18} {'mem':>3} {'best family':<18} {'period':>8} {'found':<30} "
        f"{'period':>8} {'bound':>8} {'gap':>6} {'speedup':>7} {'sim':>4} {'pruned':>6} "
        f"{'time':>6}"
    )
    print(header)
    for profile, budget in cases:
        r = search(profile, gpus_per_machine=GPUS, max_memory_staleness=budget, n_batches=BATCHES)
        f, b = r.best_family, r.best
        print(
            f"{profile.name:<18} {budget:>3} {f.schedule.name:<18} {f.period * 1e3:>6.3f}ms "
            f"{b.schedule.name[:30]:<30} {b.period * 1e3:>6.3f}ms {b.bound * 1e3:>6.3f}ms "
            f"{b.gap * 100:>5.1f}% {f.period / b.period:>6.3f}x {len(r.evaluated):>4} "
            f"{r.pruned:>6} {r.seconds:>5.1f}s"
        )


if __name__ == "__main__":
    main()

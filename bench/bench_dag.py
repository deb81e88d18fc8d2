"""How fast the foundation is: unrolled DAGs and periodic bounds at real epoch sizes.

    python bench/bench_dag.py

One REDDIT epoch is 1,121 batches of 600 events; one GDELT epoch about 318,000. The bound
works on the periodic graph, so its time does not grow with the number of batches: the table
shows it beside the build of the unrolled DAG, measured in the same run.
"""

from __future__ import annotations

import argparse
import time

from tgpipe.dag import (
    Semantics,
    build_dag,
    critical_path,
    data_parallel,
    load_profile,
    lower_bound,
    mspipe,
    pipetgl,
    sequential,
)

REDDIT, GDELT = 1_121, 318_000


def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--unroll-gdelt",
        action="store_true",
        help="also unroll one GDELT epoch (about a minute), for scale",
    )
    args = parser.parse_args()
    profile = load_profile("gpu-illustrative")
    cases: list[tuple[str, Semantics, int]] = [
        ("sequential", sequential(), 1),
        ("pipetgl(8)", pipetgl(8), 8),
        ("data_parallel(8)", data_parallel(8), 8),
        ("mspipe(8, k=2)", mspipe(8, 2), 8),
    ]
    print(
        f"profile {profile.name}; DAG of one REDDIT epoch ({REDDIT:,} batches); the bound "
        f"holds for any number of batches, GDELT's {GDELT:,} included"
    )
    print(
        f"{'semantics':<18} {'build DAG':>10} {'crit. path':>11} {'bound':>9} "
        f"{'GDELT epoch bound':>18} {'build/bound':>12}"
    )
    for name, semantics, ranks in cases:
        build = best_of(lambda s=semantics: build_dag(profile, s, REDDIT), repeat=3)
        G = build_dag(profile, semantics, REDDIT)
        path = best_of(lambda G=G: critical_path(G), repeat=3)
        bound = best_of(lambda s=semantics, r=ranks: lower_bound(profile, s, r))
        epoch = lower_bound(profile, semantics, ranks).per_batch * GDELT
        print(
            f"{name:<18} {build * 1e3:>7.1f} ms {path * 1e3:>8.1f} ms {bound * 1e3:>6.2f} ms "
            f"{epoch:>16.1f} s {build / bound:>11.0f}x"
        )
    if args.unroll_gdelt:
        start = time.perf_counter()
        G = build_dag(profile, pipetgl(8), GDELT)
        print(
            f"unrolling one GDELT epoch ({G.number_of_nodes():,} nodes) took "
            f"{time.perf_counter() - start:.1f} s"
        )


if __name__ == "__main__":
    main()

"""Tokens per second, memory per rank and bytes per step of fastembed_ext.distributed.

Starts W processes on this machine (torch's launcher, spawn; gloo on
127.0.0.1) for each W of ``--world-sizes``.  Every rank builds the same
seeded ``ShardedEmbedding`` (T, d), then runs training steps on its own
batch of B Zipf ids (``forward``, ``backward``, ``step`` with the chosen
optimizer) and records:

- tokens/s: W * B * steps over the wall time of the timed steps, which start
  and end with a barrier (the first ``--warmup`` steps are not timed);
- the median step time and the part of it spent inside
  ``all_to_all_single`` (rank 0's view; a rank that waits for a slower
  one counts the wait as exchange time);
- memory: the resident set before the table is built (Python, NumPy, torch,
  the process group, the batches), the peak resident set at the end (``ru_maxrss``), and
  the shard and optimizer-state bytes;
- bytes sent to other ranks per step, counted at ``all_to_all_single`` (the
  part of each send that leaves the rank), next to the formula computed
  from the step's routes:

      sent_r = 24 (W - 1)              status and counts (int64)
             + 8 * out_r               ids to their owners (int64)
             + s * d * in_r            rows back to the ranks that asked
             + s * d * out_r           gradient rows to their owners

  where out_r is the number of rank r's ids owned by other ranks, in_r the
  number of ids other ranks asked of rank r, s the item size.  Summed over
  the group, sum(out_r) = sum(in_r), so the group sends
  (8 + 2 s d) * sum(out_r) + 24 W (W - 1) bytes a step; with ids spread
  evenly over the owners, E[out_r] = B (W - 1) / W.

    python scripts/bench_distributed.py                       # W = 1 and 2, a minute or two
    python scripts/bench_distributed.py --world-sizes 1,2 --rows 4194304 --dim 64 --batch 16384
    python scripts/bench_distributed.py --owner-load 2,8,16,64   # hot rows, no processes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, outdir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    import torch.distributed as dist

    import fastembed_ext as fe
    import fastembed_ext.distributed as dfe
    from fastembed_ext._workloads import zipf_ids

    timeout = datetime.timedelta(seconds=300)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)

    # count what leaves this rank and the time spent in the exchange
    counted = {"bytes": 0, "seconds": 0.0, "calls": 0}
    real = dist.all_to_all_single

    def counting(output: Any, input: Any, output_split_sizes: Any = None,
                 input_split_sizes: Any = None, group: Any = None, async_op: bool = False) -> Any:
        row = input.element_size() * (input[0].numel() if input.dim() > 1 else 1)
        splits = (input_split_sizes if input_split_sizes is not None
                  else [input.shape[0] // world] * world)
        counted["bytes"] += row * (sum(splits) - splits[rank])
        counted["calls"] += 1
        t0 = time.perf_counter()
        try:
            return real(output, input, output_split_sizes, input_split_sizes, group=group,
                        async_op=async_op)
        finally:
            counted["seconds"] += time.perf_counter() - t0

    dist.all_to_all_single = counting

    # the batches: distinct per rank and step, cycled; generated first, so that
    # their temporaries (T-sized) are freed before the table exists
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng([7, world, rank])
    batches = []
    for _ in range(args.distinct_batches):
        ids = zipf_ids(rng, args.rows, args.batch, a=args.zipf)
        grad = rng.standard_normal((args.batch, args.dim)).astype(dtype)
        batches.append((ids, grad))
    rss_before = _rss_bytes()
    emb = dfe.ShardedEmbedding(args.rows, args.dim, dtype=dtype, seed=0,
                               num_threads=args.threads)
    opt = {"sgd": fe.SGD(lr=0.01), "adagrad": fe.Adagrad(lr=0.01),
           "rowwise_adagrad": fe.RowwiseAdagrad(lr=0.01)}[args.optimizer]
    size = dtype.itemsize * args.dim
    step_seconds, exchange_seconds, sent, formula = [], [], [], []

    def one_step(i: int) -> None:
        ids, grad = batches[i % len(batches)]
        before_bytes, before_s = counted["bytes"], counted["seconds"]
        t0 = time.perf_counter()
        emb(ids)
        route = emb._route
        emb.backward(grad)
        emb.step(opt)
        step_seconds.append(time.perf_counter() - t0)
        exchange_seconds.append(counted["seconds"] - before_s)
        sent.append(counted["bytes"] - before_bytes)
        assert route is not None
        out_r = sum(route.send_counts) - route.send_counts[rank]
        in_r = sum(route.recv_counts) - route.recv_counts[rank]
        formula.append(0 if world == 1 else
                       24 * (world - 1) + 8 * out_r + size * in_r + size * out_r)

    for i in range(args.warmup):
        one_step(i)
    dist.barrier()
    step_seconds.clear(), exchange_seconds.clear(), sent.clear(), formula.clear()
    t0 = time.perf_counter()
    for i in range(args.steps):
        one_step(args.warmup + i)
    dist.barrier()
    elapsed = time.perf_counter() - t0
    record = {
        "rank": rank, "world": world, "elapsed": elapsed,
        "median_step": statistics.median(step_seconds),
        "median_exchange": statistics.median(exchange_seconds),
        "rows": emb.weight.shape[0], "shard_bytes": emb.weight.nbytes,
        "state_bytes": _state_bytes(opt),
        "rss_before": rss_before,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "sent_mean": float(np.mean(sent)), "formula_mean": float(np.mean(formula)),
        "sent_equals_formula": sent == formula,
    }
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    dist.destroy_process_group()


def _state_bytes(opt: Any) -> int:
    total = 0
    for value in vars(opt).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, dict):
            total += sum(v.nbytes for v in value.values() if isinstance(v, np.ndarray))
    return total


def owner_load(args: argparse.Namespace, worlds: list[int]) -> None:
    """How the Zipf ids of a step fall on the owners, for world sizes not run here.

    For W ranks of B ids each: the busiest owner's share of the step's ids,
    times W (1.0 is a perfect balance), with the hot rows spread over the
    table (a hashed or shuffled vocabulary) and with them first (a vocabulary
    sorted by frequency, rows owned by rank 0); and the fraction of ids left
    if each rank sent each distinct id once.  No process is started."""
    from fastembed_ext._workloads import zipf_ids
    from fastembed_ext.distributed import row_bounds

    p = np.arange(1, args.rows + 1, dtype=np.float64) ** -args.zipf
    print(f"Zipf a = {args.zipf} over T = {args.rows} rows: the hottest row is "
          f"{p[0] / p.sum():.1%} of all ids")
    print(f"{'W':>3} {'busiest owner x W (spread)':>27} {'(hot rows first)':>17} "
          f"{'distinct ids per rank':>22}")
    for world in worlds:
        cells = []
        for hot in ("spread", "first"):
            ids = zipf_ids(np.random.default_rng(1), args.rows, args.batch * world,
                           a=args.zipf, hot=hot)
            owner = np.searchsorted(row_bounds(args.rows, world)[1:], ids, side="right")
            cells.append(np.bincount(owner, minlength=world).max() / ids.size * world)
        source = np.repeat(np.arange(world, dtype=np.int64), args.batch)
        distinct = np.unique(source * args.rows + ids).size / ids.size
        print(f"{world:>3} {cells[0]:>27.2f} {cells[1]:>17.2f} {distinct:>22.2f}")


def run_world(world: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch.distributed as dist
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as outdir:
        store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=300))
        mp.start_processes(_rank, args=(world, store.port, args, outdir), nprocs=world,
                           start_method="spawn")
        del store
        records = []
        for r in range(world):
            with open(os.path.join(outdir, f"rank{r}.json")) as f:
                records.append(json.load(f))
    return records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-sizes", default="1,2")
    p.add_argument("--rows", type=int, default=1 << 22, help="T")
    p.add_argument("--dim", type=int, default=64, help="d")
    p.add_argument("--batch", type=int, default=16384, help="B: ids per rank per step")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--optimizer", default="rowwise_adagrad",
                   choices=["sgd", "adagrad", "rowwise_adagrad"])
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the ids")
    p.add_argument("--threads", type=int, default=1, help="threads per rank")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--distinct-batches", type=int, default=8)
    p.add_argument("--json", help="write the records here")
    p.add_argument("--owner-load", metavar="WORLDS",
                   help="only print how a step's ids fall on the owners for these world "
                        "sizes (e.g. 8,16,64), computed in this process")
    args = p.parse_args(argv)
    worlds = [int(w) for w in args.world_sizes.split(",")]
    if args.owner_load:
        owner_load(args, [int(w) for w in args.owner_load.split(",")])
        return
    print(f"T = {args.rows}, d = {args.dim}, B = {args.batch} ids per rank per step "
          f"(Zipf a = {args.zipf}, hot rows spread over the table), {args.dtype}, "
          f"{args.optimizer}, {args.threads} thread(s) per rank, {args.steps} timed steps "
          f"after {args.warmup}; gloo on 127.0.0.1, {os.cpu_count()} CPUs")
    print(f"{'W':>2} {'tokens/s':>11} {'step ms':>8} {'exch ms':>8} {'shard MiB':>10} "
          f"{'state MiB':>10} {'RSS before MiB':>15} {'peak RSS MiB':>13} {'sent/step KiB':>14} "
          f"{'formula KiB':>12} {'equal':>6}")
    all_records = {}
    mib = 1 << 20
    for world in worlds:
        records = run_world(world, args)
        all_records[world] = records
        elapsed = max(r["elapsed"] for r in records)
        tokens = world * args.batch * args.steps / elapsed
        for r in records:
            lead = f"{world:>2} {tokens:>11,.0f}" if r["rank"] == 0 else f"{'':>2} {'':>11}"
            print(f"{lead} {r['median_step'] * 1e3:>8.1f} {r['median_exchange'] * 1e3:>8.1f} "
                  f"{r['shard_bytes'] / mib:>10.1f} {r['state_bytes'] / mib:>10.1f} "
                  f"{r['rss_before'] / mib:>15.0f} "
                  f"{r['peak_rss'] / mib:>13.0f} {r['sent_mean'] / 1024:>14.1f} "
                  f"{r['formula_mean'] / 1024:>12.1f} {str(r['sent_equals_formula']):>6}")
        if world > 1:
            size = np.dtype(args.dtype).itemsize * args.dim
            even = (world - 1) / world * args.batch * (8 + 2 * size) + 24 * (world - 1)
            print(f"   ids spread evenly over the owners: {even / 1024:.1f} KiB per rank per step "
                  f"= (W-1)/W * B * (8 + 2*s*d) + 24 (W-1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "records": all_records}, f, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

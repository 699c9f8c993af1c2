"""Cost of the loss-modelling scores (``obd``, ``lm``, ``qm``) against one forward-and-backward pass.

``sciprune.scores(model, method, (X, Y), batch_size=B)`` against a training-style pass over the same data
in the same chunks (forward, summed loss, ``backward()``), interleaved in one process after a warm-up;
the table gives the median time over repeats and the median of the per-repeat ratios to that pass.
Target (issue 12): OBD / QM within K + 1 passes for K outputs: the exact Gauss-Newton diagonal needs one
backward pass per output (K cotangents), the mean gradient of LM / QM one more (LM: that one alone).

FLOPs (matrix products only): forward 2 B sum(in*out); backward as in bench_ec_scores.fwd_bwd; the GGN
diagonal K backward passes that also square the per-sample products (2 B K sum(in*out) for the squared
activations times squared cotangents, plus the cotangents' propagation).

Cases: (a) the 2-40x6-1 tanh surrogate on 103 424 random points (K = 1, MSE); (b) LeNet-300-100 ReLU
on 60 000 random samples (K = 10, cross-entropy); (c) ``score_ensemble`` of ``--members`` surrogate
members on 16 384 shared inputs, own targets: the batched path against scoring them one by one.
Rows ``qm-2pass`` (QM as it was: autograd's gradient, then a second forward for the GGN diagonal) and
``lm-walk`` (LM's gradient from the chain walker instead of autograd) are kept for comparison only.

Run:  cd benchmarks && python bench_loss_models.py --device cpu --threads 1 --repeats 3 --warmup 1
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import scoring_case, setup, timed
from bench_ec_scores import fwd_bwd

import sciprune
from sciprune.batches import as_batches
from sciprune.criteria._loss_models import loss_model_scores, loss_model_terms, mean_gradient, weight_ggn_diagonal
from sciprune.masks import prunable_names


def qm_two_passes(model, X, Y, batch: int):
    """QM as it was before the fused walk (for comparison only): the mean gradient by autograd (one
    forward and backward pass), then the GGN diagonal by a second forward pass and C cotangents."""
    rows, names = as_batches((X, Y), batch_size=batch), prunable_names(model)
    return loss_model_scores(model, names, grad=mean_gradient(model, rows, names),
                             diag=weight_ggn_diagonal(model, rows, names))


def lm_walk(model, X, Y, batch: int):
    """LM with the gradient from the chain walker (one cotangent) instead of autograd (comparison only)."""
    rows, names = as_batches((X, Y), batch_size=batch), prunable_names(model)
    return loss_model_scores(model, names, grad=loss_model_terms(model, rows, names, grad=True, diag=False)[0],
                             diag=None)


def run_case(title: str, model, X, Y, *, loss: str, batch: int, repeats: int, warmup: int, device) -> None:
    K = model(X[:2]).shape[1]
    print(f"\n{title}: {X.shape[0]} samples, K = {K} output(s), batch {batch}, {repeats} repeats (+{warmup} warm-up)")
    work = {"fwd+bwd": lambda: fwd_bwd(model, X, Y, batch, loss)}
    for method in ("lm", "obd", "qm"):
        work[method] = lambda m=method: sciprune.scores(model, m, (X, Y), batch_size=batch)
    work["qm-2pass"] = lambda: qm_two_passes(model, X, Y, batch)
    work["lm-walk"] = lambda: lm_walk(model, X, Y, batch)
    times: dict[str, list[float]] = {k: [] for k in work}
    names = list(work)
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        t = {k: timed(work[k], device) for k in order}
        if r >= warmup:
            for k in names:
                times[k].append(t[k])
    base = times["fwd+bwd"]
    print(f"{'version':10s} {'s/pass':>8s} {'min':>8s} {'max':>8s} {'ratio':>6s} {'target':>7s}")
    for k in names:
        ratio = statistics.median(a / b for a, b in zip(times[k], base))
        target = f"<= {K + 1}" if k in ("obd", "qm", "qm-2pass") else ""
        print(f"{k:10s} {statistics.median(times[k]):8.4f} {min(times[k]):8.4f} {max(times[k]):8.4f} {ratio:6.2f} "
              f"{target:>7s}")


def run_ensemble(M: int, *, rows: int, repeats: int, warmup: int, device, dtype) -> None:
    """``score_ensemble`` of M surrogate members (own targets): the batched path against the member loop."""
    from sciprune.ensemble import score_ensemble
    from sciprune.pruning import score_result

    g = torch.Generator().manual_seed(1)
    models = [sciprune.MLP(2, [40] * 6, 1, "tanh", seed=m).to(device, dtype) for m in range(M)]
    X = torch.rand(rows, 2, generator=g).to(device, dtype)
    datas = [(X, torch.rand(rows, 1, generator=g).to(device, dtype)) for _ in range(M)]
    print(f"\n(c) ensemble of {M} 2-40x6-1 members, {rows} shared inputs, own targets: batched / member loop")
    print(f"{'method':8s} {'batched s':>10s} {'loop s':>8s} {'ratio':>6s}")
    for method in ("lm", "obd", "qm"):
        work = {"batched": lambda: score_ensemble(models, method, datas),
                "loop": lambda: [score_result(m, method, d) for m, d in zip(models, datas)]}
        times: dict[str, list[float]] = {k: [] for k in work}
        for r in range(warmup + repeats):
            for k in (list(work) if r % 2 else list(work)[::-1]):
                t = timed(work[k], device)
                if r >= warmup:
                    times[k].append(t)
        ratio = statistics.median(a / b for a, b in zip(times["batched"], times["loop"]))
        print(f"{method:8s} {statistics.median(times['batched']):10.4f} {statistics.median(times['loop']):8.4f} "
              f"{ratio:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, default=16384, help="rows per chunk, the same for every version")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", choices=["a", "b", "c"], default=None)
    ap.add_argument("--members", type=int, default=8, help="members of the ensemble case (c)")
    args = ap.parse_args()
    device, dtype = setup(args)
    g = torch.Generator().manual_seed(0)
    for which in ("a", "b"):
        if args.only in (None, which):
            title, model, X, Y, loss = scoring_case(which, g, device, dtype)
            run_case(title, model, X, Y, loss=loss, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                     device=device)
    if args.only in (None, "c"):
        run_ensemble(args.members, rows=16384, repeats=args.repeats, warmup=args.warmup, device=device, dtype=dtype)


if __name__ == "__main__":
    main()

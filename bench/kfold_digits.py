"""How much does each evaluation protocol's accuracy estimate move with the shuffle?

On a small subset of scikit-learn's digits (300 rows by default, the book's small-data case),
the same model (logistic regression on standardized pixels) is scored by a 20 % holdout,
by stratified K-fold and by iterated K-fold, once per shuffle seed. The spread of the
estimate over the seeds is the protocol's unreliability: the book's claim is that K-fold's
std is smaller than holdout's, and iterated K-fold's smaller still. Every protocol runs
through graft.evaluate.protocols; the last line shows what ``auto`` picks on the subset.

    python bench/kfold_digits.py
    python bench/kfold_digits.py --rows 300 --shuffles 10 --folds 3 --repeats 5
    python bench/kfold_digits.py --resample-subset   # a fresh random subset per shuffle

Seconds are wall-clock on whatever else the machine is doing: indicative only. On a shared
machine, OMP_NUM_THREADS=1 keeps scikit-learn's BLAS threads from oversubscribing it.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from graft.config import ProtocolConfig
from graft.evaluate.protocols import FoldData, TrainAndScore, run_protocol


def logistic_regression(max_iter: int) -> TrainAndScore:
    """A ``train_and_score``: a new LogisticRegression per call, accuracy on the fold."""

    def score(data: FoldData) -> float:
        scaler = StandardScaler().fit(data.x_train)
        model = LogisticRegression(max_iter=max_iter, random_state=data.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            model.fit(scaler.transform(data.x_train), data.y_train)
        return float((model.predict(scaler.transform(data.x_val)) == data.y_val).mean())

    return score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300, help="rows of the digits subset")
    parser.add_argument(
        "--shuffles", type=int, default=10, help="shuffle seeds per protocol (std is over these)"
    )
    parser.add_argument("--folds", type=int, default=3, help="k of K-fold (the book's example)")
    parser.add_argument("--repeats", type=int, default=5, help="P of iterated K-fold")
    parser.add_argument(
        "--holdout-fraction", type=float, default=0.2, help="validation share of the holdout"
    )
    parser.add_argument("--max-iter", type=int, default=1000, help="LogisticRegression max_iter")
    parser.add_argument(
        "--probe-max-std",
        type=float,
        default=0.005,
        help="auto: probe std above which holdout counts as unreliable",
    )
    parser.add_argument(
        "--resample-subset",
        action="store_true",
        help="draw a new random subset per shuffle (adds sampling noise) instead of the first "
        "--rows rows",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed of the shuffles")
    args = parser.parse_args()

    digits = load_digits()
    x_all, y_all = digits.data.astype(np.float64), digits.target.astype(np.int64)
    score = logistic_regression(args.max_iter)
    protocols = {
        "holdout": ProtocolConfig(name="holdout"),
        f"kfold k={args.folds}": ProtocolConfig(name="kfold", folds=args.folds),
        f"iterated_kfold {args.repeats}x{args.folds}": ProtocolConfig(
            name="iterated_kfold", folds=args.folds, repeats=args.repeats, max_models=10_000
        ),
    }
    print(
        f"digits: {args.rows}-row {'random subsets' if args.resample_subset else 'subset'}, "
        f"{args.shuffles} shuffles, logistic regression (max_iter={args.max_iter})"
    )
    print(f"{'protocol':<24}{'mean':>8}{'std':>9}{'min':>8}{'max':>8}{'fits':>7}{'seconds':>9}")
    stds: dict[str, float] = {}
    for label, config in protocols.items():
        estimates, fits, started = [], 0, time.perf_counter()
        for shuffle in range(args.shuffles):
            seed = args.seed + shuffle
            rows = (
                np.random.default_rng(seed).choice(len(y_all), args.rows, replace=False)
                if args.resample_subset
                else np.arange(args.rows)
            )
            result = run_protocol(
                x_all[rows],
                y_all[rows],
                config,
                score,
                seed,
                holdout_val_size=args.holdout_fraction,
            )
            estimates.append(result.mean)
            fits += result.fits
        seconds = time.perf_counter() - started
        values = np.array(estimates)
        stds[label] = float(values.std())
        print(
            f"{label:<24}{values.mean():>8.4f}{values.std():>9.4f}{values.min():>8.4f}"
            f"{values.max():>8.4f}{fits:>7d}{seconds:>9.2f}"
        )
    names = list(stds)
    holdout_std, kfold_std, iterated_std = (stds[n] for n in names)
    print(
        f"K-fold std < holdout std: {kfold_std < holdout_std} "
        f"({kfold_std:.4f} vs {holdout_std:.4f}); iterated K-fold std <= K-fold std: "
        f"{iterated_std <= kfold_std} ({iterated_std:.4f} vs {kfold_std:.4f})"
    )
    auto = run_protocol(
        x_all[: args.rows],
        y_all[: args.rows],
        ProtocolConfig(
            name="auto",
            folds=args.folds,
            probe_splits=args.shuffles,
            probe_max_std=args.probe_max_std,
            min_val_rows=1,
        ),
        score,
        args.seed,
        holdout_val_size=args.holdout_fraction,
    )
    print(f"auto picks {auto.protocol}: {auto.reason}")


if __name__ == "__main__":
    main()

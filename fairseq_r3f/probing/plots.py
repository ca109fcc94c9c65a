"""The three figures, in the layout of the paper's Figures 3 to 5, from a driver's results dictionary."""

import logging
from typing import Dict, List

logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import leaves the root logger at DEBUG

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"std++": "STD++", "smart": "SMART", "r3f": "R3F", "r4f": "R4F", "accuracy": "Accuracy",
          "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman", "f1": "F1", "acc_and_f1": "Acc/F1"}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _values(rows: List[Dict], **match) -> List[float]:
    return [r["metric"] for r in rows
            if r["metric"] is not None and all(r.get(k) == v for k, v in match.items())]


def generalisation(results: Dict, methods: List[str], path: str) -> None:
    """One panel per probed task; in each, the probe metric over seeds as one box per method."""
    tasks = results["probe_tasks"]
    columns = min(3, len(tasks))
    rows_n = (len(tasks) + columns - 1) // columns
    fig, axes = plt.subplots(rows_n, columns, figsize=(4 * columns, 3.2 * rows_n), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        data = [_values(results["rows"], method=m, probe_task=task) for m in methods]
        positions = [i for i, d in enumerate(data) if d]
        if positions:
            ax.boxplot([data[i] for i in positions], positions=positions, widths=0.5)
            for i in positions:
                ax.scatter([i] * len(data[i]), data[i], s=12, zorder=3)
        ax.set_xticks(range(len(methods)), [_label(m) for m in methods])
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(task)
        ax.set_ylabel(_label(results["metric_names"][task]))
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"Probing models fine-tuned on {results['source']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _line(ax, xs: List, per_x: List[List[float]], label: str) -> None:
    points = [(x, v) for x, v in zip(xs, per_x) if v]
    if not points:
        return
    x = [p[0] for p in points]
    mean = [sum(v) / len(v) for _, v in points]
    low = [m - min(v) for m, (_, v) in zip(mean, points)]
    high = [max(v) - m for m, (_, v) in zip(mean, points)]
    ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=label)


def degradation(results: Dict, methods: List[str], path: str) -> None:
    """The probe metric for the source task after each step of the chain, one line per method
    (mean over seeds, whiskers from the minimum to the maximum)."""
    chain = results["chain"]
    fig, ax = plt.subplots(figsize=(1.6 * len(chain) + 2.5, 3.5))
    xs = list(range(len(chain)))
    for method in methods:
        _line(ax, xs, [_values(results["rows"], method=method, position=i + 1) for i in xs], _label(method))
    ax.set_xticks(xs, [f"after {t}" for t in chain])
    ax.set_xlabel("fine-tuning chain")
    ax.set_ylabel(f"{results['probe_task']} probe {_label(results['metric_name'])}")
    ax.set_title(f"Probing {results['probe_task']} along {' -> '.join(chain)}")
    ax.legend(title="Fine-tuning method")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def retention(results: Dict, methods: List[str], path: str) -> None:
    """One panel per task of the chain ("Probing QNLI"), the probe metric per cycle, one line per method."""
    chain, cycles = results["chain"], results["cycles"]
    fig, axes = plt.subplots(1, len(chain), figsize=(3.6 * len(chain), 3.4), squeeze=False)
    xs = list(range(1, cycles + 1))
    for ax, task in zip(axes[0], chain):
        for method in methods:
            _line(ax, xs, [_values(results["rows"], method=method, probe_task=task, cycle=c) for c in xs],
                  _label(method))
        ax.set_xticks(xs, [f"Cycle {c}" for c in xs])
        ax.set_xlim(0.5, cycles + 0.5)
        ax.set_title(f"Probing {task}")
        ax.set_ylabel(_label(results["metric_names"][task]))
    axes[0][-1].legend(title="Fine-tuning method")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""Command line: ``python -m llmcourse.backprop --worked-example`` or ``--steps N``.

Examples::

    python -m llmcourse.backprop --worked-example            # forward pass, gradients, update
    python -m llmcourse.backprop --worked-example --json     # the same as one JSON object
    python -m llmcourse.backprop --steps 10000               # iterate, report E now and then
    python -m llmcourse.backprop --steps 200 --lrs 0.05 0.5 5 --plot runs/backprop/lrs.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from .network import (
    BIAS_NAMES,
    LEARNING_RATE,
    WEIGHT_NAMES,
    TrainingRun,
    WorkedExample,
    learning_rate_sweep,
    worked_example,
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive finite number")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that ``--help`` can be tested and documented)."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.backprop",
        description=(
            "Backpropagation on the 2-2-2 sigmoid network of chapter 2\n"
            "(labels z1, z2, i1, i2, o1, o2, w1..w8, b1, b2 as in the course's source document)."
        ),
        epilog=(
            "examples:\n"
            "  python -m llmcourse.backprop --worked-example --json\n"
            "  python -m llmcourse.backprop --steps 10000 --metrics runs/backprop/E.csv\n"
            "  python -m llmcourse.backprop --steps 2000 --lrs 0.05 0.5 5 500 --plot lrs.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--worked-example",
        action="store_true",
        help="print the forward pass, E, every dE/dw and the weights after one update",
    )
    mode.add_argument(
        "--steps",
        type=_non_negative_int,
        metavar="N",
        help="run N gradient-descent steps (all eight weights each step) and report E",
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=LEARNING_RATE,
        help=f"learning rate eta (default {LEARNING_RATE})",
    )
    parser.add_argument(
        "--lrs",
        type=_positive_float,
        nargs="+",
        metavar="LR",
        help="with --steps: train once per learning rate and compare them (replaces --lr)",
    )
    parser.add_argument(
        "--train-biases", action="store_true", help="with --steps: update b1 and b2 too"
    )
    parser.add_argument(
        "--method",
        choices=("formulas", "engine"),
        help="with --steps: gradients from the delta formulas (fast, default) or the engine",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--metrics", metavar="PATH", help="with --steps: write E per step (CSV)")
    parser.add_argument("--plot", metavar="PATH", help="with --steps: write the loss curve (PNG)")
    return parser


def _format_worked_example(ex: WorkedExample) -> str:
    x, t, p, fp = ex.inputs, ex.targets, ex.params, ex.forward
    lines = [
        "The 2-2-2 network: f(x) = 1 / (1 + e^-x), E = 1/2 (o1 - target1)^2 + 1/2 (o2 - target2)^2",
        f"inputs x1 = {x['x1']:g}, x2 = {x['x2']:g}; targets target1 = {t['target1']:g}, "
        f"target2 = {t['target2']:g}; biases b1 = {p['b1']:g}, b2 = {p['b2']:g} (held fixed)",
        "",
        "Forward pass",
        f"  z1 = x1*w1 + x2*w3 + b1         = {fp.z1:.9f}    f(z1)      = {fp.f_z1:.9f}",
        f"  z2 = x1*w2 + x2*w4 + b1         = {fp.z2:.9f}    f(z2)      = {fp.f_z2:.9f}",
        f"  i1 = f(z1)*w5 + f(z2)*w7 + b2   = {fp.i1:.9f}    o1 = f(i1) = {fp.o1:.9f}",
        f"  i2 = f(z1)*w6 + f(z2)*w8 + b2   = {fp.i2:.9f}    o2 = f(i2) = {fp.o2:.9f}",
        f"  E = {fp.E:.9f}",
        "",
        f"Gradients (delta formulas and engine) and one update w+ = w - {ex.lr:g} * dE/dw",
        f"  {'':4}{'w':>8}  {'dE/dw (formulas)':>18}  {'dE/dw (engine)':>18}  {'w+':>13}",
    ]
    for name in WEIGHT_NAMES:
        lines.append(
            f"  {name:<4}{p[name]:>8.4f}  {ex.grads[name]:>18.12f}  "
            f"{ex.grads_engine[name]:>18.12f}  {ex.weights_after[name]:>13.9f}"
        )
    return "\n".join(lines)


def _report_steps(steps: int) -> list[int]:
    """Steps worth printing: 0, 1, 10, 100, ... up to ``steps``, and ``steps`` itself."""
    marks = [0]
    k = 1
    while k < steps:
        marks.append(k)
        k *= 10
    if steps > 0:
        marks.append(steps)
    return marks


def _run_steps(args: argparse.Namespace) -> int:
    lrs = args.lrs or [args.lr]
    method = args.method or "formulas"
    runs = learning_rate_sweep(lrs, args.steps, train_biases=args.train_biases, method=method)
    if args.metrics:
        from llmcourse.metrics import MetricsLogger

        logger = MetricsLogger(args.metrics, append=False)
        for lr, run in runs.items():
            for step, error in enumerate(run.history):
                logger.log({"lr": lr, "step": step, "E": error})
    if args.plot:
        from llmcourse.plots import close, plot_curves

        fig = plot_curves(
            {f"lr = {lr:g}": run.history for lr, run in runs.items()},
            xlabel="gradient-descent step",
            ylabel="total error E",
            title="The 2-2-2 network: E during gradient descent",
            logy=True,
            path=args.plot,
        )
        close(fig)
    if args.json:
        print(json.dumps(_steps_json(runs, single=args.lrs is None)))
        return 0
    trained = "weights and biases" if args.train_biases else "weights (biases fixed)"
    print(f"Gradient descent on the 2-2-2 network, {args.steps} steps, training the {trained}")
    for lr, run in runs.items():
        print(f"learning rate {lr:g}")
        for step in _report_steps(args.steps):
            print(f"  E after {step:>7} steps = {run.history[step]:.10g}")
    for path, what in [(args.metrics, "metrics"), (args.plot, "plot")]:
        if path:
            print(f"{what} written to {path}", file=sys.stderr)
    return 0


def _steps_json(runs: dict[float, TrainingRun], single: bool) -> dict[str, object]:
    def one(run: TrainingRun) -> dict[str, object]:
        names = WEIGHT_NAMES + (BIAS_NAMES if run.train_biases else ())
        return {
            "lr": run.lr,
            "steps": run.steps,
            "E": run.final_error,
            "history": run.history,
            "weights": {name: run.params[name] for name in names},
        }

    if single:
        return one(next(iter(runs.values())))
    return {"runs": [one(run) for run in runs.values()]}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (``sys.argv[1:]`` by default), run, and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worked_example:
        ignored = [
            flag
            for flag, used in [
                ("--lrs", args.lrs),
                ("--train-biases", args.train_biases),
                ("--method", args.method),
                ("--metrics", args.metrics),
                ("--plot", args.plot),
            ]
            if used
        ]
        if ignored:
            parser.error(f"{', '.join(ignored)} need(s) --steps, not --worked-example")
        ex = worked_example(args.lr)
        print(json.dumps(ex.to_dict()) if args.json else _format_worked_example(ex))
        return 0
    return _run_steps(args)


if __name__ == "__main__":
    sys.exit(main())

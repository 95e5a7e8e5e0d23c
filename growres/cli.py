"""The ``growres`` command line: one subcommand per job, each ``x_command_parser`` + ``x_command``."""
import argparse
import sys

import timm

from . import __version__
from .errors import GrowresError
from .growth import GROWTH_STRATEGIES, registered_adapters

__all__ = ["main"]


def list_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="List the registered growres models (or, with --families, every "
                                                "model family growth knows; with --strategies, the growth "
                                                "strategies).")
    parser.add_argument("--num-classes", type=int, default=10, help="Classes for the parameter count (default 10).")
    parser.add_argument("--families", action="store_true",
                        help="List the model families growth knows (its registered adapters), with example models.")
    parser.add_argument("--strategies", action="store_true",
                        help="List the growth strategies (--strategy of growres train): where each puts the new "
                             "blocks and how it scales the residual branches and h.")
    parser.set_defaults(func=list_command)


def list_command(args: argparse.Namespace) -> None:
    if args.families:
        _print_table([("family", "example models", "what")] + [
            (adapter.name, ", ".join(adapter.examples) or "-", adapter.description or "-")
            for adapter in registered_adapters()
        ])
        return
    if args.strategies:
        _print_table([("strategy", "new blocks", "new branch x", "old branch x", "h x", "what")] + [
            (s.name, s.placement.__name__.replace("_", " "), f"{s.new_branch_scale:g}", f"{s.old_branch_scale:g}",
             f"{s.step_factor:g}", s.description)
            for s in GROWTH_STRATEGIES
        ])
        return
    rows = [("model", "blocks", "h", "growth plan", "params")]
    for name in timm.list_models("growres_*"):
        model = timm.create_model(name, num_classes=args.num_classes)
        plan = model.growth_plan
        growth = "-" if not plan.interpolations else (
            f"{plan.interpolations}x -> {'-'.join(map(str, plan.final_layers))}, h={plan.final_step_size:g}"
        )
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, "-".join(map(str, model.layers)), f"{model.step_size:g}", growth, f"{params:,}"))
    _print_table(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _subcommands():
    """Each module that adds a subcommand, imported here so ``import growres`` stays light."""
    from . import hub, train
    from .analysis import analyze_command_parser
    return [list_command_parser, train.train_command_parser, hub.push_to_hub_command_parser, analyze_command_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="growres",
        description="Multi-level residual networks: grow ResNets during training (Chang et al., ICLR 2018).",
    )
    parser.add_argument("--version", action="version", version=f"growres {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_parser in _subcommands():
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # flags that check their own values raise GrowresError
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        args.func(args)
    except GrowresError as err:
        print(f"growres: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("growres: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

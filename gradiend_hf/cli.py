"""The `gradiend` command: each subcommand is a dataclass of documented arguments calling the public API.

The subcommands live in `cli_gradiend.py` (GRADIEND models) and `cli_adapters.py` (adapters, benchmarks, the
demo); this module turns their fields into argparse options and runs them, one line per user error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence

from .cli_adapters import Apply, Bench, Compare, Demo, Export, Merge, Push
from .cli_gradiend import Encode, Evaluate, Info, Models, Search, Train
from .cli_support import option_flag

COMMANDS: dict[str, type] = {"models": Models, "info": Info, "train": Train, "push": Push, "evaluate": Evaluate,
                             "encode": Encode, "export": Export, "apply": Apply, "merge": Merge,
                             "search": Search, "bench": Bench, "demo": Demo, "compare": Compare}

EXAMPLES: dict[str, str] = {
    "models": "example:\n  gradiend models",
    "info": "example:\n  gradiend info runs/gender\n  gradiend info me/gemma-gradiend-gender",
    "train": "example:\n  gradiend train --model gemma-3-270m --feature gender --out runs/gender\n"
             "  gradiend train --model smollm2-135m --feature religion:christian,muslim --steps 100 --out runs/rel\n"
             "  gradiend train --model ./my-model --feature my_feature.jsonl --params 'model.layers.*.mlp.*' "
             "--out runs/mine\n"
             "  gradiend train --params paper --num-processes 2 --fsdp --out runs/paper   # GRADIEND split over 2",
    "demo": "example:\n  gradiend demo --out runs/demo                 # gender on Gemma 3 270M, about 25 minutes\n"
            "  gradiend demo --quick --out runs/demo-quick   # a few minutes\n"
            "  gradiend demo --feature race:white,black --out runs/demo-race",
    "compare": "example:\n  gradiend compare --model gemma-3-270m --feature gender "
               "--gradiend-adapter runs/demo/adapter --out runs/compare\n"
               "  gradiend compare --quick --methods gradiend inlp gradiend+inlp --out runs/cmp-quick\n"
               "  gradiend compare --glue /path/to/glue --out runs/compare",
    "bench": "example:\n  gradiend bench --model gemma-3-270m --adapter runs/demo/adapter --bias-types gender "
             "--out runs/bench\n  gradiend bench --model smollm2-135m --suite stereoset,lm_score --limit 50",
    "export": "example:\n  gradiend export runs/gender --h -1 --alpha 0.01 --out out/debias --lora exact\n"
              "  gradiend export runs/gender --h 0 --alpha 0.01 --dial --out out/gender-dial",
    "apply": "example:\n  gradiend apply out/debias --out out/gemma-debiased\n"
             "  gradiend apply out/gender-dial --h -0.5 --alpha 0.02 --out out/gemma-dialled",
    "merge": "example:\n  gradiend merge out/gender out/race --weights 1 0.5 --method ties --out out/gender+race",
    "push": "example:\n  gradiend push runs/gender me/gemma-gradiend-gender\n"
            "  gradiend push out/debias me/gemma-debias\n  gradiend push out/debias-lora me/gemma-debias-lora",
    "evaluate": "example:\n  gradiend evaluate runs/gradiend --max-per-group 100\n"
                "  gradiend evaluate me/gemma-gradiend-gender --model gemma-3-270m --out eval/gender",
    "search": "example:\n  gradiend search runs/gradiend\n"
              "  gradiend search runs/gradiend --h -1 0 1 --alpha ±0.01 ±0.001 --max-texts 64 --out runs/search",
    "encode": "example:\n  gradiend encode runs/gradiend \"Mary said that [MASK] would come.\" "
              "\"John said that [MASK] would come.\"\n"
              "  gradiend encode runs/gradiend \"The doctor said that [MASK] was late.\" --target she",
}
"""Usage examples shown at the end of a command's --help."""


def _add_arguments(parser: argparse.ArgumentParser, command: type) -> None:
    hints = typing.get_type_hints(command)
    for f in dataclasses.fields(command):
        hint = hints[f.name]
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs=f.metadata.get("nargs"), help=help_text)
            continue
        flag = option_flag(f)
        if hint is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if typing.get_origin(hint) is list:
            parser.add_argument(flag, nargs=f.metadata.get("nargs", "+"), default=[], help=help_text)
            continue
        default = None if required else f.default
        parser.add_argument(flag, type=base, default=default, required=required,
                            help=f"{help_text} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradiend", description="GRADIEND feature neurons for Hugging Face models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        _add_arguments(sub.add_parser(name, help=command.__doc__, description=command.__doc__,
                                      epilog=EXAMPLES.get(name),
                                      formatter_class=argparse.RawDescriptionHelpFormatter), command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parsed = vars(build_parser().parse_args(argv))
    command = COMMANDS[parsed.pop("command")](**parsed)
    from .errors import GradiendError

    try:
        return command.run()
    except GradiendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; the traceback on request (an unexpected error is a bug)
        if os.environ.get("GRADIEND_TRACEBACK"):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"error: {type(error).__name__}: {first} (unexpected; set GRADIEND_TRACEBACK=1 for the traceback and "
              f"please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

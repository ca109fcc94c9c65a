"""The plugin's components and their options.

    python -m fairseq_r3f                          # what the plugin registers in fairseq
    python -m fairseq_r3f sentence_prediction_r3f  # the options of one criterion or task, with their help

fairseq-train prints its help before it reads --criterion or --task, so the options of a chosen criterion
never show in ``fairseq-train --help``; this prints them from the same dataclasses fairseq-train parses.
"""

import argparse
import sys

import fairseq_r3f  # noqa: F401  (registers everything)
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.registry import REGISTRIES
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY


def _ours(registry):
    return sorted(name for name, cls in registry.items() if cls.__module__.startswith("fairseq_r3f"))


def components():
    return {
        "criterion": _ours(REGISTRIES["criterion"]["registry"]),
        "task": _ours(TASK_REGISTRY),
        "arch": _ours(ARCH_MODEL_REGISTRY),
    }


def options_parser(name: str) -> argparse.ArgumentParser:
    dataclass = REGISTRIES["criterion"]["dataclass_registry"].get(name) or TASK_DATACLASS_REGISTRY.get(name)
    if dataclass is None or name not in components()["criterion"] + components()["task"]:
        known = ", ".join(components()["criterion"] + components()["task"])
        raise SystemExit(f"fairseq_r3f: {name!r} is not a criterion or task of the plugin (known: {known})")
    kind = "criterion" if name in components()["criterion"] else "task"
    parser = argparse.ArgumentParser(
        prog=f"fairseq-train --user-dir fairseq_r3f --{kind} {name}", add_help=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(dataclass.__doc__ or "").strip() if kind == "task" else None,
    )
    gen_parser_from_dataclass(parser, dataclass())
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n")
        for kind, names in components().items():
            print(f"--{kind}: {', '.join(names)}")
        return
    options_parser(argv[0]).print_help()


if __name__ == "__main__":
    main()

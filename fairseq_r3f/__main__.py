"""The plugin's components and their options.

    python -m fairseq_r3f                          # what the plugin registers in fairseq
    python -m fairseq_r3f sentence_prediction_r3f  # the options of one criterion or task, with their help
    python -m fairseq_r3f roberta_sn_large         # an architecture: its model family and the values it sets

fairseq-train prints its help before it reads --criterion, --task or --arch, so the options of a chosen
component never show in ``fairseq-train --help``; this prints them from the same dataclasses and ``add_args``
fairseq-train parses.
"""

import argparse
import inspect
import sys
import textwrap

import fairseq_r3f  # noqa: F401  (registers everything)
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.registry import REGISTRIES
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY


def _ours(registry):
    return sorted(name for name, cls in registry.items() if cls.__module__.startswith("fairseq_r3f"))


def components():
    return {
        "criterion": _ours(REGISTRIES["criterion"]["registry"]),
        "task": _ours(TASK_REGISTRY),
        "model": _ours(MODEL_REGISTRY),
        "arch": _ours(ARCH_MODEL_REGISTRY),
    }


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the description (a module docstring) printed as written."""


def description(cls) -> str:
    """What a component's module docstring says (each component lives in a module that explains it), else
    the class's own docstring. Never a docstring inherited from fairseq, nor the signature that @dataclass
    writes into a class without one (what a dataclass's ``__doc__`` holds)."""
    doc = sys.modules[cls.__module__].__doc__ or cls.__dict__.get("__doc__") or ""
    return inspect.cleandoc(doc)


def _parser(prog: str, text: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, add_help=False, formatter_class=_HelpFormatter, description=text,
                                   conflict_handler="resolve")


def options_parser(name: str) -> argparse.ArgumentParser:
    found = components()
    if name in found["criterion"]:
        kind, cls = "criterion", REGISTRIES["criterion"]["registry"][name]
        dataclass = REGISTRIES["criterion"]["dataclass_registry"][name]
    elif name in found["task"]:
        kind, cls, dataclass = "task", TASK_REGISTRY[name], TASK_DATACLASS_REGISTRY.get(name)
    elif name in found["arch"] or name in found["model"]:
        return model_parser(name)
    else:
        known = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in found.items())
        raise SystemExit(f"fairseq_r3f: {name!r} is not a criterion, task, model or architecture of the plugin "
                         f"({known})")
    parser = _parser(f"fairseq-train --user-dir fairseq_r3f --{kind} {name}", description(cls))
    if dataclass is None:  # an argparse task (translation_from_pretrained_mbart, as fairseq's original)
        cls.add_args(parser)
    else:
        gen_parser_from_dataclass(parser, dataclass())
    return parser


def model_family(model_cls) -> str:
    """The fairseq model the plugin's model extends (the first registered class it inherits), named."""
    names = {}
    for registered, cls in sorted(MODEL_REGISTRY.items()):
        names.setdefault(cls, registered)
    base = next(base for base in model_cls.__mro__[1:] if base in names)
    return f"fairseq's model {names[base]} ({base.__name__})"


def model_parser(name: str) -> argparse.ArgumentParser:
    """The options of a model of the plugin, or of an architecture with the values it sets as their defaults."""
    if name in ARCH_MODEL_REGISTRY:
        model_cls = ARCH_MODEL_REGISTRY[name]
        model_name = next(model for model, cls in MODEL_REGISTRY.items() if cls is model_cls)
        set_by_arch = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[name](set_by_arch)
        head = (f"--arch {name}: an architecture of the model {model_name}, which extends "
                f"{model_family(model_cls)}. The defaults below are the values this architecture sets; any flag "
                f"overrides them.")
    else:
        model_cls, model_name, set_by_arch = MODEL_REGISTRY[name], name, argparse.Namespace()
        archs = sorted(arch for arch, cls in ARCH_MODEL_REGISTRY.items() if cls is model_cls)
        head = f"model {name}, which extends {model_family(model_cls)}; its architectures: {', '.join(archs)}"
    parser = _parser(f"fairseq-train --user-dir fairseq_r3f --arch {name}",
                     textwrap.fill(head, 110) + "\n\n" + description(model_cls))
    model_cls.add_args(parser)
    flags = {action.dest for action in parser._actions}
    parser.set_defaults(**{key: value for key, value in vars(set_by_arch).items() if key in flags})
    others = sorted(key for key in vars(set_by_arch) if key not in flags)
    if others:
        parser.epilog = "also set by the architecture (not flags): " + ", ".join(
            f"{key}={getattr(set_by_arch, key)!r}" for key in others)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n")
        for kind, names in components().items():
            print(f"{'models (chosen by --arch)' if kind == 'model' else '--' + kind}: {', '.join(names)}")
        return
    options_parser(argv[0]).print_help()


if __name__ == "__main__":
    main()

"""Makes ``fairseq-hydra-train`` know fairseq-r3f before it composes a config.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts, before composition.
Inside a fairseq program (fairseq is already imported) this module then

- imports the plugin, so that ``criterion: {_name: sentence_prediction_r3f}`` and the ``*_sn_*`` architectures
  are registered: fairseq's sentence_prediction task interpolates ``criterion.regression_target`` and
  ``criterion.classification_head_name``, which fail to resolve while the criterion is unknown;
- puts the plugin's config folders (fairseq_r3f/config/{glue,xnli,summarization}) on Hydra's search path, so
  ``--config-name rte_r3f`` also works without ``--config-dir``;
- refuses a command-line override that makes one of the plugin's configs another method than its name says
  (``rte_r4f model._name=roberta_large`` would train a plain head, which is R3F), before anything runs;
- runs each of the plugin's configs (rte_r3f, xnli_std, cnn_dm_r3f, ...) through the run layer
  (``r3f_runs.hydra.launch_composed``): fairseq-hydra-train's ``_hydra_main`` is wrapped, so that
  checkpoint.save_dir is locked while it trains and gets run.json, versions.json, command.sh, train.log,
  identity.json and ``done`` as a recipe's run folder does, and the result tables take it. Configs of other
  names train as fairseq has them, unrecorded.

Other Hydra programs are left alone: neither fairseq nor the plugin is imported (only the run layer's
standard-library modules, for the method vocabulary) and the search path is unchanged.
"""

import importlib.util
import os
import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

# the run layer's light modules (the standard library only): the method vocabulary and the shipped configs
from r3f_runs.tables import hydra_config_family
from r3f_runs.values import Stop
from r3f_runs.vocabulary import (
    HYDRA_CONFIG_METHODS, HYDRA_SUMMARIZATION_DATASETS, SENTENCE_METHODS, SEQ2SEQ_CRITERION, is_outproj_sn_arch,
    is_sn_arch,
)


# Each folder goes on the search path by itself: fairseq-hydra-train matches the primary config against its
# schema by the config's name, which must therefore be a plain name (rte_r3f), not glue/rte_r3f.
CONFIG_FOLDERS = ("glue", "xnli", "summarization")


def _in_fairseq() -> bool:
    return "fairseq" in sys.modules


def config_name(argv):
    """The config name fairseq-hydra-train's command line gives (--config-name / -cn), or None."""
    name = None
    for i, arg in enumerate(argv):
        if arg in ("--config-name", "-cn") and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--config-name="):
            name = arg.split("=", 1)[1]
    return name


def method_override_problem(argv) -> str:
    """What in ``argv`` (fairseq-hydra-train's command line) contradicts the method its config name says, or a
    value that is not a finite number; '' when nothing does."""
    name = config_name(argv)
    for arg in argv:  # optimization.lr=[nan] trains an update before fairseq stops on a FloatingPointError
        key, _, value = arg.lstrip("+~").partition("=")
        if key and not key.startswith("-") and "max_norm" not in key:
            for item in value.strip("[]").split(","):
                try:
                    number = float(item)
                except ValueError:
                    continue
                if number != number or number in (float("inf"), float("-inf")):
                    return f"{arg}: {item.strip()} is not a finite number: give one"
    # the method a config name says (rte_r4f, xnli_std, cnn_dm_r3f); summarization names start with a dataset
    method = HYDRA_CONFIG_METHODS.get((name or "").rsplit("_", 1)[-1])
    if method is None:
        return ""
    summarization = name.startswith(tuple(dataset + "_" for dataset in HYDRA_SUMMARIZATION_DATASETS))
    criterion = SEQ2SEQ_CRITERION if summarization else SENTENCE_METHODS[method][0]
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "model._name" and is_outproj_sn_arch(value):
            return (f"{arg} is fairseq's released out_proj-only head, which is not {name}'s {method}: drop it "
                    f"(recipes/glue.sh RTE r4f-released runs that head)")
        if key == "model._name" and is_sn_arch(value) != (method == "r4f"):
            head = "drops R4F's spectrally normalised head from" if method == "r4f" else \
                "adds R4F's spectrally normalised head to"
            return (f"{arg} {head} {name}, which is {method}: drop it (or run the config of the method you "
                    f"mean, e.g. {name.rsplit('_', 1)[0]}_{'r3f' if method == 'r4f' else 'r4f'})")
        if key == "criterion._name" and value != criterion:
            return f"{arg} replaces {name}'s criterion {criterion}: drop it, or run the config of that method"
    return ""


def _hydra_train_modules():
    """fairseq-hydra-train's module as it runs: fairseq_cli.hydra_train (the console script), or __main__ under
    ``python -m fairseq_cli.hydra_train``."""
    found = [sys.modules.get("fairseq_cli.hydra_train")]
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "fairseq_cli.hydra_train":
        found.append(main)
    return [module for module in found if module is not None and callable(getattr(module, "_hydra_main", None))]


def install_run_layer(argv) -> None:
    """Wraps fairseq-hydra-train's ``_hydra_main`` (which its ``hydra_main`` looks up at call time) so that a
    run of one of the plugin's configs goes through r3f_runs.hydra.launch_composed."""
    name = config_name(argv)
    if hydra_config_family(name or "") is None:
        return
    for module in _hydra_train_modules():
        original = module._hydra_main
        if getattr(original, "fairseq_r3f_run_layer", False):
            continue

        def _hydra_main(cfg, _original=original, **kwargs):
            # imported when a run starts: r3f_runs.hydra imports fairseq, which other Hydra programs never load
            from r3f_runs.hydra import launch_composed

            try:
                return launch_composed(cfg, lambda c: _original(c, **kwargs), name, list(argv))
            except Stop as stop:
                print(f"error: {stop}", file=sys.stderr)
                sys.exit(stop.status)

        _hydra_main.fairseq_r3f_run_layer = True
        module._hydra_main = _hydra_main


if _in_fairseq():
    import fairseq_r3f  # noqa: F401  (registers the criterions, tasks and architectures)

    _problem = method_override_problem(sys.argv[1:])
    if _problem:
        print(f"error: {_problem}", file=sys.stderr)
        sys.exit(2)
    install_run_layer(sys.argv[1:])


class FairseqR3FSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not _in_fairseq():
            return
        spec = importlib.util.find_spec("fairseq_r3f")
        if spec is None or not spec.submodule_search_locations:
            return
        config_dir = os.path.join(list(spec.submodule_search_locations)[0], "config")
        for folder in CONFIG_FOLDERS:
            search_path.append(provider="fairseq-r3f", path="file://" + os.path.join(config_dir, folder))

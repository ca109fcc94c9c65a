"""Makes ``fairseq-hydra-train`` know fairseq-r3f before it composes a config.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts, before composition.
Inside a fairseq program (fairseq is already imported) this module then

- imports the plugin, so that ``criterion: {_name: sentence_prediction_r3f}`` and the ``*_sn_*`` architectures
  are registered: fairseq's sentence_prediction task interpolates ``criterion.regression_target`` and
  ``criterion.classification_head_name``, which fail to resolve while the criterion is unknown;
- puts the plugin's config folders (fairseq_r3f/config/{glue,xnli,summarization}) on Hydra's search path, so
  ``--config-name rte_r3f`` also works without ``--config-dir``.

Other Hydra programs are left alone: nothing is imported and the search path is unchanged.
"""

import importlib.util
import os
import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


# Each folder goes on the search path by itself: fairseq-hydra-train matches the primary config against its
# schema by the config's name, which must therefore be a plain name (rte_r3f), not glue/rte_r3f.
CONFIG_FOLDERS = ("glue", "xnli", "summarization")


def _in_fairseq() -> bool:
    return "fairseq" in sys.modules


if _in_fairseq():
    import fairseq_r3f  # noqa: F401  (registers the criterions, tasks and architectures)


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

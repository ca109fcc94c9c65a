"""Hydra configs for ``fairseq-hydra-train``, one YAML per experiment, shaped like fairseq's own
``examples/roberta/config/finetuning/*.yaml``:

- ``glue/<task>_{stdpp,r3f,r4f}.yaml``: the eight GLUE tasks, STD++ / R3F / R4F (paper Tables 5 and 6);
- ``xnli/xnli_{std,r3f,r4f}.yaml``: zero-shot XNLI with XLM-R large (Table 9);
- ``summarization/{cnn_dm,gigaword,reddit_tifu}_r3f.yaml``: BART-large with R3F (Tables 7 and 8).

The files are written from the hyper-parameter tables in ``fairseq_r3f/hparams`` by
``python -m fairseq_r3f.config.generate`` (the same values the recipes use); edit the tables, not the YAML.
"""

import os

# The folder that holds glue/, xnli/ and summarization/ (for fairseq-hydra-train --config-dir).
CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))

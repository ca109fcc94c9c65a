"""Probing for representational collapse (Section 4 of the paper), one driver per experiment:

    python -m fairseq_r3f.probing.generalisation   Figure 3: fine-tune on SST-2, probe the other GLUE tasks
    python -m fairseq_r3f.probing.degradation      Figure 4: SST-2 -> QNLI -> QQP -> RTE, probe SST-2 each step
    python -m fairseq_r3f.probing.retention        Figure 5: the same chain for three cycles, probe each task

A probe is ``fairseq-train --task sentence_prediction_probe`` (fairseq_r3f/tasks/probing.py). The methods'
flags are in methods.py; the run/resume machinery in runner.py; the figures in plots.py. See docs/probing.md.
"""

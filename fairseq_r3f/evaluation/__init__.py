"""Scoring and result tables, over the run folders r3f_runs writes.

    results.py         python -m fairseq_r3f.evaluation.results glue | split-dev | xnli   (Tables 2 and 3)
    selection.py       what enters a table: finished runs, best rounds, cells by effective configuration
    glue.py  xnli.py   the GLUE and XNLI tables and figures
    rouge.py  bleu.py  tokenized_bleu.py   summarization and translation scores and their tables
    generation.py      fairseq-generate runs, cached under their inputs' key
"""

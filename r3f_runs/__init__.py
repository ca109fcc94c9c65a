"""The run layer under the recipes: plan -> launch -> record -> verify -> done.

    python -m r3f_runs glue TASK METHOD [fairseq-train flags]   (recipes/*.sh hand over to this; see cli.py)
    python -m r3f_runs status RUN_DIR                           (and versions, identify RUN_DIR)

Layout, top to bottom. A module imports only from the floors below it (and from the plugin, fairseq_r3f, below
them all); no import waits inside a function to dodge a circle. Only fairseq and torch are imported late, where a
light path (planning, a dry run) must not pay for them, and each place says so.

    cli.py  hydra.py        the entry points: the recipes' command line; fairseq-hydra-train's runs
                            (hydra_plugins/fairseq_r3f_plugin hands them over)
    launching.py            launch, record and verify a plan's runs, one by one
    planners.py             one recipe invocation -> its Plan
    plan_glue.py  plan_xnli.py  plan_summarization.py  plan_translation.py
                            one planner a recipe family: functions of (arguments, environment, tables) that
                            write nothing, read only whether their inputs exist, and import no fairseq
    plan.py  settings.py    a Plan, its runs and search grid; the environment's settings and the checks on them
    status.py               a run's status, and ``labelled_runs``: how every table reads run folders
    identity.py  configuration.py  train_log.py
                            what a run trained (from its checkpoint) and its effective configuration; its log
    folder.py               the run folder's files, atomic writes, the lock
    tables.py  vocabulary.py  values.py
                            the hyper-parameter tables; the method vocabulary every floor reads; flags and numbers

One rule a floor: the planners read tables and settings and write nothing; a run folder's own files (run.json,
versions.json, command.sh, identity.json, done, lock) are written by launching, hydra and identify only, always
through folder.py (atomic writes, the lock); status only reads; the result tables (fairseq_r3f.evaluation) find
and read run folders through status.py, and add nothing there but their own cached scores.
"""

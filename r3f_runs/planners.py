"""One recipe invocation's plan: the planner of its family, then the checks every plan gets (finite values,
half precision where it can train, the swept names as configuration keys).
"""

from typing import List, Mapping, Optional, Sequence

from r3f_runs.plan import Plan
from r3f_runs.plan_glue import plan_glue
from r3f_runs.plan_summarization import plan_summarization
from r3f_runs.plan_translation import plan_translation
from r3f_runs.plan_xnli import plan_xnli
from r3f_runs.settings import Settings, check_precision
from r3f_runs.tables import HPARAMS, Tables
from r3f_runs.values import check_finite, die
from r3f_runs.vocabulary import RECIPES


PLANNERS = {"glue": plan_glue, "xnli": plan_xnli, "summarization": plan_summarization,
            "translation": plan_translation}
# run.json's "swept" names effective-configuration keys
SWEPT_KEYS = {"lr": "optimization.lr", "r3f_lambda": "criterion.r3f_lambda", "noise_type": "criterion.noise_type",
              "eps": "criterion.eps"}


def make_plan(recipe: str, args: Sequence[str], env: Mapping[str, str], hparams: Optional[str] = None,
              notes: Optional[List[str]] = None) -> Plan:
    """The plan of one recipe invocation: every run's fairseq-train arguments (raises Stop on a wrong input).
    ``notes`` receives the lines for stderr as they come (also those before a Stop)."""
    if recipe not in PLANNERS:
        die(f"unknown recipe {recipe}: choose {', '.join(RECIPES)}")
    settings = Settings(env)
    if notes is not None:
        settings.notes = notes
    plan = PLANNERS[recipe](list(args), settings, Tables(hparams or HPARAMS))
    check_finite(plan.overrides, "a flag after the recipe's arguments")
    check_precision(settings, plan.overrides)
    plan.swept = [SWEPT_KEYS.get(k, "criterion." + k) for k in plan.swept]
    if settings.tiny:
        plan.env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or "1"
    return plan

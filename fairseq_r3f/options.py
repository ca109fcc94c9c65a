"""The one check of the numbers users pass to the plugin's criterions and tasks."""

import dataclasses
import math
from typing import Optional, Sequence


def check_options(cfg, config_class, counts: Sequence[str] = (), inf_allowed: Sequence[str] = ()) -> None:
    """Stops on the first bad number among the options of ``config_class`` (a dataclass; its fairseq
    parents' fields included) as set in ``cfg``: a float option that is NaN, infinite (unless named in
    ``inf_allowed``, where inf has a documented meaning) or negative -- every float option of the plugin is
    a weight, a scale, a radius or a step -- and a negative integer among ``counts``."""
    for option in dataclasses.fields(config_class):
        value = getattr(cfg, option.name, None)
        flag = "--" + option.name.replace("_", "-")
        if option.type in (float, Optional[float]) and value is not None:
            if option.name in inf_allowed:
                if math.isnan(value) or value < 0:
                    raise ValueError(f"{flag} must be a number >= 0 or inf (got {value})")
            elif not math.isfinite(value) or value < 0:
                raise ValueError(f"{flag} must be a finite number >= 0 (got {value})")
        if option.name in counts and value < 0:
            raise ValueError(f"{flag} must be >= 0 (got {value})")

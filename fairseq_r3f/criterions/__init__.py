"""fairseq imports a --user-dir's models/ and tasks/ by itself, but not criterions/: the package's
__init__ imports these modules so that their @register_criterion runs."""

from fairseq_r3f.criterions import sentence_prediction_r3f  # noqa: F401
from fairseq_r3f.criterions import label_smoothed_cross_entropy_r3f  # noqa: F401
from fairseq_r3f.criterions import sentence_prediction_smart  # noqa: F401
from fairseq_r3f.criterions import sentence_prediction_freelb  # noqa: F401

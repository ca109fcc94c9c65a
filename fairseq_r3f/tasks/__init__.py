"""Tasks of the plugin (fairseq imports every module here for --user-dir)."""

from fairseq_r3f.tasks import probing  # noqa: F401
from fairseq_r3f.tasks import freelb  # noqa: F401
from fairseq_r3f.tasks import mbart_translation  # noqa: F401

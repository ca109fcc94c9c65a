from fairseq_r3f.models import bart_sn, roberta_sn  # noqa: F401

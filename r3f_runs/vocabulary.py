"""The method vocabulary: one table of facts that the planners, the hydra path, the probing drivers and the
result tables all read.

Which recipes there are, the GLUE methods (the paper's and the authors' released configurations), the criterion,
task and classification head each method needs (``SENTENCE_METHODS``), the plugin's spectrally normalised
architectures and how to name them, the names of the plugin's hydra configs, and how a table names a method. The
standard library only: nothing here reads a file.
"""


RECIPES = ("glue", "xnli", "summarization", "translation")
GLUE_TASKS_ORDER = "MNLI QNLI QQP SST-2 RTE MRPC CoLA STS-B"
# The authors' released command (fairseq examples/rxf/README.md, hparams/glue_released.tsv) in its two computations:
# *-readme its flags with the noise reaching the encoder, *-released as the released code computed it (the noise
# dropped: RoBERTa's encoder never received it).
RXF_METHODS = ("r3f-readme", "r4f-readme", "r3f-released", "r4f-released")
GLUE_METHODS = ("std", "std++", "r3f", "r4f", "smart", "freelb", *RXF_METHODS, "smart-released")
# The authors' released configurations (those and glue.tsv's smart_released_*): never the paper's r3f / r4f / smart,
# whose names they carry with "-readme" or "-released" in every label and table.
RELEASED_METHODS = (*RXF_METHODS, "smart-released")
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
# method -> (criterion, fairseq task or None: the recipe's, spectrally normalised head: True for R4F's (every
# head matrix, the plugin's *_sn_* architectures), OUTPROJ_HEAD for fairseq's released one (--spectral-norm-
# classification-head: out_proj only, the plugin's *_sn_outproj_* architectures), False for a plain head)
OUTPROJ_HEAD = "outproj"
SENTENCE_METHODS = {
    "std": ("sentence_prediction", None, False),
    "std++": ("sentence_prediction", None, False),
    "r3f": ("sentence_prediction_r3f", None, False),
    "r4f": ("sentence_prediction_r3f", None, True),
    "smart": ("sentence_prediction_smart", None, False),
    "freelb": ("sentence_prediction_freelb", "sentence_prediction_freelb", False),
    "r3f-readme": ("sentence_prediction_r3f", None, False),
    "r4f-readme": ("sentence_prediction_r3f", None, OUTPROJ_HEAD),
    "r3f-released": ("sentence_prediction_r3f", None, False),
    "r4f-released": ("sentence_prediction_r3f", None, OUTPROJ_HEAD),
    "smart-released": ("sentence_prediction_smart", None, False),
}
SEQ2SEQ_CRITERION = "label_smoothed_cross_entropy_r3f"


def is_sn_arch(arch: str) -> bool:
    """R4F's head (the plugin's roberta_sn_* / bart_sn_*); fairseq's released out_proj-only head is not it."""
    return "_sn_" in arch and not is_outproj_sn_arch(arch)


def is_outproj_sn_arch(arch: str) -> bool:
    """The released head of fairseq's --spectral-norm-classification-head (roberta_sn_outproj_* /
    bart_sn_outproj_*): R4F-released's, never R4F's."""
    return "_sn_outproj_" in arch


def head_of_arch(arch: str):
    """The head an architecture has, as SENTENCE_METHODS names it: True (R4F's), OUTPROJ_HEAD or False."""
    return OUTPROJ_HEAD if is_outproj_sn_arch(arch) else is_sn_arch(arch)


def sn_arch(arch: str) -> str:
    """roberta_large -> roberta_sn_large, bart_base -> bart_sn_base (the plugin's R4F architectures)."""
    if is_sn_arch(arch):
        return arch
    arch = plain_arch(arch)
    for family in ("roberta", "bart"):
        if arch.startswith(family + "_"):
            return family + "_sn_" + arch[len(family) + 1:]
    raise ValueError(
        f"R4F needs the spectrally normalised variant of --arch {arch}, and the plugin has roberta_sn_* and "
        f"bart_sn_* only: use a RoBERTa/XLM-R or BART architecture"
    )


def plain_arch(arch: str) -> str:
    """roberta_sn_large and roberta_sn_outproj_large -> roberta_large."""
    return arch.replace("_sn_outproj_", "_", 1).replace("_sn_", "_", 1)


def method_of_criterion(criterion: str) -> str:
    """The GLUE/XNLI method that trains with ``criterion``."""
    return {
        "sentence_prediction": "std++ (or std)",
        "sentence_prediction_r3f": "r3f (r4f with the SN head)",
        "sentence_prediction_smart": "smart",
        "sentence_prediction_freelb": "freelb (with --task sentence_prediction_freelb)",
        SEQ2SEQ_CRITERION: "recipes/summarization.sh",
    }.get(criterion, "one whose criterion it is")


HYDRA_SUMMARIZATION_DATASETS = ("cnn_dm", "gigaword", "reddit_tifu")
HYDRA_CONFIG_METHODS = {"stdpp": "std++", "std": "std", "r3f": "r3f", "r4f": "r4f"}
# The plugin's models whose classification head is spectrally normalised (R4F).
SN_MODELS = ("roberta_sn", "bart_sn")
# The plugin's models with fairseq's released head (out_proj only normalised): r4f-released, never r4f.
OUTPROJ_SN_MODELS = ("roberta_sn_outproj", "bart_sn_outproj")
# Criterion settings identity() records, besides every smart_* and freelb_* option.
CRITERION_SETTINGS = ("r3f_lambda", "noise_type", "eps", "r3f_kl_normalization")
# The methods' names in the tables.
METHOD_NAMES = {"std": "STD", "std++": "STD++", "smart": "SMART", "freelb": "FreeLB", "r3f": "R3F", "r4f": "R4F",
                "smart-released": "SMART-released (mt-dnn 682b9fb..1f43b6e)",
                "r3f-readme": "R3F-readme (rxf README flags, noise reaching the encoder)",
                "r4f-readme": "R4F-readme (rxf README flags, noise reaching the encoder, out_proj-only SN head)",
                "r3f-released": "R3F-released (as released: rxf README flags, no noise reached the encoder)",
                "r4f-released": "R4F-released (as released: rxf README flags, no noise reached the encoder, "
                                "out_proj-only SN head)"}

"""fairseq-r3f: R3F and R4F fine-tuning (Aghajanyan et al., ICLR 2021) for fairseq.

Load with ``fairseq-train --user-dir fairseq_r3f``, or ``import fairseq_r3f``. Registers the criterions
``sentence_prediction_r3f`` and ``label_smoothed_cross_entropy_r3f`` and the architectures
``roberta_sn_{base,large}`` and ``bart_sn_{base,large}``.
"""

__version__ = "0.1.0"

MIN_FAIRSEQ = (0, 12)


def _require_fairseq():
    try:
        import fairseq
    except ImportError as error:
        raise ImportError(
            "fairseq_r3f needs fairseq >= 0.12, which is not installed: run scripts/install.sh, or "
            "install fairseq (on Python >= 3.11: fairseq-fixed==0.12.3.1) into this environment"
        ) from error
    found = tuple(int(part) for part in fairseq.__version__.split(".")[:2] if part.isdigit())
    if found < MIN_FAIRSEQ:
        raise ImportError(
            f"fairseq_r3f needs fairseq >= 0.12, but fairseq {fairseq.__version__} is installed: upgrade it"
        )


from fairseq_r3f.tools import quiet_fairseq_import  # noqa: E402

with quiet_fairseq_import():
    _require_fairseq()

    from fairseq_r3f import checkpoints

    checkpoints.route_fairseq_loads()  # every checkpoint fairseq loads is loaded weights-only, with the allow-list

    from fairseq_r3f import compat

    compat.add_glue_metrics_where_missing()  # before the criteria that extend fairseq's sentence_prediction
    compat.keep_encoder_layers_off_a_broken_fast_path()
    compat.stop_buffer_threads_at_exit()  # or a run stopped mid-epoch can abort as the interpreter exits

    from fairseq_r3f import criterions, models, tasks  # noqa: F401

    compat.fill_architecture_defaults_where_omegaconf_hides_them()  # after the plugin's architectures

"""What differs between the fairseq releases the plugin runs on, detected from the code, never from versions.

GLUE's metrics. fairseq after 0.12.2 (main, fairseq-fixed) has ``--report-mcc``, ``--report-acc-and-f1`` and
``--report-pearson-and-spearman`` on its ``sentence_prediction`` criterion: the validation logs then carry
``mcc`` (CoLA), ``f1`` and ``acc_and_f1`` (MRPC, QQP), ``pearson``, ``spearman`` and ``pearson_and_spearman``
(STS-B). fairseq 0.12.2, the last release, has none of them. There, importing the plugin gives fairseq's
``sentence_prediction`` the same three options, computed the same way (the subset's predictions and targets are
gathered over the validation, then the metric is computed once on all of them, x 100, one decimal), so the
recipes, the hydra configs and the result tables are the same on every fairseq. The plugin's own criteria
(``sentence_prediction_r3f``, ``_smart``, ``_freelb``) extend that criterion and get them too.
"""

import dataclasses
from typing import List, Sequence

METRIC_FLAG_FIELDS = ("report_mcc", "report_acc_and_f1", "report_pearson_and_spearman")
# fairseq's own config class of each criterion the plugin extended in place: what plain fairseq reads (the export
# writes only its fields).
FAIRSEQ_OWN_CRITERION_CONFIGS = {}


def _sentence_prediction_fields() -> set:
    from fairseq.criterions.sentence_prediction import SentencePredictionConfig

    return {f.name for f in dataclasses.fields(SentencePredictionConfig)}


def supported_metric_flags(flags: Sequence[str]) -> List[str]:
    """The flags among ``flags`` (``--report-mcc``, ...) that fairseq's ``sentence_prediction`` takes once the
    plugin is loaded (on every fairseq the plugin supports: all three GLUE metric flags)."""
    names = [flag.lstrip("-").replace("-", "_") for flag in flags]
    if all(name in METRIC_FLAG_FIELDS for name in names):
        return list(flags)  # the plugin adds them where fairseq lacks them: no need to import fairseq to know
    import fairseq_r3f  # noqa: F401  (adds the metric options where fairseq lacks them)

    fields = _sentence_prediction_fields()
    return [flag for flag, name in zip(flags, names) if name in fields]


def add_glue_metrics_where_missing() -> bool:
    """Gives fairseq's ``sentence_prediction`` criterion the three GLUE metric options where it lacks them (fairseq
    0.12.2). Must run before any criterion that extends it is defined. Returns True when it changed fairseq."""
    if set(METRIC_FLAG_FIELDS) <= _sentence_prediction_fields():
        return False

    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
    from fairseq.criterions import sentence_prediction as module
    from hydra.core.config_store import ConfigStore

    base_config, base_criterion = module.SentencePredictionConfig, module.SentencePredictionCriterion
    FAIRSEQ_OWN_CRITERION_CONFIGS["sentence_prediction"] = base_config

    @dataclasses.dataclass
    class SentencePredictionConfig(base_config):
        report_mcc: bool = dataclasses.field(
            default=False, metadata={"help": "log the Matthews correlation (mcc) of the validation"})
        report_acc_and_f1: bool = dataclasses.field(
            default=False, metadata={"help": "log the F1 (f1) and the mean of accuracy and F1 (acc_and_f1)"})
        report_pearson_and_spearman: bool = dataclasses.field(
            default=False, metadata={"help": "log Pearson's and Spearman's correlations (pearson, spearman) "
                                             "and their mean (pearson_and_spearman)"})

    class SentencePredictionCriterion(base_criterion):
        def __init__(self, cfg, task):
            super().__init__(cfg, task)
            self.report_mcc = getattr(cfg, "report_mcc", False)
            self.report_acc_and_f1 = getattr(cfg, "report_acc_and_f1", False)
            self.report_pearson_and_spearman = getattr(cfg, "report_pearson_and_spearman", False)
            self.keep_pred_and_targ = self.report_mcc or self.report_acc_and_f1 or self.report_pearson_and_spearman
            self.label_dict = getattr(task, "label_dictionary", None)

        def forward(self, model, sample, reduce=True):
            if not self.keep_pred_and_targ or model.training:
                return super().forward(model, sample, reduce)
            # imported here: this class is defined before the plugin's criterions are
            from fairseq_r3f.criterions.r3f import recorded_outputs

            head = model.classification_heads[self.classification_head_name]
            with recorded_outputs(head) as outputs:
                loss, sample_size, logging_output = super().forward(model, sample, reduce)
            logits = outputs[-1]
            targets = model.get_targets(sample, [logits]).view(-1)
            if self.regression_target:
                logging_output["pred"] = logits.detach().view(-1).float().cpu().tolist()
                logging_output["targ"] = targets.detach().float().cpu().tolist()
            else:
                # the label ids back to the labels (fairseq's dictionary puts its special symbols first)
                offset = self.label_dict.nspecial
                logging_output["pred"] = [int(s) for s in self.label_dict.string(logits.argmax(-1) + offset).split()]
                logging_output["targ"] = [int(s) for s in self.label_dict.string(targets + offset).split()]
            for name in METRIC_FLAG_FIELDS:
                if getattr(self, name):
                    logging_output[name] = True
            return loss, sample_size, logging_output

        @staticmethod
        def reduce_metrics(logging_outputs) -> None:
            base_criterion.reduce_metrics(logging_outputs)
            _reduce_glue_metrics(logging_outputs)

    SentencePredictionCriterion.__name__ = SentencePredictionCriterion.__qualname__ = "SentencePredictionCriterion"
    SentencePredictionCriterion.__module__ = module.__name__
    setattr(SentencePredictionCriterion, "__dataclass", SentencePredictionConfig)  # read by fairseq's options
    module.SentencePredictionConfig, module.SentencePredictionCriterion = SentencePredictionConfig, \
        SentencePredictionCriterion
    CRITERION_REGISTRY["sentence_prediction"] = SentencePredictionCriterion
    CRITERION_DATACLASS_REGISTRY["sentence_prediction"] = SentencePredictionConfig
    node = SentencePredictionConfig()
    node._name = "sentence_prediction"
    ConfigStore.instance().store(name="sentence_prediction", group="criterion", node=node, provider="fairseq")
    return True


def _concat_meter():
    from fairseq.logging.meters import Meter

    class GlueValuesMeter(Meter):
        """All the values logged during one validation, in order (nothing smoothed)."""

        def __init__(self):
            self.values = []

        def reset(self):
            self.values = []

        def update(self, values):
            self.values.extend(values)

        @property
        def smoothed_value(self):
            return None

    return GlueValuesMeter()


def _reduce_glue_metrics(logging_outputs) -> None:
    from fairseq.logging import metrics
    from fairseq.logging.meters import safe_round

    pred = [p for log in logging_outputs for p in log.get("pred", [])]
    targ = [t for log in logging_outputs for t in log.get("targ", [])]
    if not pred:
        return
    # names starting with "_" stay out of the logs; the derived values are computed from them when printed
    metrics.log_custom(_concat_meter, "_glue_pred", pred)
    metrics.log_custom(_concat_meter, "_glue_targ", targ)

    def derived(fn):
        return lambda meters: safe_round(fn(meters["_glue_pred"].values, meters["_glue_targ"].values) * 100, 1)

    if any("report_mcc" in log for log in logging_outputs):
        from sklearn.metrics import matthews_corrcoef

        metrics.log_derived("mcc", derived(lambda p, t: matthews_corrcoef(t, p)))
    if any("report_acc_and_f1" in log for log in logging_outputs):
        from sklearn.metrics import f1_score

        def acc_and_f1(p, t):
            accuracy = sum(a == b for a, b in zip(p, t)) / len(t)
            return (accuracy + f1_score(y_true=t, y_pred=p)) / 2

        metrics.log_derived("acc_and_f1", derived(acc_and_f1))
        metrics.log_derived("f1", derived(lambda p, t: f1_score(y_true=t, y_pred=p)))
    if any("report_pearson_and_spearman" in log for log in logging_outputs):
        from scipy.stats import pearsonr, spearmanr

        metrics.log_derived("pearson_and_spearman",
                            derived(lambda p, t: (pearsonr(p, t)[0] + spearmanr(p, t)[0]) / 2))
        metrics.log_derived("pearson", derived(lambda p, t: pearsonr(p, t)[0]))
        metrics.log_derived("spearman", derived(lambda p, t: spearmanr(p, t)[0]))


# -- argparse-era architectures under fairseq-hydra-train ---------------------------------------------------------
#
# fairseq's older models (BART among them) fill their defaults in architecture functions written for argparse,
# ``args.x = getattr(args, "x", default)``. fairseq-hydra-train calls them on the model's (open) DictConfig. With
# omegaconf >= 2.1 a missing key raises, so getattr returns the default; omegaconf 2.0 (which fairseq 0.12.2 pins)
# returns None instead, so every default becomes None and fairseq falls back to its transformer's own defaults:
# bart_large came out as a 512-wide model, and the decoder of a smaller BART did not fit its output projection.
# fairseq's trainer reads the model's options the same way (getattr(cfg.model, "base_layers", 0) > 0 failed).
# Where the installed omegaconf behaves so, the plugin runs those functions on a Namespace built as fairseq-train
# builds it: the defaults of the model's options, then the config's values (None-valued keys dropped, as argparse
# leaves out options that were not given); everything the Namespace then holds that the config lacks or holds
# otherwise is written back to the config.


def missing_keys_read_as_none() -> bool:
    from omegaconf import OmegaConf

    try:
        return getattr(OmegaConf.create({}), "absent_key", "default") is None
    except Exception:  # omegaconf >= 2.1 raises for a missing key
        return False


def _argparse_defaults(model_class) -> dict:
    """The defaults fairseq-train's parser gives the model's options (fairseq suppresses those without one)."""
    import argparse

    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, add_help=False)
    try:
        model_class.add_args(parser)
        return vars(parser.parse_known_args([])[0])
    except Exception:  # a model whose options cannot be built outside fairseq-train: its architecture alone
        return {}


def _transformer_defaults(model_class) -> dict:
    """For fairseq's transformer family (BART included), which declares its options without defaults so that the
    architecture sets them: TransformerConfig's defaults, for the options the architecture left unset."""
    import argparse

    from fairseq.dataclass.utils import gen_parser_from_dataclass
    from fairseq.models.transformer import TransformerConfig, TransformerModel

    if model_class is None or not issubclass(model_class, TransformerModel):
        return {}
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, add_help=False)
    gen_parser_from_dataclass(parser, TransformerConfig(), delete_default=False, with_prefix="")
    return {k: v for k, v in vars(parser.parse_known_args([])[0]).items() if v is not None}


def _through_a_namespace(arch_fn, model_class):
    import argparse
    import functools

    from omegaconf import OmegaConf

    @functools.wraps(arch_fn)
    def apply(args):
        if not OmegaConf.is_config(args):
            return arch_fn(args)
        given = OmegaConf.to_container(args, resolve=False)
        values = _argparse_defaults(model_class) if model_class is not None else {}
        values.update({k: v for k, v in given.items() if v is not None})
        namespace = argparse.Namespace(**values)
        arch_fn(namespace)
        for key, value in _transformer_defaults(model_class).items():
            if not hasattr(namespace, key):  # what TransformerConfig.from_namespace and getattr(cfg, k, default) use
                setattr(namespace, key, value)
        for key, value in vars(namespace).items():
            if given.get(key) != value:
                setattr(args, key, value)

    apply.fills_defaults_through_a_namespace = True
    return apply


def fill_architecture_defaults_where_omegaconf_hides_them() -> bool:
    """Wraps every registered architecture function as described above, where omegaconf reads a missing key as
    None (omegaconf 2.0). Runs after the plugin's architectures are registered. True when it wrapped any."""
    if not missing_keys_read_as_none():
        return False
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    for name, arch_fn in list(ARCH_CONFIG_REGISTRY.items()):
        if not getattr(arch_fn, "fills_defaults_through_a_namespace", False):
            ARCH_CONFIG_REGISTRY[name] = _through_a_namespace(arch_fn, ARCH_MODEL_REGISTRY.get(name))
    return True


# -- fairseq 0.12.2's BetterTransformer inference path ------------------------------------------------------------
#
# fairseq 0.12.2's encoder layer, in a process that loaded a checkpoint and never trained (fairseq-generate,
# fairseq-validate, the hub), runs torch._transformer_encoder_layer_fwd with the padding mask but no mask type.
# torch >= 1.13 needs the mask type with a mask: every padded batch stops with "Mask Type should be defined".
# Where fairseq calls the kernel so and torch's kernel takes a mask type, the plugin keeps those layers on their
# ordinary forward (the one training uses): the same weights, the same results, only without the fused kernel.


def _bettertransformer_call_lacks_the_mask_type(layer_class) -> bool:
    import inspect

    import torch

    try:
        source = inspect.getsource(layer_class.forward)
        schemas = torch._C._jit_get_schemas_for_operator("aten::_transformer_encoder_layer_fwd")
    except Exception:  # no source, or no such kernel: nothing to keep off
        return False
    return "_transformer_encoder_layer_fwd" in source and "mask_type" not in source and \
        any("mask_type" in str(schema) for schema in schemas)


def keep_encoder_layers_off_a_broken_fast_path() -> bool:
    """Turns off fairseq's BetterTransformer inference path where it cannot work (see above). True if it did."""
    import functools

    from fairseq.modules import transformer_layer

    layer_class = getattr(transformer_layer, "TransformerEncoderLayerBase", None)
    if layer_class is None or getattr(layer_class.__init__, "keeps_the_ordinary_forward", False) or \
            not _bettertransformer_call_lacks_the_mask_type(layer_class):
        return False
    original_init = layer_class.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.can_use_fastpath = False  # read by the layer and by the encoder (which also re-lays out the batch)

    __init__.keeps_the_ordinary_forward = True
    layer_class.__init__ = __init__
    return True


# -- fairseq's data-buffer thread at interpreter exit -------------------------------------------------------------
#
# fairseq reads each epoch's batches ahead on a daemon thread (data.iterators.BackgroundConsumer, --data-buffer-size
# > 0, the default). A run that stops before its epoch ends (--max-update) leaves that thread collating the next
# batch while the interpreter exits; Python stops a daemon thread there by unwinding it from inside torch, and torch's
# C++ frames turn that into std::terminate: "terminate called without an active exception", exit -6 (SIGABRT), after
# fairseq-train had saved and logged everything. A race, so only now and then, more often on a loaded machine. At
# exit the plugin lets each such thread finish the batch it is on and stop, taking what it queues, so the interpreter
# never has to stop it.


def _buffer_consumer_class():
    try:
        from fairseq.data.iterators import BackgroundConsumer
    except ImportError:
        return None
    import inspect

    try:
        source = inspect.getsource(BackgroundConsumer.run)
    except (OSError, TypeError):
        return None
    # the loop this relies on: it reads self._max_len after each batch and puts its items on self._queue
    return BackgroundConsumer if "self._max_len" in source and "self._queue.put" in source else None


def stop_buffer_threads(timeout_s: float = 60.0) -> int:
    """Stops every live fairseq data-buffer thread after the batch it is collating (see above) and waits for it,
    up to ``timeout_s`` seconds each. Returns how many it stopped."""
    import queue
    import threading
    import time

    consumer_class = _buffer_consumer_class()
    if consumer_class is None:
        return 0
    stopped = 0
    for thread in threading.enumerate():
        if not isinstance(thread, consumer_class) or not thread.is_alive():
            continue
        thread._max_len = 0  # its loop breaks after the next batch, then it queues its end marker
        deadline = time.monotonic() + timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                thread._queue.get(timeout=0.05)  # room for that batch and the end marker
            except queue.Empty:
                pass
        stopped += not thread.is_alive()
    return stopped


def stop_buffer_threads_at_exit() -> bool:
    """Registers :func:`stop_buffer_threads` to run at interpreter exit (once). True where fairseq has the thread."""
    import atexit

    if _buffer_consumer_class() is None:
        return False
    atexit.unregister(stop_buffer_threads)
    atexit.register(stop_buffer_threads)
    return True

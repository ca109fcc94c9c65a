"""The cost of one fine-tuning update per method: Table 1 of the R3F paper, measured instead of assumed.

    python -m fairseq_r3f.benchmark                                 # classification, quick default
    python -m fairseq_r3f.benchmark --size small --seq-len 128 --batch-size 16 --repeats 5 --threads 1
    python -m fairseq_r3f.benchmark --task seq2seq                  # generation: BART, 50k vocabulary
    python -m fairseq_r3f.benchmark --task seq2seq --vocab 250027   # mBART's vocabulary
    python -m fairseq_r3f.benchmark --task hf-classification        # transformers: Trainer / rxf.hf's R3FTrainer
    python -m fairseq_r3f.benchmark --json > cost.json              # machine-readable

Every method runs fairseq's real training step (task.train_step, then the optimizer step) on one fixed random
batch without padding, on a model built through fairseq's own command-line parsing with the plugin's
criterions: ``--task classification`` (the default) a RoBERTa under sentence_prediction with STD, R3F, R4F,
R3F batched, SMART and FreeLB; ``--task seq2seq`` a BART (shared embeddings) under translation with STD
(label_smoothed_cross_entropy), R3F with the fused symmetric KL, R3F with the plain autograd KL it replaced,
R3F batched, and R-Drop (fairseq's label_smoothed_cross_entropy_with_rdrop, where the installed fairseq has
it). ``--task hf-classification`` is the classification case in transformers, in the same process: a
RobertaForSequenceClassification of the same size, each update Trainer.training_step and an AdamW step, with STD
(Trainer), R3F (rxf.hf's R3FTrainer) and NEFTune (Trainer's neftune_noise_alpha). Every task also runs R3F's floor
(R3F-floor: R3F's noise, two forwards and one backward through both graphs, a zero term instead of the
divergence), so that the R3F term's own cost is printed as R3F over its floor (goal: within 5%). Methods are
interleaved (a rotated order in each repeat) in one process and the medians are reported, with ratios to STD.

What is measured, per update:
- wall time (CUDA: synchronised before and after): the median and the fastest update (the least disturbed by
  other processes), and on the CPU this process's CPU time (``--threads 1`` makes it immune to other
  processes competing for the cores);
- FP: forward passes through the encoder, counted with a forward hook on the one TransformerEncoder;
- BP: backward runs (``backward()`` or ``autograd.grad`` calls) that reached the encoder, counted by numbering
  the calls of torch.autograd.backward and torch.autograd.grad and noting, in a hook on each encoder output,
  under which call its gradient arrived; "graphs" counts encoder graphs traversed backward (R3F's one backward
  goes through two graphs: clean and noised);
- peak memory: the highest amount of tensor memory allocated during the update above what was allocated
  when it started (activations, gradients -- fairseq frees them between updates --, optimizer
  temporaries). CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the running sum of the
  allocation and free events of torch's CPU allocator recorded by ``torch.profiler`` (profile_memory), in a
  separate, untimed update; it counts the process's torch tensors, not Python objects or allocator caching,
  which is what max_memory_allocated counts on CUDA too. Weights and Adam state (allocated before) are
  reported apart, as "static". What the profiler itself prints goes to a log file, not into the table.
- seq2seq: the divergence's own activation memory, what the symmetric KL keeps for its backward between
  forward and backward, in units of one [target tokens x V] logit tensor of the model's dtype.
"""

import argparse
import contextlib
import functools
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from fairseq_r3f.criterions.label_smoothed_cross_entropy_r3f import LabelSmoothedCrossEntropyR3FCriterion
from fairseq_r3f.criterions.sentence_prediction_r3f import SentencePredictionR3FCriterion
from fairseq_r3f.perturb import find_token_encoder
from fairseq_r3f.tools import USER_DIR
from rxf.divergence import symmetric_kl, symmetric_kl_autograd
from rxf.noise import sample_noise

# layers, width, ffn width, attention heads (seq2seq: this many encoder and as many decoder layers)
SIZES = {
    "tiny": (2, 64, 128, 2),
    "mini": (4, 256, 1024, 4),
    "small": (6, 512, 2048, 8),
    "base": (12, 768, 3072, 12),
    "large": (24, 1024, 4096, 16),
}
TASKS = ("classification", "seq2seq", "hf-classification")
RDROP = "label_smoothed_cross_entropy_with_rdrop"
SEQ2SEQ_LAYERS = 2  # the seq2seq default: 2 + 2 layers x 256, the size a fairseq-train --arch bart_base check used

# What the methods can reach (printed with every run, met or not). Classification: two forwards and one
# backward through both graphs cost about 1.85x STD; the noised graph kept for the backward about 1.15x
# peak. Seq2seq: the same with the vocabulary-wide KL fused. R-Drop runs the same two forwards (as one of 2B)
# and a KL over the same positions, plus a second cross-entropy: R3F should never cost more.
TARGETS = {"classification_time": 1.9, "classification_memory": 1.2, "seq2seq_time": 1.9,
           "divergence_logit_tensors": 2.0, "noise_sampling_percent": 2.0}


@dataclass
class Method:
    name: str
    criterion: str
    flags: List[str] = field(default_factory=list)
    sn_head: bool = False
    paper: Optional[tuple] = (1, 1, 3)  # Table 1: FP, BP, xFP (cost in forward passes); None: not in Table 1
    criterion_class: Optional[type] = None  # instead of the registered criterion (same options)


class PlainKLR3FCriterion(LabelSmoothedCrossEntropyR3FCriterion):
    """label_smoothed_cross_entropy_r3f with the symmetric KL in plain autograd, as before it was fused: the
    benchmark's reference for what the fused KL saves."""

    divergence = staticmethod(symmetric_kl_autograd)


def floor_term(clean_logits: torch.Tensor, noised_logits: torch.Tensor, mask=None) -> torch.Tensor:
    """R3F's floor: a term of value 0 whose gradient still runs through both graphs (from both logit tensors), so
    that an update costs R3F's two forwards and one backward through the clean and the noised graph, without the
    divergence. R3F over this floor is what the term itself costs."""
    return (clean_logits.float().sum() + noised_logits.float().sum()) * 0.0


class FloorR3FCriterion(LabelSmoothedCrossEntropyR3FCriterion):
    """label_smoothed_cross_entropy_r3f with :func:`floor_term` in place of the symmetric KL."""

    divergence = staticmethod(floor_term)


class FloorR3FClassificationCriterion(SentencePredictionR3FCriterion):
    """sentence_prediction_r3f with :func:`floor_term` in place of the symmetric KL."""

    def add_r3f_term(self, loss, sample_size, logging_output, clean_logits, noised_logits, noise_log):
        term = floor_term(clean_logits, noised_logits)
        logging_output.update(noise_log, symm_kl=term.data)
        return loss + self.noised_forward.r3f_lambda * term, sample_size, logging_output


# R3F's own cost over its floor (R3F / R3F-floor, the same passes without the divergence): printed with every run
FLOOR_GOAL = 1.05

R3F_FLAGS = ["--r3f-lambda", "1.0", "--eps", "1e-5", "--noise-type", "uniform"]


def classification_methods() -> List[Method]:
    smart = ["--smart-lambda", "1.0", "--smart-eps", "1e-5", "--smart-step-size", "1e-3", "--smart-norm", "linf"]
    freelb = ["--freelb-step-size", "1e-1", "--freelb-init-mag", "1e-1", "--freelb-norm", "l2"]
    return [
        Method("STD", "sentence_prediction"),
        Method("R3F", "sentence_prediction_r3f", R3F_FLAGS, paper=(2, 1, 4)),
        Method("R3F-floor", "sentence_prediction_r3f", R3F_FLAGS, paper=None,
               criterion_class=FloorR3FClassificationCriterion),
        Method("R4F", "sentence_prediction_r3f", R3F_FLAGS, sn_head=True, paper=(2, 1, 4)),
        Method("R3F-batched", "sentence_prediction_r3f", R3F_FLAGS + ["--r3f-batched-forward"], paper=(2, 1, 4)),
        *[Method(f"SMART K={k}", "sentence_prediction_smart", smart + ["--smart-steps", str(k)],
                 paper=(1 + k, 1 + k, 3 + 3 * k)) for k in (1, 2)],
        *[Method(f"FreeLB K={k}", "sentence_prediction_freelb", freelb + ["--freelb-steps", str(k)],
                 paper=(1 + k, 1 + k, 3 + 3 * k)) for k in (1, 3)],
    ]


def rdrop_available() -> bool:
    from fairseq.criterions import CRITERION_REGISTRY

    return RDROP in CRITERION_REGISTRY


def seq2seq_methods() -> List[Method]:
    r3f = ["--label-smoothing", "0.1"] + R3F_FLAGS
    methods = [
        Method("STD", "label_smoothed_cross_entropy", ["--label-smoothing", "0.1"]),
        Method("R3F", "label_smoothed_cross_entropy_r3f", r3f, paper=(2, 1, 4)),
        Method("R3F-autograd", "label_smoothed_cross_entropy_r3f", r3f, paper=(2, 1, 4),
               criterion_class=PlainKLR3FCriterion),
        Method("R3F-floor", "label_smoothed_cross_entropy_r3f", r3f, paper=None, criterion_class=FloorR3FCriterion),
        Method("R3F-batched", "label_smoothed_cross_entropy_r3f", r3f + ["--r3f-batched-forward"], paper=(2, 1, 4)),
    ]
    if rdrop_available():
        # alpha weighs the KL only; it changes nothing in the cost (5: R-Drop's translation setting)
        methods.append(Method("R-Drop", RDROP, ["--label-smoothing", "0.1", "--rdrop-alpha", "5"], paper=None))
    return methods


HF_R3F = {"r3f_lambda": 1.0, "r3f_eps": 1e-5, "r3f_noise_type": "uniform"}
HF_NEFTUNE_ALPHA = 5.0  # NEFTune's paper default; its cost does not depend on alpha


def hf_classification_methods() -> List[Method]:
    """transformers' Trainer (STD, NEFTune) and rxf.hf's R3FTrainer (R3F, its floor) on
    RobertaForSequenceClassification. ``criterion`` names the trainer, ``flags`` its arguments (key=value)."""
    r3f = [f"{key}={value}" for key, value in HF_R3F.items()]
    return [
        Method("STD", "Trainer"),
        Method("R3F", "R3FTrainer", r3f, paper=(2, 1, 4)),
        Method("R3F-floor", "R3FTrainer", r3f, paper=None),
        Method("NEFTune", "Trainer", [f"neftune_noise_alpha={HF_NEFTUNE_ALPHA:g}"], paper=(1, 1, 3)),
    ]


def methods(task: str = "classification") -> List[Method]:
    if task == "hf-classification":
        return hf_classification_methods()
    return seq2seq_methods() if task == "seq2seq" else classification_methods()


def divergence_name(method: Method) -> Optional[str]:
    """What an R3F method's term computes: the fused symmetric KL, the plain autograd one, or nothing (floor)."""
    if method.criterion == "R3FTrainer":
        return "none (floor)" if method.name == "R3F-floor" else "fused"
    if "r3f" not in method.criterion:
        return None
    return {PlainKLR3FCriterion: "autograd", FloorR3FCriterion: "none (floor)",
            FloorR3FClassificationCriterion: "none (floor)"}.get(method.criterion_class, "fused")


def over_floor(r3f: dict, floor: dict) -> dict:
    """R3F's rows over its floor's (both measured in this run): what the R3F term itself costs."""
    ratios = {"time_ratio": r3f["ms_per_update"] / floor["ms_per_update"],
              "cpu_time_ratio": r3f["cpu_ms_per_update"] / floor["cpu_ms_per_update"],
              "min_time_ratio": r3f["min_ms_per_update"] / floor["min_ms_per_update"],
              "memory_ratio": r3f["peak_mb"] / max(floor["peak_mb"], 1e-9)}
    return {**ratios, "goal": FLOOR_GOAL, "met": ratios["time_ratio"] <= FLOOR_GOAL}


def floor_line(name: str, floor: dict) -> str:
    return (f"{name} over its floor (the same two forwards and one backward through both graphs, no divergence): "
            f"time x{floor['time_ratio']:.3f}, cpu x{floor['cpu_time_ratio']:.3f}, min x{floor['min_time_ratio']:.3f}"
            f", peak memory x{floor['memory_ratio']:.3f}; goal <= {floor['goal']:g}x time: "
            f"{'met' if floor['met'] else 'NOT met'}")


class BackwardRuns:
    """Numbers the backward runs: every call of torch.autograd.backward (which Tensor.backward goes through) and
    torch.autograd.grad while ``active``. Public API only: torch 1.13 has no id of the running graph task."""

    def __init__(self):
        self.current = 0

    def _numbered(self, run):
        @functools.wraps(run)
        def numbered(*args, **kwargs):
            self.current += 1
            return run(*args, **kwargs)

        return numbered

    @contextlib.contextmanager
    def active(self):
        backward, grad = torch.autograd.backward, torch.autograd.grad
        torch.autograd.backward, torch.autograd.grad = self._numbered(backward), self._numbered(grad)
        try:
            yield
        finally:
            torch.autograd.backward, torch.autograd.grad = backward, grad


class PassCounter:
    """Counts forward passes through ``encoder`` and the backward runs / graphs that reach it."""

    def __init__(self, encoder, runs: BackwardRuns, output_tensor=lambda output: output["encoder_out"][0]):
        self.runs = runs
        self.output_tensor = output_tensor  # fairseq's encoder: T x B x C under "encoder_out"; transformers': [0]
        self.handle = encoder.register_forward_hook(self._forward)
        self.reset()

    def reset(self):
        self.forwards, self.backward_graphs, self.backward_runs = 0, 0, set()

    def _forward(self, _module, _inputs, output):
        self.forwards += 1
        out = self.output_tensor(output)
        if out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad):
        self.backward_graphs += 1
        self.backward_runs.add(self.runs.current)

    @property
    def counts(self):
        return self.forwards, len(self.backward_runs), self.backward_graphs


def write_dictionary(path: str, words) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(f"{word} 1\n" for word in words)


def write_dictionaries(folder: str, vocab: int, task: str = "classification") -> None:
    """What the task loads. sentence_prediction: input0/dict.txt (vocab - 5 words: fairseq adds 4 specials and
    <mask>) and label/dict.txt; translation: one joined dictionary (vocab - 4 words) as dict.src.txt and
    dict.tgt.txt."""
    if task == "seq2seq":
        for lang in ("src", "tgt"):
            write_dictionary(os.path.join(folder, f"dict.{lang}.txt"), (f"w{i}" for i in range(vocab - 4)))
        return
    write_dictionary(os.path.join(folder, "input0", "dict.txt"), (f"w{i}" for i in range(vocab - 5)))
    write_dictionary(os.path.join(folder, "label", "dict.txt"), ("0", "1"))


class Bench:
    def __init__(self, args, device):
        self.args, self.device = args, device
        self.task = args.task
        self.data = tempfile.mkdtemp(prefix="r3f_bench_")
        write_dictionaries(self.data, args.vocab, self.task)
        self.models: Dict[bool, tuple] = {}
        self.runs = BackwardRuns()

    def shape(self):
        layers, width, ffn, heads = SIZES[self.args.size]
        if self.task == "seq2seq" and not self.args.size_given:
            layers = SEQ2SEQ_LAYERS
        layers = self.args.layers or layers
        if self.args.width:
            width, ffn, heads = self.args.width, 4 * self.args.width, max(1, self.args.width // 64)
        return layers, width, ffn, heads

    def arch(self, method: Method) -> str:
        if self.task == "seq2seq":
            return "bart_base"
        return "roberta_sn_base" if method.sn_head else "roberta_base"

    def cfg(self, method: Method, *extra):
        from fairseq import options
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        layers, width, ffn, heads = self.shape()
        if self.task == "seq2seq":
            model = [
                "--task", "translation", "--source-lang", "src", "--target-lang", "tgt", "--share-all-embeddings",
                "--max-source-positions", str(max(self.args.seq_len, 16)),
                "--max-target-positions", str(max(self.args.tgt_len, 16)),
                *[flag for side in ("encoder", "decoder") for flag in (
                    f"--{side}-layers", str(layers), f"--{side}-embed-dim", str(width),
                    f"--{side}-ffn-embed-dim", str(ffn), f"--{side}-attention-heads", str(heads))],
            ]
        else:
            model = [
                "--task", "sentence_prediction_freelb", "--num-classes", "2", "--max-positions", str(self.args.seq_len),
                "--init-token", "0", "--encoder-layers", str(layers), "--encoder-embed-dim", str(width),
                "--encoder-ffn-embed-dim", str(ffn), "--encoder-attention-heads", str(heads),
            ]
        argv = [
            self.data, "--user-dir", USER_DIR, *model, "--arch", self.arch(method),
            "--criterion", method.criterion, *method.flags, "--optimizer", "adam", "--lr", "1e-5",
            "--seed", "1", *(["--cpu"] if self.device.type == "cpu" else []), *(["--fp16"] if self.args.fp16 else []),
            *extra,
        ]
        parser = options.get_training_parser()
        return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))

    def build_criterion(self, method: Method, cfg, task):
        if method.criterion_class is None:
            return task.build_criterion(cfg.criterion)
        return method.criterion_class.build_criterion(cfg.criterion, task)

    def setup(self, method: Method):
        """(task, model, criterion, optimizer, counter); one model and optimizer per architecture."""
        from fairseq import optim, tasks

        cfg = self.cfg(method)
        task = tasks.setup_task(cfg.task)
        if method.sn_head not in self.models:
            torch.manual_seed(1)
            model = task.build_model(cfg.model).to(self.device)
            model = model.half() if self.args.fp16 else model
            params = [p for p in model.parameters() if p.requires_grad]
            # --fp16 as fairseq-train does it: half weights, fp32 master copy and loss scaling in FP16Optimizer
            optimizer = (optim.FP16Optimizer.build_optimizer(cfg, params) if self.args.fp16
                         else optim.build_optimizer(cfg.optimizer, params))
            self.models[method.sn_head] = (model, optimizer, PassCounter(find_token_encoder(model), self.runs))
        model, optimizer, counter = self.models[method.sn_head]
        criterion = self.build_criterion(method, cfg, task)
        return task, model, criterion.to(self.device), optimizer, counter

    def sample(self):
        generator = torch.Generator().manual_seed(0)
        vocab, batch, length = self.args.vocab, self.args.batch_size, self.args.seq_len
        tokens = torch.randint(4, vocab - 1, (batch, length), generator=generator)
        tokens[:, 0], tokens[:, -1] = 0, 2  # <s> ... </s>, no padding
        net_input = {"src_tokens": tokens.to(self.device),
                     "src_lengths": torch.full((batch,), length, device=self.device)}
        if self.task == "seq2seq":
            target = torch.randint(4, vocab - 1, (batch, self.args.tgt_len), generator=generator)
            target[:, -1] = 2  # </s>
            net_input["prev_output_tokens"] = torch.cat([torch.full((batch, 1), 2), target[:, :-1]], 1).to(self.device)
            return {"id": torch.arange(batch), "net_input": net_input, "target": target.to(self.device),
                    "ntokens": target.numel(), "nsentences": batch}
        return {
            "id": torch.arange(batch), "net_input": net_input,
            "target": torch.randint(0, 2, (batch,), generator=generator).to(self.device),
            "ntokens": batch * length, "nsentences": batch,
        }

    def no_dropout(self):
        common = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]
        return common if self.task == "seq2seq" else common + ["--pooler-dropout", "0"]


class TorchOptimizer:
    """A torch optimizer with the two calls the update loop makes of a fairseq optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def step(self):
        self.optimizer.step()


class FloorTerm:
    """:func:`floor_term` standing in for rxf.hf's R3F term during the floor's updates. It counts its calls: a floor
    row whose term was never called would be R3F's own under another name, and is refused."""

    def __init__(self):
        self.calls = 0

    def __call__(self, clean_logits, noised_logits, mask=None, regression=False):
        self.calls += 1
        return floor_term(clean_logits, noised_logits)


class HFTrainStep:
    """One update's work for transformers, in the place of fairseq's task.train_step: Trainer.training_step (the
    forward, the loss, the backward) on the batch, given its number of labelled items as Trainer.train counts them.
    NEFTune's hook is attached as Trainer.train attaches it (the model is shared by the methods, so only for this
    method's steps); the floor's term replaces rxf.hf's R3F term for its steps."""

    def __init__(self, neftune_alpha: Optional[float] = None, floor: Optional[FloorTerm] = None):
        self.neftune_alpha, self.floor = neftune_alpha, floor

    def train_step(self, sample, model, trainer, optimizer, update_num):
        import rxf.hf.loss
        from transformers.integrations.neftune import activate_neftune, deactivate_neftune

        term = rxf.hf.loss.r3f_term
        handle = activate_neftune(model, self.neftune_alpha) if self.neftune_alpha is not None else None
        if self.floor is not None:
            rxf.hf.loss.r3f_term = self.floor
        try:
            trainer.training_step(model, dict(sample), num_items_in_batch=sample["labels"].ne(-100).sum())
        finally:
            rxf.hf.loss.r3f_term = term
            if handle is not None:
                deactivate_neftune(model, handle)


class HFBench:
    """The classification case for transformers (``--task hf-classification``): a RobertaForSequenceClassification
    of the same size as the fairseq case's RoBERTa, one model and AdamW for all methods, Trainer / R3FTrainer."""

    def __init__(self, args, device):
        self.args, self.device = args, device
        self.task = args.task
        self.data = tempfile.mkdtemp(prefix="r3f_bench_hf_")
        self.models: Dict[bool, tuple] = {}
        self.runs = BackwardRuns()

    shape = Bench.shape

    def arch(self, method: Method) -> str:
        return "RobertaForSequenceClassification"

    def setup(self, method: Method):
        # transformers only here: the fairseq cases never import it
        from transformers import RobertaConfig, RobertaForSequenceClassification, Trainer, TrainingArguments

        from rxf.hf import R3FTrainer, R3FTrainingArguments

        if not self.models:
            layers, width, ffn, heads = self.shape()
            torch.manual_seed(1)
            config = RobertaConfig(vocab_size=self.args.vocab, hidden_size=width, num_hidden_layers=layers,
                                   num_attention_heads=heads, intermediate_size=ffn,
                                   max_position_embeddings=self.args.seq_len + 2, type_vocab_size=1,
                                   layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2)
            model = RobertaForSequenceClassification(config).to(self.device)
            optimizer = TorchOptimizer(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5))
            counter = PassCounter(model.roberta.encoder, self.runs, output_tensor=lambda output: output[0])
            self.models[False] = (model, optimizer, counter)
        model, optimizer, counter = self.models[False]
        common = dict(output_dir=os.path.join(self.data, "trainer"), report_to="none",
                      use_cpu=self.device.type == "cpu", save_strategy="no", disable_tqdm=True)
        if method.criterion == "R3FTrainer":
            trainer = R3FTrainer(model=model, args=R3FTrainingArguments(**common, **HF_R3F))
        else:
            trainer = Trainer(model=model, args=TrainingArguments(**common))
        trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets before its steps
        step = HFTrainStep(neftune_alpha=HF_NEFTUNE_ALPHA if method.name == "NEFTune" else None,
                           floor=FloorTerm() if method.name == "R3F-floor" else None)
        return step, model, trainer, optimizer, counter

    def sample(self):
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(4, self.args.vocab - 1, (self.args.batch_size, self.args.seq_len), generator=generator)
        tokens[:, 0], tokens[:, -1] = 0, 2  # <s> ... </s>, no padding
        return {"input_ids": tokens.to(self.device), "attention_mask": torch.ones_like(tokens).to(self.device),
                "labels": torch.randint(0, 2, (self.args.batch_size,), generator=generator).to(self.device)}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_update(setup, sample, step, runs: Optional[BackwardRuns] = None):
    task, model, criterion, optimizer, _ = setup
    if "net_input" in sample:
        sample = {**sample, "net_input": dict(sample["net_input"])}  # R-Drop doubles the net_input it is given
    optimizer.zero_grad()
    with runs.active() if runs else contextlib.nullcontext():
        task.train_step(sample, model, criterion, optimizer, update_num=step)
    optimizer.step()


# torch's profiler (Kineto) writes lines to stderr at each start and stop, from C++ ("USDT:<date> <pid>:<tid>
# SyncActivityProfilerHandler.cpp:52] profiler_start" in torch 2, "STAGE:<date> ... ActivityProfilerController.cpp
# :294] Completed Stage: Warm Up" in torch 1.13), and torch 2's allocator notes that a block it frees was allocated
# before profiling started ("[W1207 03:15:01.173181073 CPUAllocator.cpp:245] Memory block of unknown size ..."):
# they go to a log file
PROFILER_LINE = re.compile(r"^[A-Z]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \w+\.cpp:\d+\]|^\s*$"
                           r"|^\[W\d{4} [\d:.]+ CPUAllocator\.cpp:\d+\] Memory block of unknown size")


@contextlib.contextmanager
def profiler_output_to(log_path: str):
    """Sends what is written to file descriptors 1 and 2 within the block to ``log_path``; other lines than the
    profiler's own are shown on stderr afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        start = log.tell()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    with open(log_path, "rb") as log:
        log.seek(start)
        other = [line for line in log.read().decode(errors="replace").splitlines() if not PROFILER_LINE.search(line)]
    if other:
        print("\n".join(other), file=sys.stderr)


def _event_time(event) -> int:
    # start_ns from torch 2.0 on; torch 1.13's events give start_us
    return event.start_ns() if hasattr(event, "start_ns") else 1000 * event.start_us()


def cpu_allocations(run, log_path: str):
    """Runs ``run()`` under torch's profiler; returns (peak, net) bytes of tensor memory allocated on the CPU
    within it, from the allocation and free events: the highest running level, and the level at the end."""
    from torch.profiler import ProfilerActivity, profile

    with profiler_output_to(log_path):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    level = peak = 0
    for event in sorted(events, key=_event_time):
        level += event.nbytes()
        peak = max(peak, level)
    return peak, level


def peak_memory(setup, sample, step, device, log_path: str) -> int:
    """Peak bytes of tensor memory allocated during one update, above the level when it started. The
    previous update's gradients are freed first (fairseq's zero_grad sets them to None), outside the
    measurement: the profiler would report their release only if it had seen their allocation, which
    depends on what ran under an earlier profiler session."""
    setup[3].zero_grad()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        run_update(setup, sample, step)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    return cpu_allocations(lambda: run_update(setup, sample, step), log_path)[0]


def divergence_memory(rows: int, vocab: int, dtype, device, log_path: str) -> Dict[str, Dict[str, float]]:
    """What each symmetric KL keeps for its backward, between forward and backward, in units of one [rows x V]
    logit tensor of ``dtype``: the two logit tensors are made inside the measured block from leaves, so that
    they count when (and only when) the KL keeps them; and the peak during forward and backward, the gradients
    it hands back (two logit tensors, needed by any implementation) included."""
    generator = torch.Generator().manual_seed(0)
    leaves = [torch.randn(rows, vocab, generator=generator).to(device=device, dtype=dtype).requires_grad_()
              for _ in range(2)]
    mask = torch.ones(rows, dtype=torch.bool, device=device)  # the criterion's: targets that are not padding
    logit_bytes = rows * vocab * leaves[0].element_size()
    result = {}
    for name, kl in (("fused", symmetric_kl), ("autograd", symmetric_kl_autograd)):
        held = {}

        def forward():
            a, b = leaves[0].clone(), leaves[1].clone()
            held["value"] = kl(a, b, mask)

        def backward():
            held.pop("value").backward()
            for leaf in leaves:
                leaf.grad = None

        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start = torch.cuda.memory_allocated(device)
            forward()
            synchronize(device)
            kept = torch.cuda.memory_allocated(device) - start
            backward()
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - start
        else:
            kept = cpu_allocations(forward, log_path)[1]
            peak_backward = cpu_allocations(backward, log_path)[0]
            peak = max(kept, kept + peak_backward)
        result[name] = {"kept_logit_tensors": kept / logit_bytes, "peak_logit_tensors": peak / logit_bytes,
                        "kept_mb": kept / 2**20, "peak_mb": peak / 2**20}
    result["logit_tensor_mb"] = logit_bytes / 2**20
    # beside the logits, the fused KL keeps a few numbers per row (the mask, two log-normalisers): 16 bytes
    # per row at most, nothing at a real vocabulary, 6% of a logit tensor at a toy one of 64 words
    result["per_row_allowance_logit_tensors"] = 16 * rows / logit_bytes
    return result


def static_bytes(model, optimizer) -> int:
    tensors = list(model.parameters()) + [v for state in optimizer.optimizer.state.values()
                                          for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def batched_r3f_check(bench: Bench, sample) -> Dict[str, float]:
    """R3F with two forwards and with --r3f-batched-forward on the same weights, without dropout, from the same
    seed (so the same noise): the loss and every gradient must agree up to float rounding."""
    from fairseq import tasks

    r3f = next(m for m in methods(bench.task) if m.name == "R3F")
    results = []
    for batched in (False, True):
        flags = ["--eps", "1e-2"] + (["--r3f-batched-forward"] if batched else [])
        cfg = bench.cfg(Method("R3F", r3f.criterion, r3f.flags), *flags, *bench.no_dropout())
        task = tasks.setup_task(cfg.task)
        torch.manual_seed(1)
        model = task.build_model(cfg.model).to(bench.device).train()
        criterion = task.build_criterion(cfg.criterion)
        torch.manual_seed(2)
        loss, _, log = criterion(model, sample)
        loss.backward()
        results.append((loss.detach(), float(log["symm_kl"]),
                        [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, kl_a, grads_a), (loss_b, kl_b, grads_b) = results
    # over all parameters at once: some gradients (attention key biases) are zero up to rounding
    grad_diff = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(grads_a, grads_b))
                          / sum(float(b.pow(2).sum()) for b in grads_b))
    return {"loss_sequential": float(loss_a), "loss_batched": float(loss_b),
            "loss_rel_diff": abs(float(loss_a - loss_b)) / max(abs(float(loss_a)), 1e-30),
            "symm_kl_sequential": kl_a, "symm_kl_batched": kl_b, "grad_rel_diff": grad_diff}


def noise_sampling_ms(bench: Bench, width: int, repeats: int = 20) -> float:
    like = torch.empty(bench.args.batch_size, bench.args.seq_len, width, device=bench.device)
    times = []
    for _ in range(repeats + 2):
        synchronize(bench.device)
        start = time.perf_counter()
        sample_noise(like, "uniform", 1e-5)
        synchronize(bench.device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


def benchmark(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    if args.fp16 and args.task == "hf-classification":
        raise SystemExit("--fp16 is fairseq's FP16Optimizer: the hf-classification case runs in fp32; drop --fp16")
    if args.fp16 and device.type != "cuda":
        raise SystemExit("--fp16 needs a CUDA device (fairseq's FP16Optimizer is CUDA-only); drop --fp16 on the CPU")
    known = {m.name: m for m in methods(args.task)}
    names = args.methods or list(known)
    unknown = [name for name in names if name not in known]
    if unknown or names[0] != "STD":
        raise SystemExit(f"--methods must start with STD (the ratios' reference) and name known methods "
                         f"(unknown: {', '.join(unknown) or 'none'}); known for --task {args.task}: "
                         f"{', '.join(known)}")
    chosen = [known[name] for name in dict.fromkeys(names)]
    bench = HFBench(args, device) if args.task == "hf-classification" else Bench(args, device)
    log_path = os.path.join(bench.data, "profiler.log")
    setups = {m.name: bench.setup(m) for m in chosen}
    sample = bench.sample()

    counts = {m.name: set() for m in chosen}
    times = {m.name: [] for m in chosen}
    cpu_times = {m.name: [] for m in chosen}
    step = 0

    def update(method, record_time):
        nonlocal step
        counter = setups[method.name][-1]
        counter.reset()
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        run_update(setups[method.name], sample, step, bench.runs)
        synchronize(device)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        step += 1
        counts[method.name].add(counter.counts)
        if record_time:
            times[method.name].append(elapsed)
            cpu_times[method.name].append(cpu)

    for method in chosen:  # warm-up: first calls allocate optimizer state, caches and kernels
        for _ in range(args.warmup):
            update(method, record_time=False)
    for repeat in range(args.repeats):
        shift = repeat % len(chosen)
        for method in chosen[shift:] + chosen[:shift]:
            update(method, record_time=True)

    peaks = {method.name: peak_memory(setups[method.name], sample, step, device, log_path) for method in chosen}

    layers, width = bench.shape()[:2]
    floors = [setups[m.name][0].floor for m in chosen if isinstance(setups[m.name][0], HFTrainStep)
              and setups[m.name][0].floor is not None]
    if any(floor.calls == 0 for floor in floors):
        raise RuntimeError("the R3F-floor updates never called the floor's term: rxf.hf.loss no longer computes the "
                           "term through r3f_term, so the floor row would be R3F's own")
    rows = []
    std_time, std_cpu = statistics.median(times["STD"]), statistics.median(cpu_times["STD"])
    for method in chosen:
        if len(counts[method.name]) != 1:
            raise RuntimeError(f"{method.name}: pass counts changed between updates: {counts[method.name]}")
        (fp, bp, graphs), = counts[method.name]
        median = statistics.median(times[method.name])
        paper = method.paper or (None, None, None)
        rows.append({
            "method": method.name, "criterion": method.criterion, "flags": method.flags,
            "divergence": divergence_name(method),
            "arch": bench.arch(method),
            "fp": fp, "bp": bp, "bp_graphs": graphs,
            "paper_fp": paper[0], "paper_bp": paper[1], "paper_xfp": paper[2],
            "paper_ratio": paper[2] / 3 if method.paper else None,
            "ms_per_update": 1000 * median, "times_ms": [1000 * t for t in times[method.name]],
            "time_ratio": median / std_time,
            "min_ms_per_update": 1000 * min(times[method.name]),
            "min_time_ratio": min(times[method.name]) / min(times["STD"]),
            "cpu_ms_per_update": 1000 * statistics.median(cpu_times[method.name]),
            "cpu_time_ratio": statistics.median(cpu_times[method.name]) / std_cpu,
            "peak_mb": peaks[method.name] / 2**20, "memory_ratio": peaks[method.name] / max(peaks["STD"], 1),
        })
    by_name = {row["method"]: row for row in rows}
    config = {"task": args.task, "size": args.size, "layers": layers, "width": width, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "vocab": args.vocab, "repeats": args.repeats, "warmup": args.warmup,
              "dtype": "fp16" if args.fp16 else "fp32", "dropout": 0.1}
    if args.task == "seq2seq":
        config["tgt_len"] = args.tgt_len
    result = {
        "device": device_description(device),
        "config": config,
        "static_mb": {(f"{bench.arch(Method('', '', sn_head=sn))}"): static_bytes(m, o) / 2**20
                      for sn, (m, o, _) in bench.models.items()},
        "methods": rows,
        "profiler_log": log_path,
    }
    if args.task == "seq2seq":
        result["rdrop"] = "R-Drop" in by_name or (f"not measured: this fairseq has no {RDROP}" if not
                                                  rdrop_available() else "not chosen")
        result["divergence_memory"] = divergence_memory(args.batch_size * args.tgt_len, args.vocab,
                                                        torch.float16 if args.fp16 else torch.float32, device,
                                                        log_path)
    if "R3F" in by_name:
        noise_ms = noise_sampling_ms(bench, width)
        # against the fastest R3F update: the largest share, the least disturbed by other processes
        result["noise_sampling"] = {"ms": noise_ms,
                                    "percent_of_r3f_update": 100 * noise_ms / by_name["R3F"]["min_ms_per_update"]}
        result["targets"] = targets(args.task, by_name, result)
    if "R3F-floor" in by_name and "R3F" in by_name:
        result["r3f_over_floor"] = over_floor(by_name["R3F"], by_name["R3F-floor"])
    if "R3F-batched" in by_name and "R3F" in by_name:
        result["batched_r3f"] = {
            "time_ratio_to_r3f": by_name["R3F-batched"]["ms_per_update"] / by_name["R3F"]["ms_per_update"],
            "memory_ratio_to_r3f": by_name["R3F-batched"]["peak_mb"] / max(by_name["R3F"]["peak_mb"], 1e-9),
            "check": batched_r3f_check(bench, sample),
        }
    return result


def targets(task: str, by_name: Dict[str, dict], result: dict) -> Dict[str, bool]:
    r3f = by_name["R3F"]
    noise = f"noise sampling < {TARGETS['noise_sampling_percent']:g}% of an R3F update"
    checks = {noise: result["noise_sampling"]["percent_of_r3f_update"] < TARGETS["noise_sampling_percent"]}
    if task in ("classification", "hf-classification"):
        limit, memory = TARGETS["classification_time"], TARGETS["classification_memory"]
        checks.update({
            f"R3F time <= {limit}x STD": r3f["time_ratio"] <= limit,
            f"R3F cpu time <= {limit}x STD": r3f["cpu_time_ratio"] <= limit,
            f"R3F peak memory <= {memory}x STD": r3f["memory_ratio"] <= memory,
        })
        return checks
    limit, tensors = TARGETS["seq2seq_time"], TARGETS["divergence_logit_tensors"]
    at = "" if result["config"]["vocab"] == 50265 else f" (set for a 50k vocabulary; here {result['config']['vocab']})"
    checks.update({
        f"R3F time <= {limit}x STD{at}": r3f["time_ratio"] <= limit,
        f"R3F cpu time <= {limit}x STD{at}": r3f["cpu_time_ratio"] <= limit,
        f"fused KL keeps <= {tensors:g} logit tensors for backward": result["divergence_memory"]["fused"][
            "kept_logit_tensors"] <= tensors + result["divergence_memory"]["per_row_allowance_logit_tensors"],
    })
    if "R-Drop" in by_name:
        rdrop = by_name["R-Drop"]
        checks.update({
            "R3F time <= R-Drop time": r3f["ms_per_update"] <= rdrop["ms_per_update"],
            "R3F cpu time <= R-Drop cpu time": r3f["cpu_ms_per_update"] <= rdrop["cpu_ms_per_update"],
            "R3F peak memory <= R-Drop peak memory": r3f["peak_mb"] <= rdrop["peak_mb"],
        })
    return checks


def device_description(device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"cpu: {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(result: dict) -> str:
    c = result["config"]
    if c.get("task") == "hf-classification":
        model = (f"transformers RobertaForSequenceClassification {c['layers']} layers x {c['width']} wide, vocab "
                 f"{c['vocab']}, {c['dtype']}, dropout {c['dropout']}; batch {c['batch_size']} x {c['seq_len']} "
                 f"tokens; Trainer.training_step + AdamW step")
    elif c.get("task") == "seq2seq":
        model = (f"BART {c['layers']} + {c['layers']} layers x {c['width']} wide, shared vocab {c['vocab']}, "
                 f"{c['dtype']}, dropout {c['dropout']}; batch {c['batch_size']} x {c['seq_len']} source, "
                 f"x {c['tgt_len']} target tokens")
    else:
        model = (f"RoBERTa {c['layers']} layers x {c['width']} wide, vocab {c['vocab']}, {c['dtype']}, dropout "
                 f"{c['dropout']}; batch {c['batch_size']} x {c['seq_len']} tokens")
    lines = [
        f"device: {result['device']}",
        f"model: {model}; medians of {c['repeats']} interleaved repeats",
        "",
        f"{'method':<13}{'FP':>4}{'BP':>4}{'graphs':>8}   {'paper FP/BP/xFP':<16}{'ms/update':>11}{'x STD':>7}"
        f"{'cpu x':>7}{'min x':>7}{'paper x':>9}{'peak MB':>10}{'x STD':>7}",
    ]
    for r in result["methods"]:
        paper = f"{r['paper_fp']}/{r['paper_bp']}/{r['paper_xfp']}" if r["paper_ratio"] is not None else "-"
        paper_ratio = f"{r['paper_ratio']:>9.2f}" if r["paper_ratio"] is not None else f"{'-':>9}"
        lines.append(
            f"{r['method']:<13}{r['fp']:>4}{r['bp']:>4}{r['bp_graphs']:>8}   {paper:<16}{r['ms_per_update']:>11.1f}"
            f"{r['time_ratio']:>7.2f}{r['cpu_time_ratio']:>7.2f}{r['min_time_ratio']:>7.2f}{paper_ratio}"
            f"{r['peak_mb']:>10.1f}{r['memory_ratio']:>7.2f}"
        )
    lines.append("")
    lines.append("FP: encoder forwards; BP: backward runs reaching the encoder; graphs: encoder graphs they "
                 "traversed; x STD: median wall time; cpu x: median CPU time of this process; min x: fastest "
                 "update's wall time (the least disturbed by other processes); "
                 "paper: Table 1 (S = K), 'paper x' = xFP / 3; peak MB: above the static "
                 + ", ".join(f"{k} {v:.0f} MB" for k, v in result["static_mb"].items()) + " (weights + Adam)")
    if any(r["method"] == "R3F-floor" for r in result["methods"]):
        lines.append("R3F-floor: R3F's noise, two forwards and one backward through both graphs, with a zero term in "
                     "place of the divergence")
    if c.get("task") == "hf-classification":
        lines.append(f"STD and NEFTune: transformers' Trainer (NEFTune: neftune_noise_alpha {HF_NEFTUNE_ALPHA:g}, its "
                     f"hook on get_input_embeddings()); R3F: rxf.hf's R3FTrainer "
                     + ", ".join(f"{k} {v:g}" if not isinstance(v, str) else f"{k} {v}" for k, v in HF_R3F.items())
                     + "; FP/BP: through model.roberta.encoder")
    if c.get("task") == "seq2seq":
        lines.append("R3F: fused symmetric KL; R3F-autograd: the same in plain autograd; R-Drop: fairseq's "
                     f"{RDROP} (one forward of 2B, two cross-entropies and a KL)")
        if result["rdrop"] is not True:
            lines.append(f"R-Drop: {result['rdrop']}")
    if "divergence_memory" in result:
        d = result["divergence_memory"]
        lines.append(
            f"symmetric KL over {c['batch_size'] * c['tgt_len']} target tokens x {c['vocab']} (one logit tensor = "
            f"{d['logit_tensor_mb']:.1f} MB): kept for backward: fused {d['fused']['kept_logit_tensors']:.2f}, "
            f"autograd {d['autograd']['kept_logit_tensors']:.2f} logit tensors; peak in forward + backward: fused "
            f"{d['fused']['peak_logit_tensors']:.2f}, autograd {d['autograd']['peak_logit_tensors']:.2f}")
    if "noise_sampling" in result:
        n = result["noise_sampling"]
        lines.append(f"noise sampling: {n['ms']:.3f} ms = {n['percent_of_r3f_update']:.2f}% of an R3F update")
    if "batched_r3f" in result:
        b = result["batched_r3f"]
        lines.append(f"R3F batched (--r3f-batched-forward: clean + noised in one forward of 2B): time "
                     f"x{b['time_ratio_to_r3f']:.2f}, peak memory x{b['memory_ratio_to_r3f']:.2f} of two-forward "
                     f"R3F; same seed, no dropout: loss rel. diff {b['check']['loss_rel_diff']:.1e}, gradient rel. "
                     f"diff {b['check']['grad_rel_diff']:.1e}")
    if "r3f_over_floor" in result:
        lines.append(floor_line("R3F", result["r3f_over_floor"]))
    for name, ok in result.get("targets", {}).items():
        lines.append(f"target {name}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["methods"]
    names = [r["method"] for r in rows]
    x = range(len(rows))
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax_time.bar(x, [r["time_ratio"] for r in rows], color="tab:blue", label="measured")
    paper = [(i, r["paper_ratio"]) for i, r in enumerate(rows) if r["paper_ratio"] is not None]
    ax_time.scatter([i for i, _ in paper], [v for _, v in paper], color="black", marker="_", s=400, zorder=3,
                    label="Table 1 (xFP / 3)")
    ax_time.set_ylabel("time per update / STD")
    ax_time.legend()
    ax_mem.bar(x, [r["memory_ratio"] for r in rows], color="tab:orange")
    ax_mem.set_ylabel("peak memory per update / STD")
    for ax in (ax_time, ax_mem):
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.axhline(1.0, color="grey", linewidth=0.8)
    c = result["config"]
    fig.suptitle(f"{result['device']} | {c.get('task', 'classification')} {c['layers']}x{c['width']}, batch "
                 f"{c['batch_size']} x {c['seq_len']} tokens, vocab {c['vocab']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fairseq_r3f.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, default="classification",
                        help="classification: RoBERTa, sentence_prediction (STD, R3F, R4F, SMART, FreeLB); seq2seq: "
                        "BART, translation (STD, R3F fused and autograd, R-Drop); hf-classification: transformers' "
                        "RobertaForSequenceClassification of the same size through Trainer (STD, NEFTune) and rxf.hf's "
                        "R3FTrainer (R3F); each with R3F's floor")
    parser.add_argument("--size", choices=sorted(SIZES),
                        help="model size (default mini; for seq2seq mini with 2 + 2 layers): "
                        + ", ".join(f"{k} = {v[0]}x{v[1]}" for k, v in SIZES.items()))
    parser.add_argument("--layers", type=int, help="override the size's number of layers (seq2seq: each side)")
    parser.add_argument("--width", type=int, help="override the size's width (ffn 4x, one head per 64)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per sentence (seq2seq: source tokens)")
    parser.add_argument("--tgt-len", type=int, default=56, help="seq2seq: target tokens per sentence (batch 8 x 56 "
                        "= 448 target tokens by default)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=50265,
                        help="vocabulary size (RoBERTa's and BART's by default; mBART's is 250027)")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per method (medians reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per method first")
    parser.add_argument("--methods", type=lambda s: [m.strip() for m in s.split(",")],
                        help="comma-separated subset, STD first (default: all of the task's)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when present, else CPU")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); 1 makes the "
                        "CPU-time column immune to other processes on a shared machine")
    parser.add_argument("--fp16", action="store_true", help="half-precision model with fairseq's FP16Optimizer, as "
                        "fairseq-train --fp16 (CUDA only); the batched-R3F check stays in fp32")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    parser.add_argument("--plot", default="benchmark_cost.png", help="bar chart PNG ('' for none)")
    args = parser.parse_args(argv)
    for name in ("seq_len", "tgt_len", "batch_size", "repeats", "vocab"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.vocab < 16:
        parser.error("--vocab must be >= 16")
    args.size_given = args.size is not None
    args.size = args.size or "mini"
    return args


def main(argv=None):
    args = parse_args(argv)
    import logging
    import warnings

    # fairseq logs every task and model it builds, hydra and torch warn about deprecations: the table is
    # the output
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = benchmark(args)
    if args.plot:
        plot(result, args.plot)
        result["plot"] = os.path.abspath(args.plot)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(table(result))
        if args.plot:
            print(f"bar chart: {result['plot']}")
        print(f"profiler output: {result['profiler_log']}")


if __name__ == "__main__":
    main()

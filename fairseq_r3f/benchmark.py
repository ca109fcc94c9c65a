"""The cost of one fine-tuning update per method: Table 1 of the R3F paper, measured instead of assumed.

    python -m fairseq_r3f.benchmark                                 # quick default
    python -m fairseq_r3f.benchmark --size small --seq-len 128 --batch-size 16 --repeats 5 --threads 1
    python -m fairseq_r3f.benchmark --json > cost.json              # machine-readable

Every method runs fairseq's real training step (task.train_step, then the optimizer step) on a RoBERTa of the
chosen size, built through fairseq's own command-line parsing with the plugin's criterions, on one fixed
random batch without padding. Methods are interleaved (a rotated order in each repeat) in one process and
the medians are reported, with ratios to STD.

What is measured, per update:
- wall time (CUDA: synchronised before and after): the median and the fastest update (the least disturbed by
  other processes), and on the CPU this process's CPU time (``--threads 1`` makes it immune to other
  processes competing for the cores);
- FP: forward passes through the encoder, counted with a forward hook on the one TransformerEncoder;
- BP: backward runs (``backward()`` or ``autograd.grad`` calls) that reached the encoder, counted by the
  distinct autograd graph-task ids seen by a hook on each encoder output; "graphs" counts encoder graphs
  traversed backward (R3F's one backward goes through two graphs: clean and noised);
- peak memory: the highest amount of tensor memory allocated during the update above what was allocated
  when it started (activations, gradients -- fairseq frees them between updates --, optimizer
  temporaries). CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the running sum of the
  allocation and free events of torch's CPU allocator recorded by ``torch.profiler`` (profile_memory), in a
  separate, untimed update; it counts torch tensors only, not Python objects or allocator caching, which is
  what max_memory_allocated counts on CUDA too. Weights and Adam state (allocated before) are reported
  apart, as "static".
"""

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F

from fairseq_r3f.criterions.sentence_prediction_r3f import SentencePredictionR3FCriterion
from fairseq_r3f.divergence import symmetric_kl
from fairseq_r3f.tools import USER_DIR
from fairseq_r3f.perturb import find_token_encoder, perturbed_token_embeddings, sample_noise


# layers, width, ffn width, attention heads
SIZES = {
    "tiny": (2, 64, 128, 2),
    "mini": (4, 256, 1024, 4),
    "small": (6, 512, 2048, 8),
    "base": (12, 768, 3072, 12),
    "large": (24, 1024, 4096, 16),
}


@dataclass
class Method:
    name: str
    criterion: str
    flags: List[str] = field(default_factory=list)
    sn_head: bool = False
    batched: bool = False
    paper: tuple = (1, 1, 3)  # Table 1: FP, BP, xFP (cost in forward passes)


def methods() -> List[Method]:
    r3f = ["--r3f-lambda", "1.0", "--eps", "1e-5", "--noise-type", "uniform"]
    smart = ["--smart-lambda", "1.0", "--smart-eps", "1e-5", "--smart-step-size", "1e-3", "--smart-norm", "linf"]
    freelb = ["--freelb-step-size", "1e-1", "--freelb-init-mag", "1e-1", "--freelb-norm", "l2"]
    return [
        Method("STD", "sentence_prediction"),
        Method("R3F", "sentence_prediction_r3f", r3f, paper=(2, 1, 4)),
        Method("R4F", "sentence_prediction_r3f", r3f, sn_head=True, paper=(2, 1, 4)),
        Method("R3F-batched", "sentence_prediction_r3f", r3f, batched=True, paper=(2, 1, 4)),
        *[Method(f"SMART K={k}", "sentence_prediction_smart", smart + ["--smart-steps", str(k)],
                 paper=(1 + k, 1 + k, 3 + 3 * k)) for k in (1, 2)],
        *[Method(f"FreeLB K={k}", "sentence_prediction_freelb", freelb + ["--freelb-steps", str(k)],
                 paper=(1 + k, 1 + k, 3 + 3 * k)) for k in (1, 3)],
    ]


class BatchedR3FCriterion(SentencePredictionR3FCriterion):
    """R3F with the clean and the noised copy of the batch in one forward of 2B sentences (noise on the
    second half only). Each sentence gets its own dropout mask either way, so the loss has the same
    distribution as the two-forward criterion; :func:`batched_r3f_check` shows it is the same function.
    Classification only; a benchmark candidate, not a registered criterion."""

    def forward(self, model, sample, reduce=True):
        if not (model.training and self.noised_forward.enabled) or self.regression_target:
            return super().forward(model, sample, reduce)
        net_input = sample["net_input"]
        batch = net_input["src_tokens"].size(0)
        doubled = {**net_input, "src_tokens": net_input["src_tokens"].repeat(2, 1),
                   "src_lengths": net_input["src_lengths"].repeat(2)}

        def perturbation(token_embedding):  # 2B x T x C
            noise = sample_noise(token_embedding[batch:], self.noised_forward.noise_type,
                                 self.noised_forward.noise_scale)
            return torch.cat([torch.zeros_like(noise), noise])

        with perturbed_token_embeddings(model, perturbation):
            logits = model(**doubled, features_only=True, classification_head_name=self.classification_head_name)[0]
        clean, noised = logits[:batch], logits[batch:]
        targets = model.get_targets(sample, [clean]).view(-1)
        task_loss = F.nll_loss(F.log_softmax(clean, dim=-1, dtype=torch.float32), targets, reduction="sum")
        term = symmetric_kl(clean, noised)
        loss = task_loss + self.noised_forward.r3f_lambda * term
        return loss, batch, {
            "loss": loss.data, "ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch,
            "ncorrect": (clean.argmax(dim=1) == targets).sum(), "symm_kl": term.data,
        }


class PassCounter:
    """Counts forward passes through ``encoder`` and the backward runs / graphs that reach it."""

    def __init__(self, encoder):
        self.handle = encoder.register_forward_hook(self._forward)
        self.reset()

    def reset(self):
        self.forwards, self.backward_graphs, self.graph_tasks = 0, 0, set()

    def _forward(self, _module, _inputs, output):
        self.forwards += 1
        out = output["encoder_out"][0]  # T x B x C
        if out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad):
        self.backward_graphs += 1
        self.graph_tasks.add(torch._C._current_graph_task_id())

    @property
    def counts(self):
        return self.forwards, len(self.graph_tasks), self.backward_graphs


def write_dictionaries(folder: str, vocab: int) -> None:
    """What fairseq's sentence_prediction task loads: input0/dict.txt (vocab - 5 words: fairseq adds 4
    specials and <mask>) and label/dict.txt."""
    for sub, words in (("input0", [f"w{i}" for i in range(vocab - 5)]), ("label", ["0", "1"])):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        with open(os.path.join(folder, sub, "dict.txt"), "w") as f:
            f.writelines(f"{word} 1\n" for word in words)


class Bench:
    def __init__(self, args, device):
        self.args, self.device = args, device
        self.data = tempfile.mkdtemp(prefix="r3f_bench_")
        write_dictionaries(self.data, args.vocab)
        self.models: Dict[bool, tuple] = {}

    def cfg(self, method: Method, *extra):
        from fairseq import options
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        layers, width, ffn, heads = SIZES[self.args.size]
        layers = self.args.layers or layers
        if self.args.width:
            width, ffn, heads = self.args.width, 4 * self.args.width, max(1, self.args.width // 64)
        argv = [
            self.data, "--user-dir", USER_DIR, "--task", "sentence_prediction_freelb", "--num-classes", "2",
            "--max-positions", str(self.args.seq_len), "--init-token", "0",
            "--arch", "roberta_sn_base" if method.sn_head else "roberta_base",
            "--encoder-layers", str(layers), "--encoder-embed-dim", str(width),
            "--encoder-ffn-embed-dim", str(ffn), "--encoder-attention-heads", str(heads),
            "--criterion", method.criterion, *method.flags, "--optimizer", "adam", "--lr", "1e-5",
            "--seed", "1", *(["--cpu"] if self.device.type == "cpu" else []), *(["--fp16"] if self.args.fp16 else []),
            *extra,
        ]
        parser = options.get_training_parser()
        return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))

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
            self.models[method.sn_head] = (model, optimizer, PassCounter(find_token_encoder(model)))
        model, optimizer, counter = self.models[method.sn_head]
        criterion_cls = BatchedR3FCriterion if method.batched else None
        criterion = criterion_cls(cfg.criterion, task) if criterion_cls else task.build_criterion(cfg.criterion)
        return task, model, criterion.to(self.device), optimizer, counter

    def sample(self, vocab: int):
        generator = torch.Generator().manual_seed(0)
        batch, length = self.args.batch_size, self.args.seq_len
        tokens = torch.randint(4, vocab - 1, (batch, length), generator=generator)
        tokens[:, 0], tokens[:, -1] = 0, 2  # <s> ... </s>, no padding
        return {
            "id": torch.arange(batch),
            "net_input": {"src_tokens": tokens.to(self.device),
                          "src_lengths": torch.full((batch,), length, device=self.device)},
            "target": torch.randint(0, 2, (batch,), generator=generator).to(self.device),
            "ntokens": batch * length, "nsentences": batch,
        }


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_update(setup, sample, step):
    task, model, criterion, optimizer, _ = setup
    optimizer.zero_grad()
    task.train_step(sample, model, criterion, optimizer, update_num=step)
    optimizer.step()


def peak_memory(setup, sample, step, device) -> int:
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
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_update(setup, sample, step)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        level += event.nbytes()
        peak = max(peak, level)
    return peak


def static_bytes(model, optimizer) -> int:
    tensors = list(model.parameters()) + [v for state in optimizer.optimizer.state.values()
                                          for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def batched_r3f_check(bench: Bench, sample) -> Dict[str, float]:
    """Sequential and batched R3F on the same weights, without dropout, from the same seed (so the same
    noise): the loss and every gradient must agree up to float rounding."""
    no_dropout = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0", "--pooler-dropout", "0"]
    results = []
    for batched in (False, True):
        method = Method("R3F", "sentence_prediction_r3f", ["--eps", "1e-2"], batched=batched)
        from fairseq import tasks

        cfg = bench.cfg(method, *no_dropout)
        task = tasks.setup_task(cfg.task)
        torch.manual_seed(1)
        model = task.build_model(cfg.model).to(bench.device).train()
        criterion = (BatchedR3FCriterion(cfg.criterion, task) if batched else task.build_criterion(cfg.criterion))
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
    if args.fp16 and device.type != "cuda":
        raise SystemExit("--fp16 needs a CUDA device (fairseq's FP16Optimizer is CUDA-only); drop --fp16 on the CPU")
    known = {m.name: m for m in methods()}
    names = args.methods or list(known)
    unknown = [name for name in names if name not in known]
    if unknown or names[0] != "STD":
        raise SystemExit(f"--methods must start with STD (the ratios' reference) and name known methods "
                         f"(unknown: {', '.join(unknown) or 'none'}); known: {', '.join(known)}")
    chosen = [known[name] for name in dict.fromkeys(names)]
    bench = Bench(args, device)
    setups = {m.name: bench.setup(m) for m in chosen}
    sample = bench.sample(args.vocab)

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
        run_update(setups[method.name], sample, step)
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

    peaks = {method.name: peak_memory(setups[method.name], sample, step, device) for method in chosen}

    width = find_token_encoder(setups["STD"][1]).embed_tokens.embedding_dim
    layers = len(find_token_encoder(setups["STD"][1]).layers)
    rows = []
    std_time, std_cpu = statistics.median(times["STD"]), statistics.median(cpu_times["STD"])
    for method in chosen:
        if len(counts[method.name]) != 1:
            raise RuntimeError(f"{method.name}: pass counts changed between updates: {counts[method.name]}")
        (fp, bp, graphs), = counts[method.name]
        median = statistics.median(times[method.name])
        rows.append({
            "method": method.name, "criterion": method.criterion, "flags": method.flags,
            "arch": "roberta_sn_base" if method.sn_head else "roberta_base",
            "fp": fp, "bp": bp, "bp_graphs": graphs,
            "paper_fp": method.paper[0], "paper_bp": method.paper[1], "paper_xfp": method.paper[2],
            "paper_ratio": method.paper[2] / 3,
            "ms_per_update": 1000 * median, "times_ms": [1000 * t for t in times[method.name]],
            "time_ratio": median / std_time,
            "min_ms_per_update": 1000 * min(times[method.name]),
            "min_time_ratio": min(times[method.name]) / min(times["STD"]),
            "cpu_ms_per_update": 1000 * statistics.median(cpu_times[method.name]),
            "cpu_time_ratio": statistics.median(cpu_times[method.name]) / std_cpu,
            "peak_mb": peaks[method.name] / 2**20, "memory_ratio": peaks[method.name] / max(peaks["STD"], 1),
        })
    by_name = {row["method"]: row for row in rows}
    result = {
        "device": device_description(device),
        "config": {"size": args.size, "layers": layers, "width": width, "seq_len": args.seq_len,
                   "batch_size": args.batch_size, "vocab": args.vocab, "repeats": args.repeats,
                   "warmup": args.warmup, "dtype": "fp16" if args.fp16 else "fp32", "dropout": 0.1},
        "static_mb": {("R4F arch" if sn else "roberta_base"): static_bytes(m, o) / 2**20
                      for sn, (m, o, _) in bench.models.items()},
        "methods": rows,
    }
    if "R3F" in by_name:
        noise_ms = noise_sampling_ms(bench, width)
        # against the fastest R3F update: the largest share, the least disturbed by other processes
        result["noise_sampling"] = {"ms": noise_ms,
                                    "percent_of_r3f_update": 100 * noise_ms / by_name["R3F"]["min_ms_per_update"]}
        result["targets"] = {
            "r3f_time_ratio <= 2.1": by_name["R3F"]["time_ratio"] <= 2.1,
            "r3f_cpu_time_ratio <= 2.1": by_name["R3F"]["cpu_time_ratio"] <= 2.1,
            "noise_sampling < 2% of an R3F update": result["noise_sampling"]["percent_of_r3f_update"] < 2,
            "r3f_memory_ratio <= 2.1": by_name["R3F"]["memory_ratio"] <= 2.1,
        }
    if "R3F-batched" in by_name and "R3F" in by_name:
        result["batched_r3f"] = {
            "time_ratio_to_r3f": by_name["R3F-batched"]["ms_per_update"] / by_name["R3F"]["ms_per_update"],
            "memory_ratio_to_r3f": by_name["R3F-batched"]["peak_mb"] / max(by_name["R3F"]["peak_mb"], 1e-9),
            "check": batched_r3f_check(bench, sample),
        }
    return result


def device_description(device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"cpu: {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(result: dict) -> str:
    c = result["config"]
    lines = [
        f"device: {result['device']}",
        f"model: RoBERTa {c['layers']} layers x {c['width']} wide, vocab {c['vocab']}, {c['dtype']}, dropout "
        f"{c['dropout']}; batch {c['batch_size']} x {c['seq_len']} tokens; medians of {c['repeats']} interleaved "
        f"repeats",
        "",
        f"{'method':<13}{'FP':>4}{'BP':>4}{'graphs':>8}   {'paper FP/BP/xFP':<16}{'ms/update':>11}{'x STD':>7}"
        f"{'cpu x':>7}{'min x':>7}{'paper x':>9}{'peak MB':>10}{'x STD':>7}",
    ]
    for r in result["methods"]:
        paper = f"{r['paper_fp']}/{r['paper_bp']}/{r['paper_xfp']}"
        lines.append(
            f"{r['method']:<13}{r['fp']:>4}{r['bp']:>4}{r['bp_graphs']:>8}   {paper:<16}{r['ms_per_update']:>11.1f}"
            f"{r['time_ratio']:>7.2f}{r['cpu_time_ratio']:>7.2f}{r['min_time_ratio']:>7.2f}{r['paper_ratio']:>9.2f}"
            f"{r['peak_mb']:>10.1f}"
            f"{r['memory_ratio']:>7.2f}"
        )
    lines.append("")
    lines.append("FP: encoder forwards; BP: backward runs reaching the encoder; graphs: encoder graphs they "
                 "traversed; x STD: median wall time; cpu x: median CPU time of this process; min x: fastest "
                 "update's wall time (the least disturbed by other processes); "
                 "paper: Table 1 (S = K), 'paper x' = xFP / 3; peak MB: above the static "
                 + ", ".join(f"{k} {v:.0f} MB" for k, v in result["static_mb"].items()) + " (weights + Adam)")
    if "noise_sampling" in result:
        n = result["noise_sampling"]
        lines.append(f"noise sampling: {n['ms']:.3f} ms = {n['percent_of_r3f_update']:.2f}% of an R3F update")
    if "batched_r3f" in result:
        b = result["batched_r3f"]
        lines.append(f"R3F batched (clean + noised in one forward of 2B): time x{b['time_ratio_to_r3f']:.2f}, "
                     f"peak memory x{b['memory_ratio_to_r3f']:.2f} of sequential R3F; same seed, no dropout: loss "
                     f"rel. diff {b['check']['loss_rel_diff']:.1e}, gradient rel. diff "
                     f"{b['check']['grad_rel_diff']:.1e}")
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
    ax_time.scatter(x, [r["paper_ratio"] for r in rows], color="black", marker="_", s=400, zorder=3,
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
    fig.suptitle(f"{result['device']} | {c['layers']}x{c['width']}, batch {c['batch_size']} x {c['seq_len']} tokens",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fairseq_r3f.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mini",
                        help="RoBERTa size: " + ", ".join(f"{k} = {v[0]}x{v[1]}" for k, v in SIZES.items()))
    parser.add_argument("--layers", type=int, help="override the size's number of layers")
    parser.add_argument("--width", type=int, help="override the size's width (ffn 4x, one head per 64)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per sentence")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=50265, help="vocabulary size (RoBERTa's by default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per method (medians reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per method first")
    parser.add_argument("--methods", type=lambda s: [m.strip() for m in s.split(",")],
                        help="comma-separated subset, STD first (default: all)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when present, else CPU")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); 1 makes the "
                        "CPU-time column immune to other processes on a shared machine")
    parser.add_argument("--fp16", action="store_true", help="half-precision model with fairseq's FP16Optimizer, as "
                        "fairseq-train --fp16 (CUDA only); the batched-R3F check stays in fp32")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    parser.add_argument("--plot", default="benchmark_cost.png", help="bar chart PNG ('' for none)")
    args = parser.parse_args(argv)
    for name in ("seq_len", "batch_size", "repeats", "vocab"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.vocab < 16:
        parser.error("--vocab must be >= 16")
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


if __name__ == "__main__":
    main()

"""R3FTrainer under data parallelism (two CPU ranks, gloo, started by torch.distributed.run): the gradient of one
step equals one process's gradient on the whole batch, and the logged symm_kl is the whole batch's. A causal LM
whose ranks hold different numbers of target tokens, so the loss must be scaled by Trainer's global item count and
the number of processes."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

CHILD = '''
import json, os, sys
import torch
sys.path.insert(0, {tests!r})
from test_hf_trainer import Gradients, arguments, collate, examples
from test_hf_noise import fixed_noise, tiny
from rxf.hf import R3FTrainer
out, per_device = sys.argv[1], int(sys.argv[2])
model = tiny("gpt2")
callback = Gradients(model)
extra = {{"ddp_backend": "gloo"}} if "WORLD_SIZE" in os.environ else {{}}
args = arguments(out, r3f_lambda=1.0, per_device_train_batch_size=per_device, **extra)
trainer = R3FTrainer(model=model, args=args, train_dataset=examples("gpt2"), data_collator=collate,
                     callbacks=[callback])
trainer.r3f_noise_sampler = fixed_noise(0.5)
trainer.train()
if trainer.args.process_index == 0:
    torch.save(callback.grads, os.path.join(out, "grads.pt"))
    with open(os.path.join(out, "logs.json"), "w") as f:
        json.dump([log for log in trainer.state.log_history if "loss" in log], f)
if torch.distributed.is_initialized():  # torch's shutdown rule: else a gloo rank can abort as it exits (SIGABRT)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_give_the_gradient_and_symm_kl_of_one_process_on_the_whole_batch(tmp_path):
    script = tmp_path / "train_one_step.py"
    script.write_text(CHILD.format(tests=TESTS))
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, command in (("one", [sys.executable, str(script)]),
                          ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                   "--master_port", str(free_port()), str(script)])):
        out = tmp_path / name
        proc = subprocess.run([*command, str(out), "8" if name == "one" else "4"], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(out / "logs.json") as f:
            runs[name] = (torch.load(out / "grads.pt"), json.load(f))
    (one, one_logs), (two, two_logs) = runs["one"], runs["two"]
    assert one.keys() == two.keys()
    for key, grad in one.items():
        assert torch.allclose(two[key], grad, rtol=1e-4, atol=1e-7), key
    assert two_logs[0]["symm_kl"] == pytest.approx(one_logs[0]["symm_kl"], rel=1e-5)
    assert two_logs[0]["symm_kl"] > 0

"""Two forwards before one backward under torch DistributedDataParallel, as fairseq's c10d backend wraps
the model (fairseq's own launcher needs CUDA, so the wrapper is built here as fairseq builds it, with gloo
on the CPU). Two ranks on two half-batches must produce the gradients of the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import NO_DROPOUT, build_in_process
import fairseq_r3f.criterions.r3f as r3f


def deterministic_noise(noise_type, eps):
    return lambda embedding: eps * torch.sin(1e3 * embedding.float())


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def batches(task, parts):
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    items = [dataset[i] for i in range(16)]
    size = len(items) // parts
    return [dataset.collater(items[i * size:(i + 1) * size]) for i in range(parts)]


def build(data_bin, arch):
    torch.manual_seed(0)
    return build_in_process(data_bin, *NO_DROPOUT, "--eps", "1e-2", arch=arch)


def rank_main(rank, world_size, data_bin, arch, store_path, out_dir):
    from fairseq.distributed import ModuleProxyWrapper
    from torch.nn.parallel import DistributedDataParallel

    r3f.random_noise = deterministic_noise
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    task, model, criterion = build(data_bin, arch)
    model.train()
    wrapped = ModuleProxyWrapper(DistributedDataParallel(model, find_unused_parameters=True))
    loss, _, logging_output = criterion(wrapped, batches(task, world_size)[rank])
    loss.backward()  # DDP averages gradients over the ranks
    torch.save({"grads": gradients(model), "symm_kl": float(logging_output["symm_kl"])},
               os.path.join(out_dir, f"rank{rank}.pt"))
    # Both ranks finish with the group before either tears it down: a rank that destroys the group while
    # its peer's gloo thread still talks ends the peer in std::terminate.
    dist.barrier()
    del wrapped
    dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["roberta_base", "roberta_sn_base"])
def test_two_ranks_reproduce_the_gradients_of_one_process(toy_task, tmp_path, monkeypatch, arch):
    mp.spawn(rank_main, args=(2, toy_task, arch, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(str(tmp_path / f"rank{r}.pt")) for r in range(2)]

    monkeypatch.setattr(r3f, "random_noise", deterministic_noise)
    task, model, criterion = build(toy_task, arch)
    model.train()
    loss, _, logging_output = criterion(model, batches(task, 1)[0])
    (loss / 2).backward()  # the mean over two ranks of their summed losses
    expected = gradients(model)

    assert sum(r["symm_kl"] for r in ranks) == pytest.approx(float(logging_output["symm_kl"]), rel=1e-4)
    for rank in ranks:
        assert rank["grads"].keys() == expected.keys()
        for name, grad in expected.items():
            assert torch.allclose(rank["grads"][name], grad, rtol=1e-3, atol=1e-6), name

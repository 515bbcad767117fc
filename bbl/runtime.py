"""The process's place in a distributed run (torchrun's RANK / WORLD_SIZE / LOCAL_RANK) and the default device.

Every stage that runs under `torchrun --nproc_per_node N` (training, dump-logits) asks here, so rank logic is
written once. torch is imported only by the functions that need it.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes in the run (`WORLD_SIZE`, 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (`RANK`, 0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (`LOCAL_RANK`), the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Whether this is rank 0, the process that writes run files and logs."""
    return rank() == 0


def default_device() -> str:
    """cuda when a GPU is visible, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DEVICE_TYPES = ("cpu", "cuda", "mps")
"""The devices bbl runs models on (`--device`): cpu, cuda or cuda:N, mps."""


def check_device(device: str | None, *, option: str = "--device") -> str:
    """`device` (None: `default_device()`) checked against this machine: a name torch knows, of a type bbl runs on,
    and present (a GPU visible, its index among them). Returns it as torch spells it.

    Raises:
        UsageError: naming the option, the value and what to pass instead (one line, before any work).
    """
    import torch

    from bbl.errors import UsageError

    if device is None:
        return default_device()
    try:
        parsed = torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{option} {device!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if parsed.type not in DEVICE_TYPES:
        raise UsageError(f"{option} {device!r}: bbl runs models on {', '.join(DEVICE_TYPES)}; use one of them")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{option} {device}: no CUDA GPU is visible here (torch.cuda.is_available() is False; "
                             f"torch {torch.__version__}); use {option} cpu")
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"{option} {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    if parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"{option} {device}: no Apple GPU (MPS) here; use {option} cpu")
    return str(parsed)


def init_distributed(device: str) -> str:
    """Join the process group of a multi-process run (nccl on GPU, gloo on CPU); returns this rank's device."""
    import torch.distributed as dist

    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if world_size() > 1 and device.startswith("cuda"):
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down cleanly (gloo aborts a rank that just exits)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

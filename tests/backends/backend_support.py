"""Shared helpers of the backend tests and benchmarks: where the real recordings are, how to read
them, and a tiny ChunkFormer checkpoint built with the package's own classes."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import recording

HAS_CHUNKFORMER = (
    importlib.util.find_spec("chunkformer") is not None and importlib.util.find_spec("torch") is not None
)
CHUNKFORMER_MISSING = (
    "the chunkformer package is not installed: run `bash scripts/install_chunkformer_cpu.sh`"
)
needs_chunkformer = pytest.mark.skipif(not HAS_CHUNKFORMER, reason=CHUNKFORMER_MISSING)


def cuda_device() -> bool:
    """A CUDA device is visible (the `gpu` tests run only then)."""
    from maie.catalog import cuda_available

    return cuda_available()


def load_audio(name: str) -> tuple[np.ndarray, float]:
    """16 kHz mono float32 samples of a real recording (tests/data, else shared data, else a skip)."""
    from faster_whisper import decode_audio

    samples = decode_audio(str(recording(name).path), sampling_rate=16000)
    return samples, len(samples) / 16000.0


# --------------------------------------------------------------------------------------
# A tiny ChunkFormer checkpoint
# --------------------------------------------------------------------------------------

# A character vocabulary: blank, unk, space marker, letters. ChunkFormer's vocab.txt is "token id".
VOCAB = ["<blank>", "<unk>", "▁", *list("abcdefghijklmnopqrstuvwxyz")]


def tiny_config() -> dict[str, Any]:
    """The smallest encoder that runs chunked decoding (dynamic_conv is required for it)."""
    return {
        "model": "asr_model",
        "input_dim": 80,
        "output_dim": len(VOCAB),
        "encoder": "chunkformer",
        "encoder_conf": {
            "output_size": 32,
            "attention_heads": 2,
            "linear_units": 64,
            "num_blocks": 2,
            "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0,
            "attention_dropout_rate": 0.0,
            "input_layer": "dw_striding",
            "pos_enc_layer_type": "chunk_rel_pos",
            "selfattention_layer_type": "chunk_rel_seflattn",
            "normalize_before": True,
            "cnn_module_kernel": 15,
            "use_cnn_module": True,
            "activation_type": "swish",
            "cnn_module_norm": "layer_norm",
            "dynamic_conv": True,
            "causal": False,
        },
        "decoder": "bitransformer",
        "decoder_conf": {
            "attention_heads": 2,
            "linear_units": 64,
            "num_blocks": 1,
            "r_num_blocks": 1,
            "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0,
            "self_attention_dropout_rate": 0.0,
            "src_attention_dropout_rate": 0.0,
        },
        "ctc_conf": {"ctc_blank_id": 0},
        "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False},
        "fbank_conf": {"num_mel_bins": 80, "frame_length": 25, "frame_shift": 10},
        "resample_conf": {"resample_rate": 16000},
    }


def build_tiny_chunkformer(target: Path, calibration_wav: Path | None = None, seed: int = 0) -> Path:
    """Write config.yaml, pytorch_model.bin, global_cmvn and vocab.txt into `target`.

    A random model's CTC head emits the same non-blank token on every frame, so the whole recording
    would be one segment. With `calibration_wav`, the blank logit is shifted so that about 60% of
    that recording's frames are blank: runs of blanks then break the output into several
    timestamped segments, as with a real model (the offset is a plain weight, saved with the rest).
    """
    import torch
    import yaml
    from chunkformer import ChunkFormerModel

    torch.manual_seed(seed)
    target.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    model = ChunkFormerModel(config)
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    # wenet JSON CMVN: statistics of log-mel features around 10 ± 3 (what fbank gives on speech).
    frames = 1000
    mean = [10.0 * frames] * 80
    var = [(100.0 + 9.0) * frames] * 80
    (target / "global_cmvn").write_text(json.dumps({"mean_stat": mean, "var_stat": var, "frame_num": frames}))
    (target / "vocab.txt").write_text("".join(f"{tok} {i}\n" for i, tok in enumerate(VOCAB)))
    torch.save(model.model.state_dict(), target / "pytorch_model.bin")
    if calibration_wav is not None:
        loaded = ChunkFormerModel.from_pretrained(str(target))  # with the CMVN, as decoding sees it
        margin = _blank_margins(loaded, calibration_wav)
        with torch.no_grad():
            model.model.ctc.ctc_lo.bias[0] += float(margin.quantile(0.6))
        torch.save(model.model.state_dict(), target / "pytorch_model.bin")
    return target


def _blank_margins(model: Any, wav: Path) -> Any:
    """Per frame: best non-blank logit minus blank logit, through the real endless_decode path."""
    captured: dict[str, Any] = {}
    ctc = model.model.ctc
    original = ctc.log_softmax

    def spy(hs: Any) -> Any:
        captured["hs"] = hs
        return original(hs)

    ctc.log_softmax = spy
    try:
        model.endless_decode(str(wav))
    finally:
        del ctc.log_softmax
    logits = ctc.ctc_lo(captured["hs"])[0].detach()
    return logits[:, 1:].max(-1).values - logits[:, 0]


# --------------------------------------------------------------------------------------
# Local HTTP helpers
# --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScriptedServer:
    """Answers /v1/models, and /v1/chat/completions with a scripted list of (status, body)."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script = list(script)
        self.chat_requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                outer.chat_requests.append(body)
                status, answer = (
                    outer.script.pop(0) if outer.script else (500, {"error": {"message": "empty"}})
                )
                self._send(status, answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_answer(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }

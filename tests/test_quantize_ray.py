"""`iqkt quantize --ray` on a local Ray cluster started by the test (2 CPUs, so 2 worker
processes): the same bytes as a local run, row chunks of one tensor spread over workers, a
worker killed mid-run retried. Needs the ray package (pip install '.[ray]'); skipped without it."""
from __future__ import annotations

import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
ray = pytest.importorskip("ray")

import iqkt.gguf as ig  # noqa: E402
from iqkt import _ray  # noqa: E402
from iqkt.imatrix import write_legacy_imatrix  # noqa: E402
from conftest import iqkt_parent  # noqa: E402
from test_gguf import make_model  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray") / "kill-once"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [iqkt_parent(), os.environ.get("PYTHONPATH")])),
           _ray._KILL_ONCE_ENV: str(marker)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield marker
    ray.shutdown()


def test_ray_run_gives_the_local_bytes(cluster, tmp_path, monkeypatch):
    src = tmp_path / "m.gguf"
    make_model(src, np.random.default_rng(1))
    imf = tmp_path / "im.dat"
    rng = np.random.default_rng(2)
    write_legacy_imatrix(imf, {"blk.0.attn_q.weight": rng.chisquare(2, 512),
                               "blk.0.ffn_gate_exps.weight": rng.chisquare(2, 3 * 256)})
    kw = dict(imatrix=imf, output_tensor_type="q6_k", allow_requantize=True, progress=False)
    ig.quantize_model(src, tmp_path / "local.gguf", "iq4_kt", **kw)
    # chunks of 2 rows: every tensor is spread over several tasks (expert groups respected)
    monkeypatch.setattr(_ray, "CHUNK_WEIGHTS", 1024)
    cluster.write_text("armed")  # the first task's worker dies; Ray retries the task
    rep = ig.quantize_model(src, tmp_path / "ray.gguf", "iq4_kt", ray="", **kw)
    assert not cluster.exists()
    assert (tmp_path / "ray.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()
    assert [t.name for t in rep.tensors] == [t.name for t in ig.model_info(tmp_path / "ray.gguf").tensors]
    errs = {t.name: t.rel_err for t in rep.tensors}
    assert 0 < errs["blk.0.attn_q.weight"] < 0.05
    # the CLI form
    from iqkt import cli
    assert cli.main(["quantize", str(src), str(tmp_path / "cli.gguf"), "iq4_kt", "--imatrix", str(imf),
                     "--output-tensor-type", "q6_k", "--allow-requantize", "--no-progress", "--ray"]) == 0
    assert (tmp_path / "cli.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()
    # the effort level reaches the workers
    ig.quantize_model(src, tmp_path / "local_fast.gguf", "iq4_kt", effort="fast", **kw)
    assert cli.main(["quantize", str(src), str(tmp_path / "cli_fast.gguf"), "iq4_kt", "--imatrix", str(imf),
                     "--output-tensor-type", "q6_k", "--allow-requantize", "--no-progress", "--ray",
                     "--effort", "fast"]) == 0
    assert (tmp_path / "cli_fast.gguf").read_bytes() == (tmp_path / "local_fast.gguf").read_bytes()
    assert (tmp_path / "local_fast.gguf").read_bytes() != (tmp_path / "local.gguf").read_bytes()


def test_ray_worker_errors_are_plain(cluster, tmp_path):
    src = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    x = np.ones((4, 256), np.float32)
    x[2, 7] = np.inf
    w.add_tensor("blk.0.attn_q.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="NaN or infinity"):
        ig.quantize_model(src, tmp_path / "o.gguf", "q4_k", ray="", progress=False)
    assert os.listdir(tmp_path) == ["m.gguf"]

"""Robustness: concurrency, fork, Ctrl-C, leaks, immutability, size limits."""
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import iqkt
from conftest import child_env, iqkt_parent

PYTHON = os.environ.get("IQKT_TEST_PYTHON", sys.executable)
RNG = np.random.default_rng(1234)
X = (RNG.standard_normal((6, 512)) * 0.05).astype(np.float32)
IM = RNG.chisquare(3, 512).astype(np.float32)
V = RNG.standard_normal((3, 512)).astype(np.float32)


def random_q(type_, rows, n, seed=0, scale=0.01):
    """Random bytes are valid KT data as long as each row scale is finite."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (rows, iqkt.row_size(type_, n)), dtype=np.uint8)
    q[:, :4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return q


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("type_", iqkt.TYPES)
def test_eight_threads_equal_sequential(type_):
    q_seq = iqkt.quantize(X, type_, IM, threads=1)
    d_seq = iqkt.dequantize(q_seq, type_, 512, threads=1)
    y_seq = iqkt.mul_mat(q_seq, type_, V, threads=1)
    results = [None] * 8
    errors = []

    def worker(i):
        try:
            out = []
            for _ in range(3):
                q = iqkt.quantize(X, type_, IM, threads=1 + i % 2)
                out.append((q, iqkt.dequantize(q_seq, type_, 512, threads=1 + i % 3),
                            iqkt.mul_mat(q_seq, type_, V, threads=1 + i % 2)))
            results[i] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for out in results:
        for q, d, y in out:
            assert np.array_equal(q, q_seq)
            assert np.array_equal(d.view(np.uint32), d_seq.view(np.uint32))
            assert np.array_equal(y, y_seq)


@pytest.mark.parametrize("type_", iqkt.TYPES)
def test_inputs_unchanged_and_outputs_do_not_alias(type_):
    x, im, v = X.copy(), IM.copy(), V.copy()
    before = [digest(a) for a in (x, im, v)]
    q = iqkt.quantize(x, type_, im)
    qd = digest(q)
    d = iqkt.dequantize(q, type_, 512)
    y = iqkt.mul_mat(q, type_, v)
    yf = iqkt.mul_mat(q, type_, v, precision="float")
    assert [digest(a) for a in (x, im, v)] == before
    assert digest(q) == qd
    for out in (q, d, y, yf):
        for inp in (x, im, v):
            assert not np.shares_memory(out, inp)
    assert not np.shares_memory(d, q) and not np.shares_memory(y, q)
    # A float32 C-contiguous input is used as is, never written.
    x_ro = X.copy()
    x_ro.setflags(write=False)
    assert np.array_equal(iqkt.quantize(x_ro, type_), iqkt.quantize(X, type_))


def test_size_limits():
    with pytest.raises(ValueError, match="too large"):
        iqkt.row_size("iq2_kt", 1 << 40)
    with pytest.raises(ValueError, match="too large"):
        iqkt.dequantize(np.zeros(16, np.uint8), "iq2_kt", 1 << 40)
    # Absurd outputs fail cleanly (MemoryError or ValueError), before any kernel runs.
    with pytest.raises((MemoryError, ValueError)):
        iqkt.trellis(np.arange(1 << 20, dtype=np.uint32), 1 << 40)
    with pytest.raises((ValueError, TypeError)):
        iqkt.trellis([1, 2], -1)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.slow
def test_no_leak_on_repeated_calls():
    q = iqkt.quantize(X[:1, :256], "iq4_kt")
    v = V[0, :256]
    seeds = np.arange(64, dtype=np.uint32)

    def batch(k):
        for _ in range(k):
            iqkt.dequantize(q, "iq4_kt", 256)
            iqkt.mul_mat(q, "iq4_kt", v)
            iqkt.mul_mat(q, "iq4_kt", v, precision="float")
            iqkt.trellis(seeds, 8)
            try:
                iqkt.dequantize(q[:, :-1], "iq4_kt", 256)
            except ValueError:
                pass

    def qbatch(k):
        for _ in range(k):
            iqkt.quantize(X[:1, :256], "iq2_kt", IM[:256], return_stats=True)

    batch(500)
    qbatch(50)
    r0 = _rss_bytes()
    batch(10_000)
    qbatch(1_000)
    grown = _rss_bytes() - r0
    assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 10k calls"


def _child(code):
    return [PYTHON, "-c", textwrap.dedent(code)]


@pytest.mark.subprocess
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_can_compute():
    code = """
        import os, sys, numpy as np, iqkt
        x = (np.random.default_rng(0).standard_normal((8, 512)) * 0.1).astype(np.float32)
        q = iqkt.quantize(x, "iq3_kt", threads=2)      # starts the worker threads
        y = iqkt.mul_mat(q, "iq3_kt", x[0], threads=2)
        pid = os.fork()
        if pid == 0:
            ok = (np.array_equal(iqkt.quantize(x, "iq3_kt", threads=2), q)
                  and np.array_equal(iqkt.mul_mat(q, "iq3_kt", x[0], threads=2), y))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        print("parent-ok", np.array_equal(iqkt.quantize(x, "iq3_kt", threads=2), q))
    """
    r = subprocess.run(_child(code), capture_output=True, text=True, timeout=120, env=child_env(),
                       cwd=iqkt_parent())
    assert r.returncode == 0, r.stderr
    assert "child 0" in r.stdout and "parent-ok True" in r.stdout


@pytest.mark.subprocess
def test_interpreter_exit_with_live_pool_does_not_hang():
    code = """
        import numpy as np, iqkt
        x = (np.random.default_rng(0).standard_normal((8, 512)) * 0.1).astype(np.float32)
        iqkt.quantize(x, "iq2_kt", threads=2)
        print("done")
    """
    r = subprocess.run(_child(code), capture_output=True, text=True, timeout=120, env=child_env(),
                       cwd=iqkt_parent())
    assert r.returncode == 0 and "done" in r.stdout, r.stderr


@pytest.mark.subprocess
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("op", ["quantize", "mul_mat"])
def test_ctrl_c_interrupts_long_call(op):
    code = f"""
        import signal, sys, time, threading, numpy as np, iqkt
        # A shell that starts background jobs without job control makes them ignore SIGINT,
        # and the child inherits that: put Python's own handler back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        rng = np.random.default_rng(0)
        if "{op}" == "quantize":
            x = rng.standard_normal((20000, 4096)).astype(np.float32)
            run = lambda: iqkt.quantize(x, "iq3_kt", threads=2)
            again = lambda: iqkt.quantize(x[:2, :512], "iq3_kt", threads=2)
        else:
            q = rng.integers(0, 256, (16384, iqkt.row_size("iq4_kt", 4096)), dtype=np.uint8)
            q[:, :4] = np.frombuffer(np.float32(0.01).tobytes(), dtype=np.uint8)
            x = rng.standard_normal((512, 4096)).astype(np.float32)
            run = lambda: iqkt.mul_mat(q, "iq4_kt", x, threads=2, precision="float")
            again = lambda: iqkt.mul_mat(q[:64], "iq4_kt", x[:2], threads=2)
        ref = again()
        print("ready", flush=True)
        t0 = time.perf_counter()
        try:
            run()
            print("finished", flush=True)
        except KeyboardInterrupt:
            t1 = time.perf_counter()
            print("interrupted", flush=True)
            print("again-ok", np.array_equal(again(), ref), flush=True)
            print("stopped-at", t1, flush=True)
    """
    p = subprocess.Popen(_child(code), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env(), cwd=iqkt_parent())
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        t_sig = time.perf_counter()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        elapsed = time.perf_counter() - t_sig
    finally:
        if p.poll() is None:
            p.kill()
    assert "interrupted" in out, (out, err)
    assert "again-ok True" in out, (out, err)
    print(f"stopped {elapsed:.2f} s after SIGINT")
    assert elapsed < 3.0, f"took {elapsed:.2f} s to stop after SIGINT"

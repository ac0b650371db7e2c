"""`iqkt quantize --ray`: convert a model's tensors on a Ray cluster (``pip install ray``; from an
iqkt checkout ``pip install '.[ray]'``).

The driver (iqkt.gguf._write_model) has already planned the output layout and opened the
resumable OUT.part; here each tensor to convert is cut into row chunks (rows are quantized
independently, so the bytes are those of a local run), the chunks run as Ray tasks, and each
result is written at its offset as it arrives. At most a few tasks per cluster CPU are in flight,
so the driver holds a bounded number of chunk results. Workers open the input GGUF themselves:
it must be readable at the same path on every node (shared storage), and iqkt must be installed
there. A worker that dies is retried by Ray (max_retries).
"""
from __future__ import annotations

import functools
import os
import time

import numpy as np

# Chunks of about this many weights per task: big enough to amortize a task (~1 ms) and the
# per-node file opening, small enough to spread one large tensor over many workers.
CHUNK_WEIGHTS = 1 << 24
_MAX_RETRIES = 3
# Test hook: the path of a file; the first worker task that finds it removes it and dies.
_KILL_ONCE_ENV = "IQKT_TEST_RAY_KILL_ONCE"


@functools.lru_cache(maxsize=2)
def _worker_tensors(paths: tuple[str, ...], stamps: tuple) -> dict:
    from .gguf import open_inputs
    readers = open_inputs(paths[0])
    return {t.name: t for r in readers for t in r.tensors}


def convert_chunk(paths, stamps, name, shape, src_tid, out_type, imatrix, r0, r1, threads, effort="default"):
    """Ray task: output bytes of rows [r0, r1) of tensor `name`, and its error terms."""
    from .gguf import _convert_rows, _Plan
    marker = os.environ.get(_KILL_ONCE_ENV)
    if marker:
        try:
            os.unlink(marker)
            os._exit(1)  # a worker dying mid-run, once
        except FileNotFoundError:
            pass
    for p, st in zip(paths, stamps):
        try:
            s = os.stat(p)
        except OSError as e:
            raise FileNotFoundError(f"--ray: a worker cannot read the input {p} ({e.strerror}); every node needs "
                                    f"it at the same path") from None
        if (s.st_size, s.st_mtime_ns) != st:
            raise RuntimeError(f"--ray: the input {p} on a worker node differs from the driver's (size or time)")
    t = _worker_tensors(tuple(paths), tuple(stamps))[name]
    plan = _Plan(t, name, tuple(shape), src_tid, out_type, imatrix=imatrix, effort=effort)
    return _convert_rows(plan, r0, r1, threads)


def _init(address: str):
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs the ray package: pip install ray (or pip install '.[ray]' in an iqkt "
                           "checkout)") from None
    if ray.is_initialized():
        return ray, False
    kw = dict(include_dashboard=False, log_to_driver=False)
    try:
        if address and address != "local":
            ray.init(address=address, **kw)
        else:
            # a local cluster started here: its workers import the same iqkt as this process
            import iqkt
            parent = os.path.dirname(os.path.dirname(os.path.abspath(iqkt.__file__)))
            path = os.pathsep.join(filter(None, [parent, os.environ.get("PYTHONPATH")]))
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, **kw)
    except Exception as e:  # ray raises many kinds (ConnectionError, ValueError, RuntimeError...)
        where = f"the Ray cluster at {address}" if address and address != "local" else "a local Ray cluster"
        raise RuntimeError(f"--ray: cannot start or reach {where} ({type(e).__name__}: {e})") from None
    return ray, True


def convert(pending: list, inputs: list[str], threads, bar, address: str) -> None:
    """Convert the (journal, plan) pairs in `pending` on Ray and journal each finished tensor.
    Kept tensors (plain copies) are left to the caller."""
    todo = [(j, p) for j, p in pending if p.out_type != "keep"]
    if not todo:
        return
    ray, started = _init(address)
    try:
        _run(ray, todo, inputs, threads, bar)
    finally:
        if started:
            ray.shutdown()


def _run(ray, todo, inputs, threads, bar) -> None:
    cpus_per_task = threads or 1
    task = ray.remote(num_cpus=cpus_per_task, max_retries=_MAX_RETRIES)(convert_chunk)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    max_in_flight = max(2, 2 * cpus // cpus_per_task)
    stamps = [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in inputs]
    from .gguf import _row_chunks

    def chunks():
        for j, p in todo:
            rows = int(np.prod(p.shape[:-1], dtype=np.int64))
            for r0, r1 in _row_chunks(p, CHUNK_WEIGHTS):
                yield j, p, rows, r0, r1

    state = {}  # tensor name -> [chunks left, err num, err den, start time]
    for j, p in todo:
        state[p.name] = [len(_row_chunks(p, CHUNK_WEIGHTS)), 0.0, 0.0, time.perf_counter()]
    it = chunks()
    in_flight: dict = {}
    imatrix_refs: dict = {}

    def submit() -> bool:
        nxt = next(it, None)
        if nxt is None:
            return False
        j, p, rows, r0, r1 = nxt
        im = p.imatrix
        if im is not None:  # one object-store copy per tensor, not per chunk
            im = imatrix_refs.setdefault(p.name, ray.put(np.asarray(im)))
        ref = task.remote(inputs, stamps, p.name, p.shape, p.src_tid, p.out_type, im, r0, r1, threads or 1, p.effort)
        in_flight[ref] = nxt
        return True

    while len(in_flight) < max_in_flight and submit():
        pass
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            j, p, rows, r0, r1 = in_flight.pop(ref)
            try:
                q, num, den = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the task raised: re-raise its exception
                cause = getattr(e, "cause", None)
                raise (cause if isinstance(cause, Exception) else RuntimeError(str(e))) from None
            except ray.exceptions.RayError as e:  # workers or nodes lost beyond the retries
                raise RuntimeError(f"--ray: converting {p.name} rows {r0}..{r1 - 1} failed "
                                   f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
            j.write_at(p.name, r0 * (p.out_nbytes // rows), q)
            del q
            st = state[p.name]
            st[0] -= 1
            st[1] += num
            st[2] += den
            if bar is not None:
                bar.update((r1 - r0) * p.shape[-1])
            if st[0] == 0:
                imatrix_refs.pop(p.name, None)
                j.commit(p.name, p.out_nbytes, st[1] / st[2] if st[2] > 0 else 0.0, time.perf_counter() - st[3])
            submit()

"""Parse worker processes for big dump files, and storing their chunks in file order.

Normalising a span is a Python walk (~15-20 µs of CPU); storing it ~10 µs. So the
loading process reads the file and cuts it into tasks of whole lines or messages (bytes, no
decoding), worker processes (one per core) parse and normalise them into the same Arrow chunks
a `CollectSink` keeps, and the loading process stores those in file order, with the workers'
messages in order too, while the workers go on with the next tasks. Blocks the columnar decodes
take (plain OTLP JSON lines) are decoded in threads instead (`run_in_threads`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import gc
import multiprocessing
import sys
import types
from collections.abc import Callable, Iterable, Iterator

import duckdb
import pyarrow as pa

from choreoscope.collector.export_decode import from_ipc
from choreoscope.collector.loaders.sink import FileSink

# A task is (label of its first..last line or frame, arguments of the worker function), about
# TASK_BYTES of the file.
Task = tuple[str, tuple]
TASK_BYTES = 2 * 1024 * 1024


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a file is walked: parsed JSON is millions of acyclic
    objects (freed by reference counting) that each collection would traverse again, ~40% of
    the walk's time. Collection resumes (if it was on) when the file is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def one_store_thread(con) -> Iterator[None]:
    """DuckDB on one thread while the workers parse: with every core parsing, a second store
    thread only competes with them (measured: a fifth less CPU in the loading process, and
    sooner done). The setting is the database's, so it is put back afterwards."""
    try:
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        con.execute("SET threads = 1")
    except duckdb.Error:
        yield
        return
    try:
        yield
    finally:
        con.execute(f"SET threads = {int(threads)}")


def parse_pool(workers: int):
    """Worker processes forked from a fork server (not from this process: DuckDB's threads) that
    has imported the loaders once, so a worker starts in milliseconds instead of paying the
    imports (~0.4 s of CPU each, a fifth of a 100k-span load); spawned where there is no fork
    server. A worker re-imports the parent's __main__ (under Streamlit, the dashboard script);
    the workers need only collector code, so they start with an empty __main__."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["choreoscope.collector.loaders"])
            try:
                return ctx.Pool(workers)
            except OSError:  # no fork server here (its socket, say): spawn instead
                pass
        return multiprocessing.get_context("spawn").Pool(workers)
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def close_pool(pool) -> None:
    pool.terminate()
    pool.join()


def run_tasks(pool, worker: Callable, tasks: Iterable[Task], sink: FileSink) -> None:
    """Run `worker(*args)` for each task in `pool` and store what they return, in task order.

    A worker returns (Arrow IPC chunks, messages, rejected count, formats seen), as
    `CollectSink` gathers them. At most two tasks per worker are in flight. The chunks (a task
    holds a few thousand spans) go to `sink.keep`, which stores them STORE_SPANS a transaction."""

    def take(task: Task, job) -> None:
        label = task[0]
        try:
            chunks, errors, rejected, formats = job.get()
        except Exception as exc:  # noqa: BLE001 - a worker that died costs only its task
            sink.store_held()  # the chunks before it first, as a serial load would
            sink.error(label, f"could not be parsed ({exc!r}); skipped")
            return
        merge_format(sink, formats)
        for spans, links in chunks:
            sink.keep(from_ipc(spans), from_ipc(links))
        sink.result.errors.extend(errors)
        sink.result.spans_rejected += rejected
        if sink.on_flush is not None:
            sink.on_flush(sink.result)  # the progress bar (it follows the bytes read)

    _in_order(lambda task: pool.apply_async(worker, task[1]), take, tasks, sink, 2 * sink.workers)


def run_in_threads(decode: Callable, blocks: Iterable[tuple], walk: Callable, sink: FileSink, threads: int) -> None:
    """Decode each block (`decode(block)` -> (spans, links) tables or None) in `threads` threads
    and store the tables in block order; a block `decode` leaves (None) is `walk(block)`ed here,
    in its place. For the columnar decodes: Arrow's parse and kernels release the GIL, so
    threads share the cores without the worker processes' start (~0.4 s) or their pipes (the
    blocks out, the rows back). At most two blocks per thread are in flight."""

    def take(block, future) -> None:
        try:
            decoded = future.result()
        except Exception:  # noqa: BLE001 - the decode's own failure: the walk has the last word
            decoded = None
        if decoded is None:
            walk(block)
        else:
            sink.keep_after_batch(*decoded)
        if sink.on_flush is not None:
            sink.on_flush(sink.result)

    threads = max(1, threads)
    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        try:
            _in_order(lambda block: executor.submit(decode, block), take, blocks, sink, 2 * threads)
        finally:
            # Arrow's allocator keeps what the decodes freed for reuse: give it back for the
            # analysis (~180 MB of peak RSS at 1M spans)
            pa.default_memory_pool().release_unused()


def _in_order(submit: Callable, take: Callable, items: Iterable, sink: FileSink, in_flight: int) -> None:
    """`submit(item)` each item (to workers or threads) and `take(item, job)` each in the items'
    order, at most `in_flight` ahead: the loading process stores while the others parse."""
    sink.flush()
    sink.store_held()  # what this process read itself (line 1), before the others' rows
    sink.incremental = True
    pending: collections.deque = collections.deque()

    def drain() -> None:
        while pending:
            take(*pending.popleft())

    try:
        for item in items:
            pending.append((item, submit(item)))
            if len(pending) > in_flight:
                take(*pending.popleft())
    except Exception:  # reading failed (a truncated .gz): the items read before it still load
        drain()
        raise
    else:
        drain()
    finally:
        sink.store_held()  # no transaction stays open past the workers
        sink.incremental = False


def merge_format(sink: FileSink, formats: str) -> None:
    """Add the formats a worker saw ("otlp-json", "otlp-json+jaeger") to the file's."""
    result = sink.result
    for found in formats.split("+"):
        if found == "unknown":
            continue
        if result.format == "unknown":
            result.format = found
        elif result.format != found and found not in result.format:
            result.format += f"+{found}"

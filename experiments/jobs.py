"""What runs inside each Hydra job.

``job_setup``: in a multirun, log lines carry the job's choices and the job stops if the
multirun process is gone (``experiments.lock.watch_parent``); ``progress_bar`` shows
generation progress on a terminal and logs it otherwise.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from experiments.lock import watch_parent

log = logging.getLogger("experiments")


class _JobPrefix(logging.Filter):
    """Prefixes every log record with the job's choices (one instance per process)."""

    prefix, num = "", 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.prefix and not getattr(record, "_duet_prefixed", False):
            record.msg = f"{self.prefix} {record.msg}"
            record._duet_prefixed = True
        return True


_PREFIX = _JobPrefix()


def job_setup(hc) -> str:
    """Per-job setup inside a Hydra task; returns the job's log prefix ("" for a single run)."""
    from hydra.types import RunMode

    if hc.mode != RunMode.MULTIRUN:
        return ""
    if watch_parent():
        # The multirun process handles Ctrl-C and ends its workers; a worker's own
        # KeyboardInterrupt would only print a second traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # tqdm's default lock is a named semaphore; a worker ended by its parent would leave
        # it to be reported as leaked. Bars within one process need only a thread lock.
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
    choices = hc.runtime.choices
    _PREFIX.prefix = f"[{choices.get('guide')}/{choices.get('strategy')} #{hc.job.num}]"
    _PREFIX.num = int(hc.job.num)
    for handler in logging.getLogger().handlers:
        if _PREFIX not in handler.filters:
            handler.addFilter(_PREFIX)
    return _PREFIX.prefix


class progress_bar:  # noqa: N801  (used like a function)
    """Generation progress over every pending batch: a tqdm bar on a terminal (batches,
    samples per second), else a log line every ``every`` seconds and at the end."""

    def __init__(self, total: int, cfg, active: bool = True, every: float = 10.0):
        self.total, self.done, self.samples, self.seconds = total, 0, 0, 0.0
        self.active, self.bar, self.t0 = active and total > 0, None, time.perf_counter()
        self.every, self.last = every, self.t0
        if self.active and sys.stderr.isatty():
            from tqdm import tqdm

            # Parallel jobs share the terminal: each job's bar keeps a line of its own.
            self.bar = tqdm(total=total, unit="batch", desc=_PREFIX.prefix or "generating",
                            dynamic_ncols=True, leave=False, position=_PREFIX.num % 8)

    def advance(self, n: int, seconds: float, num_steps: int) -> None:
        if not self.active:
            return
        self.done, self.samples, self.seconds = self.done + 1, self.samples + n, \
            self.seconds + seconds
        rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"steps={num_steps} {rate:.2f} samples/s", refresh=False)
            self.bar.update(1)
        elif self.done == self.total or time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            log.info("batch %d/%d done (steps=%d, %.2f samples/s overall)", self.done,
                     self.total, num_steps, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

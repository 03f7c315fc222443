"""Which thread computes: model work in a thread of its own, so no idle thread slows it down.

The CPU build of torch runs parallel work on OpenMP (libgomp). Every thread that has run a
parallel region keeps a pool of worker threads for as long as it lives. Once the pools of all
live threads hold more threads than there are CPUs, libgomp stops spinning between regions
and wakes its workers with system calls, which makes each small matrix product of a decode
step several times slower: on 2 cores a 2 × 576 by 576 × 1536 product takes 27 µs while one
thread computes, and about 130 µs while a second, idle thread still holds its pool (measured
with ``F.linear`` in a loop). So one-off work such as loading a model runs in a thread that
ends with the work, and the engine's own thread ends when the engine has been idle a while.

>>> in_fresh_thread(lambda: 6 * 7)
42
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["in_fresh_thread"]

T = TypeVar("T")


def in_fresh_thread(work: Callable[[], T], *, name: str = "aura-oneoff") -> T:
    """Run ``work`` in a new thread, wait for it, and return its result (or raise its error).

    The thread, and the worker pool its parallel regions made, end before this returns.

    >>> in_fresh_thread(lambda: 1 / 0)
    Traceback (most recent call last):
    ...
    ZeroDivisionError: division by zero
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=target, name=name, daemon=True)  # Ctrl-C in the caller is not held up
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]

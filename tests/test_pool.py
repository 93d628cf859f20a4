"""Which shared link a client's next batch goes to (no server needed: links' states are set)."""

from __future__ import annotations

import time

from kvproxy.proxy.batch import Batch
from kvproxy.proxy.link import Gate, SetupReply
from kvproxy.proxy.pool import STALL_AFTER, Pool


def make_pool(size: int = 3) -> Pool:
    return Pool(("127.0.0.1", 1), 1.0, size, 0, Gate(), None, None)


def busy(pool: Pool, index: int, answered_ago: float) -> None:
    link = pool.links[index]
    link.ready = True
    sink = SetupReply()
    sink.order.append(Batch(1))
    link.waiters.append(sink)
    link.progress_at = time.monotonic() - answered_ago


def idle(pool: Pool, index: int) -> None:
    pool.links[index].ready = True


def test_an_idle_connected_link_comes_first() -> None:
    pool = make_pool()
    busy(pool, 0, 0.0)
    idle(pool, 1)
    idle(pool, 2)
    assert pool.pick() is pool.links[1]


def test_a_busy_link_that_keeps_answering_is_shared_before_a_new_connection() -> None:
    pool = make_pool()
    busy(pool, 0, 0.0)  # links 1 and 2 are not connected
    assert pool.pick() is pool.links[0]


def test_a_stalled_link_is_passed_over_for_one_not_connected_yet() -> None:
    pool = make_pool()
    busy(pool, 0, 10 * STALL_AFTER)
    assert pool.pick() is pool.links[1]


def test_among_busy_links_the_one_that_answered_last_wins() -> None:
    pool = make_pool()
    busy(pool, 0, 1.0)  # stuck behind a slow command
    busy(pool, 1, 0.5)
    busy(pool, 2, 10 * STALL_AFTER)
    assert pool.pick() is pool.links[2]


def test_a_link_carrying_a_slow_clients_batch_is_kept_clear() -> None:
    pool = make_pool()
    busy(pool, 0, 0.0)
    pool.links[0].slow_inflight = 1
    busy(pool, 1, 1.0)
    idle(pool, 2)
    assert pool.pick() is pool.links[2]
    busy(pool, 2, 0.5)
    # Every other link is stuck: the slow lane is still avoided while one is not.
    assert pool.pick() is pool.links[2]


def test_a_slow_client_takes_an_idle_link_else_joins_the_slow_lane() -> None:
    pool = make_pool()
    busy(pool, 0, 0.0)
    idle(pool, 1)
    assert pool.pick(slow=True) is pool.links[1]
    busy(pool, 1, 0.0)
    busy(pool, 2, 0.0)
    pool.links[2].slow_inflight = 1
    assert pool.pick(slow=True) is pool.links[2]


def test_a_slow_client_prefers_an_idle_link_to_a_slow_lane_before_it() -> None:
    pool = make_pool()
    busy(pool, 0, 0.0)
    pool.links[0].slow_inflight = 1
    busy(pool, 1, 0.0)
    idle(pool, 2)
    assert pool.pick(slow=True) is pool.links[2]

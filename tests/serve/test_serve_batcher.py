"""The micro-batcher alone (no model): concurrent items share batches up to the largest size, a lone item waits for
nothing, items announced as arriving are waited for within the window, a full queue refuses, and a failing batch
fails only its own items."""
import asyncio
import time

import pytest

from mire_jax.serve.batcher import Busy, MicroBatcher


def _run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_items_share_batches_up_to_the_largest_size():
    seen = []

    def double(items):
        seen.append(len(items))
        time.sleep(0.01)
        return [2 * x for x in items]

    async def main():
        batcher = MicroBatcher(double, max_batch=4, window_s=0.02)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return answers

    answers = _run(main())
    assert [a.result for a in answers] == [2 * i for i in range(10)]
    assert max(seen) == 4 and sum(seen) == 10 and len(seen) == 3
    assert all(a.batch_size in seen for a in answers)


def test_a_lone_item_does_not_wait_for_the_window():
    async def main():
        batcher = MicroBatcher(lambda items: list(items), max_batch=16, window_s=1.0)
        batcher.start()
        t0 = time.perf_counter()
        answer = await batcher.submit("x")
        elapsed = time.perf_counter() - t0
        await batcher.stop()
        return answer, elapsed

    answer, elapsed = _run(main())
    assert answer.result == "x" and answer.batch_size == 1
    assert elapsed < 0.5


def test_announced_items_are_waited_for_within_the_window():
    seen = []

    async def arrive_late(batcher, item, delay, refused=False):
        try:
            with batcher.expecting():
                await asyncio.sleep(delay)
                if refused:
                    raise ValueError("refused while being read")
        except ValueError:
            return None
        return await batcher.submit(item)

    async def main():
        batcher = MicroBatcher(lambda items: seen.append(list(items)) or list(items), max_batch=8, window_s=0.3)
        batcher.start()
        t0 = time.perf_counter()
        # "b" is announced before "a" is queued and arrives 50 ms later: both share one batch
        late = asyncio.ensure_future(arrive_late(batcher, "b", 0.05))
        await asyncio.sleep(0)
        a = await batcher.submit("a")
        await late
        shared_s = time.perf_counter() - t0
        # an announced request that never comes (refused while being read) releases the batch at once
        gone = asyncio.ensure_future(arrive_late(batcher, "x", 0.05, refused=True))
        await asyncio.sleep(0)
        t1 = time.perf_counter()
        await batcher.submit("c")
        released_s = time.perf_counter() - t1
        await gone
        # one that takes longer than the window is not waited for beyond it
        slow = asyncio.ensure_future(arrive_late(batcher, "e", 0.6))
        await asyncio.sleep(0)
        t2 = time.perf_counter()
        await batcher.submit("d")
        windowed_s = time.perf_counter() - t2
        await slow
        await batcher.stop()
        return a, shared_s, released_s, windowed_s

    a, shared_s, released_s, windowed_s = _run(main())
    assert seen == [["a", "b"], ["c"], ["d"], ["e"]] and a.batch_size == 2
    assert 0.04 <= shared_s < 0.25
    assert 0.04 <= released_s < 0.25
    assert 0.25 <= windowed_s < 0.55


def test_no_window_runs_items_one_at_a_time():
    seen = []

    async def main():
        batcher = MicroBatcher(lambda items: seen.append(len(items)) or list(items), max_batch=1, window_s=0.0)
        batcher.start()
        await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.stop()

    _run(main())
    assert seen == [1] * 5


def test_a_full_queue_refuses_and_a_failing_batch_fails_its_items_only():
    release = None

    def slow_or_failing(items):
        if "fail" in items:
            raise RuntimeError("bad batch")
        release.wait(5)
        return list(items)

    async def main():
        nonlocal release
        import threading
        release = threading.Event()
        batcher = MicroBatcher(slow_or_failing, max_batch=1, window_s=0.0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.sleep(0.05)  # "a" is running; two more may wait
        waiting = [asyncio.ensure_future(batcher.submit(x)) for x in ("b", "fail")]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher.submit("c")
        release.set()
        results = await asyncio.gather(first, *waiting, return_exceptions=True)
        after = await batcher.submit("d")
        await batcher.stop()
        return results, after

    (a, b, failed), after = _run(main())
    assert a.result == "a" and b.result == "b" and after.result == "d"
    assert isinstance(failed, RuntimeError)


@pytest.mark.parametrize("clients,max_batch", [(6, 8), (5, 3)])
def test_clients_that_reply_one_by_one_keep_sharing_batches(clients, max_batch):
    """Closed-loop clients whose next requests arrive spaced out, with an empty queue and nothing announced between
    two of them: after the first rounds every batch still holds min(clients, max_batch) queries (the last batch's
    demand is waited for), and when the load drops to one client, it waits one window once, then nothing."""
    seen = []

    def run(items):
        seen.append(len(items))
        time.sleep(0.02)
        return list(items)

    async def client(batcher, c, rounds):
        for r in range(rounds):
            await batcher.submit((c, r))
            await asyncio.sleep(0.004 * c)  # client c answers 4c ms after its result

    async def main():
        batcher = MicroBatcher(run, max_batch=max_batch, window_s=0.15)
        batcher.start()
        await asyncio.gather(*(client(batcher, c, 8) for c in range(clients)))
        waits = []
        for i in range(3):
            t0 = time.perf_counter()
            await batcher.submit(("alone", i))
            waits.append(time.perf_counter() - t0)
        await batcher.stop()
        return waits

    waits = _run(main())
    full = min(clients, max_batch)
    steady = seen[-6 - 3:-3]
    assert steady == [full] * len(steady) or (max_batch < clients and set(steady) <= {full, clients - full}), seen
    assert seen[-3:] == [1, 1, 1]
    assert 0.12 <= waits[0] < 0.4, waits  # the window, once
    assert max(waits[1:]) < 0.1, waits


def test_a_wave_longer_than_the_window_stays_one_batch_while_its_items_keep_coming():
    """After a batch of 6, six items that arrive 60 ms apart (over 300 ms, three windows of 100 ms) still form one
    batch: the window counts from the last arrival, not from the first."""
    seen = []

    async def main():
        batcher = MicroBatcher(lambda items: seen.append(list(items)) or list(items), max_batch=8, window_s=0.1)
        batcher.start()
        await asyncio.gather(*(batcher.submit(("first", i)) for i in range(6)))
        wave = []
        for i in range(6):
            wave.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.06)
        answers = await asyncio.gather(*wave)
        await batcher.stop()
        return answers

    answers = _run(main())
    assert [a.result for a in answers] == list(range(6))
    assert seen == [[("first", i) for i in range(6)], list(range(6))], seen

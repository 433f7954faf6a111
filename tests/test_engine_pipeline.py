"""Pipeline, a connection's requests in order and the input held back from its parser, on its own."""
from server.engine.pipeline import MAX_PIPELINED, Pipeline


class Request:
    """Stands in for an Exchange: the pipeline only keeps and compares them."""


def test_requests_are_served_in_the_order_they_arrive():
    pipeline = Pipeline()
    first, second, third = Request(), Request(), Request()
    assert pipeline.enqueue(first) is False  # nothing before it: it is served now
    assert pipeline.enqueue(second) is True and pipeline.enqueue(third) is True
    assert pipeline.current is first and pipeline.queue == [second, third]
    assert pipeline.next() is second and pipeline.current is second
    assert pipeline.next() is third and pipeline.queue is None
    assert pipeline.next() is None and pipeline.current is None


def test_dropping_current_leaves_the_queue_waiting():
    pipeline = Pipeline()
    first, second = Request(), Request()
    pipeline.enqueue(first)
    pipeline.enqueue(second)
    pipeline.drop(first)
    assert pipeline.current is None and pipeline.queue == [second]


def test_dropping_a_queued_request_keeps_the_order_of_the_rest():
    pipeline = Pipeline()
    first, second, third = Request(), Request(), Request()
    for ex in (first, second, third):
        pipeline.enqueue(ex)
    pipeline.drop(second)
    assert pipeline.current is first and pipeline.queue == [third]
    pipeline.drop(third)
    assert pipeline.queue is None  # an empty queue is None, as the hot path checks
    pipeline.drop(Request())  # one it never had: nothing happens
    assert pipeline.current is first


def test_full_at_max_pipelined_and_room_below_half_of_it():
    pipeline = Pipeline()
    pipeline.enqueue(Request())  # current
    assert not pipeline.full() and pipeline.room()
    for _ in range(MAX_PIPELINED):
        pipeline.enqueue(Request())
    assert pipeline.full() and not pipeline.room()
    while pipeline.queue is not None and len(pipeline.queue) >= MAX_PIPELINED // 2:
        pipeline.next()
        assert not pipeline.full()
    assert pipeline.room()


def test_the_backlog_keeps_input_in_order_until_taken():
    pipeline = Pipeline()
    assert not pipeline.holds_input() and pipeline.take_backlog() is None
    pipeline.hold_backlog(memoryview(b"GET /a"))
    pipeline.hold(b" HTTP/1.1\r\n")
    pipeline.hold_backlog(b"\r\n")
    assert pipeline.holds_input()
    assert pipeline.take_backlog() == b"GET /a HTTP/1.1\r\n\r\n"
    assert not pipeline.holds_input() and pipeline.take_backlog() is None


def test_the_tail_after_an_upgrade_is_kept_until_taken():
    pipeline = Pipeline()
    pipeline.start_tail(memoryview(b"\x81\x05"))
    pipeline.hold(b"hello")
    assert pipeline.holds_input()
    assert pipeline.take_tail() == bytearray(b"\x81\x05hello")
    assert not pipeline.holds_input() and pipeline.take_tail() is None


def test_clear_drops_the_requests_and_leaves_held_input_to_its_owner():
    pipeline = Pipeline()
    for _ in range(3):
        pipeline.enqueue(Request())
    pipeline.start_tail(b"rest")
    pipeline.clear()
    assert pipeline.current is None and pipeline.queue is None
    assert pipeline.take_tail() == b"rest"

"""The runtime as the supervisor sees it: the bootstrap started with a
plugin's entry and its channel on fd 3, driven by a fake host."""

from __future__ import annotations

import json

import pytest
from fakehost import PLUGINS, FakeHost, golden_vectors

from corral import wire

HELLO = PLUGINS / "hello" / "plugin.py"


@pytest.fixture
def host():
    h = FakeHost(HELLO)
    yield h
    h.close()


@pytest.fixture
def ready(host):
    host.handshake()
    return host


def err(reply: wire.Reply) -> tuple[str, str]:
    assert reply.error is not None, f"expected an error, got output {reply.output!r}"
    return reply.error


def out(reply: wire.Reply):
    assert reply.error is None, f"expected output, got error {reply.error}"
    return json.loads(reply.output)


def test_the_conversation_of_protocol_md_is_byte_exact(host):
    gold = golden_vectors()
    # The plugin announces itself exactly as the `hello` vector does, but
    # offering versions 1 and 2 (host services) where the vector has 1.
    payload = gold["hello"][4:]
    assert payload[8:18] == b"\x01" + b"\x00" * 7 + b"\x01\x00"
    with_v2 = payload[:8] + b"\x02" + b"\x00" * 7 + b"\x01\x00\x02\x00" + payload[18:]
    assert host.read_raw_frame() == wire.frame(with_v2)
    host.send_raw(gold["init"])
    assert host.read_raw_frame() == gold["ready"]
    host.send_raw(gold["call"])
    assert host.read_raw_frame() == gold["reply-ok"]
    # Call 2 with an empty name: the handler's own error code.
    host.call(2, "greet", b'{"name":""}')
    assert host.read_raw_frame() == gold["reply-err"]
    host.send_raw(gold["ping"])
    assert host.read_raw_frame() == gold["pong"]
    # A Pong nobody asked for and a Cancel for an answered call: ignored.
    host.send_raw(gold["host-pong"] + gold["cancel"])
    host.send_raw(gold["shutdown"])
    assert host.wait_exit() == 0
    assert host.channel_closed()
    assert "shutdown hook ran" in host.stdout()


def test_json_bytes_and_none(ready):
    assert out(ready.roundtrip(1, "echo", b'{"a":[1,2.5,null,true,"\xc3\xa9"]}')) == {
        "a": [1, 2.5, None, True, "é"]}
    assert ready.roundtrip(2, "nothing", b"").output == b"null"
    assert ready.roundtrip(3, "raw").output == b"\xff\x00\xfe"
    # No input at all is None for the handler.
    assert ready.roundtrip(4, "echo", b"").output == b"null"


def test_errors_are_typed_and_the_plugin_goes_on(ready):
    assert err(ready.roundtrip(1, "boom")) == ("plugin_error", "ValueError: no good")
    assert "ValueError: no good" in ready.stderr(), "the traceback is on stderr"
    assert err(ready.roundtrip(2, "async_boom")) == ("plugin_error", "KeyError: 'missing'")
    code, message = err(ready.roundtrip(3, "nope"))
    assert code == "unknown_method"
    assert "`nope`" in message and "greet" in message, message
    code, message = err(ready.roundtrip(4, "echo", b"{not json"))
    assert code == "invalid_input" and "not JSON" in message
    code, message = err(ready.roundtrip(5, "not_json"))
    assert code == "invalid_output" and "set" in message
    assert out(ready.roundtrip(6, "greet", b'{"name":"again"}')) == {"greeting": "Hello, again!"}


def test_a_reply_over_the_negotiated_frame_is_reply_too_large(host):
    host.handshake(max_frame=4096)
    assert len(host.roundtrip(1, "big", b'{"bytes":4000}').output) == 4002
    code, message = err(host.roundtrip(2, "big", b'{"bytes":5000}'))
    assert code == "reply_too_large" and "4096" in message
    assert out(host.roundtrip(3, "echo", b"1")) == 1


def test_an_inline_handler_runs_on_the_reading_thread(ready):
    # `block` holds one thread; the inline call is answered by the thread
    # that reads, meanwhile, and not by `block`'s.
    ready.call(1, "block")
    ready.wait_log("blocking")
    reader = out(ready.roundtrip(2, "thread_name"))
    ready.call(3, "release")
    replies = ready.replies(2)
    assert out(replies[3]) == "ok"
    assert out(replies[1])["released"] is True
    assert out(replies[1])["thread"] != reader


def test_async_handlers(ready):
    assert out(ready.roundtrip(1, "async_add", b'{"a":2,"b":3}')) == 5


def test_plain_calls_run_concurrently(ready):
    # `block` returns only once `release` has run, which needs a second
    # call to be served while the first is still running.
    ready.call(1, "block")
    ready.call(2, "release")
    replies = ready.replies(2)
    assert out(replies[2]) == "ok"
    assert out(replies[1])["released"] is True


def test_cancel_sets_the_flag_of_a_plain_handler(ready):
    ready.call(7, "wait_for_cancel")
    ready.wait_log("waiting for cancel")
    # Ping is answered while the handler runs: the loop is not blocked.
    ready.send(wire.HostPing(9))
    assert ready.read_skipping_logs() == wire.Pong(9)
    ready.send(wire.Cancel(7))
    assert out(ready.reply(7)) == {"cancelled": True}
    # A Cancel for a call that is over is ignored.
    ready.send(wire.Cancel(7))
    assert out(ready.roundtrip(8, "echo", b'"still here"')) == "still here"


def test_cancel_cancels_an_async_handler(ready):
    ready.call(1, "async_wait")
    ready.wait_log("waiting for cancel")
    ready.send(wire.Cancel(1))
    code, _ = err(ready.reply(1))
    assert code == "cancelled"
    assert any(log.message == "async task cancelled" for log in ready.logs), ready.logs


def test_logging_and_context_logs_and_events_reach_the_host(ready):
    assert out(ready.roundtrip(1, "logs")) == "helper imported"
    by_message = {log.message: log for log in ready.logs}
    info = by_message["from logging info"]
    assert info.level == wire.LOG_INFO
    assert ("logger", "hello") in info.fields and ("call", "1") in info.fields
    warn = by_message["from the context"]
    assert warn.level == wire.LOG_WARN
    assert ("key", "value") in warn.fields and ("call", "1") in warn.fields
    assert "below the level" not in by_message
    assert ready.events == [wire.Event("progress", b'{"done":1}')]


def test_settings_and_limits_reach_handlers(host):
    host.handshake(config=b'{"greeting":"hi"}',
                   limits=wire.InitLimits(32 << 20, 1000, 12, 32))
    assert out(host.roundtrip(1, "config")) == {"config": {"greeting": "hi"}, "pids": 12}


def test_end_of_stream_exits_zero(ready):
    ready.sock.shutdown(2)
    assert ready.wait_exit() == 0


def test_a_handler_calling_sys_exit_ends_the_process_with_its_status(ready):
    ready.call(1, "exit_now", b"3")
    assert ready.wait_exit() == 3


def test_shutdown_answers_the_calls_in_flight_then_exits_zero(ready):
    ready.call(1, "sleep_then_answer", b"300")
    ready.send(wire.Shutdown(20_000))
    assert out(ready.reply(1)) == "slept"
    assert ready.wait_exit() == 0
    assert "shutdown hook ran" in ready.stdout()


def test_shutdown_stops_waiting_when_its_grace_runs_out(ready):
    ready.call(1, "block")
    ready.wait_log("blocking")
    ready.send(wire.Shutdown(100))
    assert ready.wait_exit() == 0
    assert ready.channel_closed(), "no reply: the handler was still blocked"


@pytest.mark.parametrize("garbage, why", [
    (b"\x05\x00\x00\x00\x09\x00\x00\x00\x00", "unknown variant"),
    (b"\x04\x00\x00\x00\x02\x00\x00\x00", "too short for its fields"),
    ((1 << 24).to_bytes(4, "little"), "a length over the limit"),
    (wire.encode_frame(wire.Init(1, 4096, b"{}", wire.InitLimits())), "a second Init"),
    (b"\x1c\x00\x00\x00\x01\x00\x00\x00" + b"\x01" + b"\x00" * 7 + b"\x02" + b"\x00" * 7
     + b"\xc0\xaf" + b"\x00" * 16, "a method that is not UTF-8"),
])
def test_a_garbled_frame_ends_the_plugin_with_76_and_nothing_more(ready, garbage, why):
    ready.send_raw(garbage)
    assert ready.wait_exit() == 76, why
    assert ready.channel_closed(), f"the plugin wrote after {why}"
    assert "protocol violation" in ready.stderr()


def test_end_of_stream_inside_a_frame_is_a_protocol_error(ready):
    ready.send_raw(golden_vectors()["call"][:10])
    ready.sock.shutdown(1)  # SHUT_WR: the plugin reads end of stream
    assert ready.wait_exit() == 76


def test_init_outside_the_offered_frame_size_is_refused(host):
    assert isinstance(host.read(), wire.Hello)
    host.send(wire.Init(1, 512, b"{}", wire.InitLimits()))
    assert host.wait_exit() == 76
    assert host.channel_closed(), "no Ready"


def test_a_version_not_offered_is_refused(host):
    host.read()
    host.send(wire.Init(3, 4096, b"{}", wire.InitLimits()))
    assert host.wait_exit() == 76


def test_a_call_cancelled_before_its_handler_starts_never_runs(host):
    # pids = 3 leaves room for one thread besides the main one: call 2 waits
    # behind call 1
    # and is cancelled before it starts.
    host.handshake(limits=wire.InitLimits(64 << 20, 10_000, 3, 64))
    host.call(1, "wait_for_cancel")
    host.wait_log("waiting for cancel")
    host.call(2, "wait_for_cancel")
    host.send(wire.Cancel(2))
    host.send(wire.Cancel(1))
    replies = host.replies(2)
    assert out(replies[1]) == {"cancelled": True}
    assert err(replies[2]) == ("cancelled", "cancelled before the handler started")
    assert [log.message for log in host.logs].count("waiting for cancel") == 1


def test_without_room_for_threads_calls_run_on_the_serve_loop(host):
    host.handshake(limits=wire.InitLimits(64 << 20, 10_000, 2, 64))
    assert out(host.roundtrip(1, "echo", b'"inline"')) == "inline"
    assert err(host.roundtrip(2, "boom")) == ("plugin_error", "ValueError: no good")
    assert out(host.roundtrip(3, "async_add", b'{"a":1,"b":1}')) == 2


# ---- leader/follower: the thread that reads a plain call runs it


def limits(pids: int) -> wire.InitLimits:
    return wire.InitLimits(64 << 20, 10_000, pids, 64)


def test_a_plain_handler_runs_on_the_thread_that_read_its_call(ready):
    first_reader = out(ready.roundtrip(1, "reader"))
    assert out(ready.roundtrip(2, "whoami")) == first_reader
    # It handed the reading on before running the handler, and kept none.
    second_reader = out(ready.roundtrip(3, "reader"))
    assert second_reader != first_reader
    assert out(ready.roundtrip(4, "whoami")) == second_reader


def test_ping_and_cancel_reach_a_plain_handler_on_what_was_the_reading_thread(ready):
    reading = out(ready.roundtrip(1, "reader"))
    ready.call(2, "hold_until_cancelled")
    ready.wait_log("holding")
    ready.send(wire.HostPing(5))
    assert ready.read_skipping_logs() == wire.Pong(5)
    assert out(ready.roundtrip(3, "echo", b'"meanwhile"')) == "meanwhile"
    ready.send(wire.Cancel(2))
    assert out(ready.reply(2)) == {"cancelled": True, "thread": reading}
    assert out(ready.roundtrip(4, "echo", b'"after"')) == "after"


def test_long_calls_run_at_once_each_on_the_thread_that_read_it(ready):
    readers = []
    for i in (1, 2, 3):
        readers.append(out(ready.roundtrip(10 + i, "reader")))
        ready.call(i, "at_gate")
        ready.wait_log("at the gate")
    ready.call(4, "open_gate")
    replies = ready.replies(4)
    assert out(replies[4]) == "open"
    assert [out(replies[i]) for i in (1, 2, 3)] == [
        {"released": True, "thread": t} for t in readers]
    assert len(set(readers)) == 3


def test_the_pool_never_has_more_threads_than_the_pids_limit_allows(host):
    # pids = 4: the main thread, the event loop and two more, so two plain
    # calls run at once and a third waits for one of them to finish.
    host.handshake(limits=limits(4))
    for i in (1, 2, 3):
        host.call(i, "at_gate")
    host.wait_log("at the gate")
    host.wait_log("at the gate")
    assert out(host.roundtrip(4, "threads")) == 4
    host.call(5, "open_gate")
    replies = host.replies(4)
    assert out(replies[5]) == "open"
    first, second, third = (out(replies[i])["thread"] for i in (1, 2, 3))
    # The third call ran on a thread freed by the first two: it had waited.
    assert first != second and third in (first, second)
    assert [log.message for log in host.logs].count("at the gate") == 3
    assert out(host.roundtrip(6, "threads")) == 4


def test_shutdown_drains_the_running_call_and_the_backlog(host):
    host.handshake(limits=limits(3))  # one thread besides the reader
    host.call(1, "sleep_then_answer", b"200")
    host.call(2, "sleep_then_answer", b"100")  # waits for call 1's thread
    host.send(wire.Shutdown(20_000))
    replies = host.replies(2)
    assert out(replies[1]) == "slept" and out(replies[2]) == "slept"
    assert host.wait_exit() == 0
    assert "shutdown hook ran" in host.stdout()


def test_without_room_for_threads_every_call_runs_on_the_one_thread(host):
    host.handshake(limits=limits(2))
    only = out(host.roundtrip(1, "reader"))
    assert out(host.roundtrip(2, "whoami")) == only
    assert out(host.roundtrip(3, "reader")) == only
    assert out(host.roundtrip(4, "sleep_then_answer", b"1")) == "slept"
    assert out(host.roundtrip(5, "whoami")) == only


FEW_THREADS = PLUGINS / "few_threads" / "plugin.py"


def test_when_no_thread_can_be_started_the_reader_runs_the_call_and_reads_on():
    host = FakeHost(FEW_THREADS)
    try:
        host.handshake(config=b'{"threads": 0}')
        only = out(host.roundtrip(1, "reader"))
        assert out(host.roundtrip(2, "whoami")) == only
        assert out(host.roundtrip(3, "reader")) == only  # it kept the reading
        assert out(host.roundtrip(4, "whoami")) == only
    finally:
        host.close()


def test_a_call_that_finds_no_thread_waits_for_one_to_be_free():
    host = FakeHost(FEW_THREADS)
    try:
        host.handshake(config=b'{"threads": 1}')
        first_reader = out(host.roundtrip(1, "reader"))
        host.call(2, "at_gate")  # runs on the first reader, a new thread reads
        host.wait_log("at the gate")
        second_reader = out(host.roundtrip(3, "reader"))
        host.call(4, "at_gate")  # no thread to read instead: it waits
        host.call(5, "open_gate")
        replies = host.replies(3)
        assert out(replies[5]) == "open"
        # Call 4 ran on the thread call 2 freed; the reading never moved.
        assert out(replies[2]) == {"released": True, "thread": first_reader}
        assert out(replies[4]) == {"released": True, "thread": first_reader}
        assert out(host.roundtrip(6, "reader")) == second_reader != first_reader
    finally:
        host.close()


def test_a_call_before_init_is_refused(host):
    host.read()
    host.call(1, "echo")
    assert host.wait_exit() == 76
    assert host.channel_closed()


def test_a_plugin_without_names_takes_the_manifests_from_the_supervisor():
    host = FakeHost(PLUGINS / "unnamed" / "plugin.py",
                    env={"CORRAL_PLUGIN": "from-manifest", "CORRAL_PLUGIN_VERSION": "3.2.1"})
    try:
        hello = host.handshake()
        assert (hello.name, hello.version) == ("from-manifest", "3.2.1")
        assert out(host.roundtrip(1, "hi")) == "hi"
    finally:
        host.close()


def test_the_decorator_example_plugin():
    example = PLUGINS.parent.parent.parent.parent / "examples" / "plugins" / "py-greeter"
    host = FakeHost(example / "plugin.py")
    try:
        hello = host.handshake(config=b'{"greeting": "Hi"}')
        assert (hello.name, hello.version) == ("py-greeter", "0.1.0")
        assert out(host.roundtrip(1, "greet", b'{"name": "Ada"}')) == {"greeting": "Hi, Ada!"}
        assert err(host.roundtrip(2, "greet", b"{}"))[0] == "empty_name"
        assert out(host.roundtrip(3, "text.count", b'{"text": "one two"}')) == {
            "words": 2, "chars": 7}
        host.call(4, "sleep", b'{"ms": 60000}')
        host.send(wire.Cancel(4))
        # Cancelled before or while it ran, it ends without sleeping a minute.
        reply = host.reply(4)
        assert reply.error == ("cancelled", "cancelled before the handler started") or out(
            reply)["cancelled"] is True, reply
    finally:
        host.close()


def test_the_escape_suites_plugin_loads_and_answers(tmp_path):
    # Outside the sandbox its attacks would succeed; the escape suite runs
    # it confined. Here: it starts, and the harmless methods answer.
    hostile = PLUGINS.parent.parent.parent.parent / "tests" / "plugins" / "hostile-python"
    host = FakeHost(hostile / "plugin.py", env={"TMPDIR": str(tmp_path)})
    try:
        assert host.handshake().name == "hostile-python"
        assert out(host.roundtrip(1, "whoami"))["pid"] == host.pid
        assert err(host.roundtrip(2, "raise_error")) == ("plugin_error",
                                                         "RuntimeError: on purpose")
        assert out(host.roundtrip(3, "write_scratch"))["ok"] is True
        assert (tmp_path / "scratch.txt").read_text() == "fine"
    finally:
        host.close()

"""The transport against a peer that misbehaves (no daemon needed): an
answer broken off, a body that is not JSON, chunked events split anywhere."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

import corral_client as cc


class FakeDaemon:
    """Answers each connection with ``answer`` bytes, then closes it."""

    def __init__(self, path: Path, answer: bytes) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.answer = answer
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                # The whole body too, before answering: a peer that closes
                # while the client still writes it breaks the client's pipe.
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or b"0")
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                data = head + b"\r\n\r\n" + body
                self.requests.append(data)
                for i in range(0, len(self.answer), 7):  # in small pieces
                    conn.sendall(self.answer[i:i + 7])

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake(tmp_path):
    daemons = []

    def make(answer: bytes) -> Path:
        path = tmp_path / f"d{len(daemons)}.sock"
        daemons.append(FakeDaemon(path, answer))
        return path

    yield make
    for d in daemons:
        d.close()


def both(path: Path, call):
    """Runs ``call`` with the blocking and the asyncio client; returns
    both results (or raises the first error)."""
    sync = call(cc.Client(path, timeout=10))
    result = call(cc.AsyncClient(path, timeout=10))
    return sync, asyncio.run(result) if asyncio.iscoroutine(result) else result


def test_an_answer_broken_off_is_daemon_unavailable(fake):
    path = fake(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"status\"")
    with pytest.raises(cc.DaemonUnavailable):
        cc.Client(path, timeout=10).health()
    with pytest.raises(cc.DaemonUnavailable):
        asyncio.run(cc.AsyncClient(path, timeout=10).health())


def test_no_answer_at_all_is_daemon_unavailable(fake):
    path = fake(b"")
    with pytest.raises(cc.DaemonUnavailable):
        cc.Client(path, timeout=10).health()
    with pytest.raises(cc.DaemonUnavailable):
        asyncio.run(cc.AsyncClient(path, timeout=10).health())


def test_a_body_that_is_not_json_is_a_bad_answer(fake):
    path = fake(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    for run in (lambda: cc.Client(path, timeout=10).health(),
                lambda: asyncio.run(cc.AsyncClient(path, timeout=10).health())):
        with pytest.raises(cc.CorralError) as e:
            run()
        assert e.value.code == "bad_answer"


def test_an_error_answer_is_typed_and_requests_are_well_formed(fake):
    body = b'{"error":{"code":"plugin_not_found","message":"no plugin named x","plugin":"x"}}'
    path = fake(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for run in (lambda: cc.Client(path, timeout=10).call("x", "m", {"a": 1}, timeout_ms=5),
                lambda: asyncio.run(cc.AsyncClient(path, timeout=10).call("x", "m", {"a": 1},
                                                                             timeout_ms=5))):
        with pytest.raises(cc.PluginNotFound) as e:
            run()
        assert e.value.plugin == "x" and e.value.status == 404


def test_chunked_events_split_anywhere_come_out_whole(fake):
    events = b'{"seq":1,"type":"loaded","plugin":"a"}\n{"seq":2,"type":"ready","plugin":"a"}\n'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(events[i:i + 10]), events[i:i + 10])
                      for i in range(0, len(events), 10))
    path = fake(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    with cc.Client(path, timeout=10).events("a") as stream:
        assert [e["seq"] for e in stream] == [1, 2]

    async def read_all():
        async with cc.AsyncClient(path).events("a") as stream:
            return [e["type"] async for e in stream]

    assert asyncio.run(read_all()) == ["loaded", "ready"]

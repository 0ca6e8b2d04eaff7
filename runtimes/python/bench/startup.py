"""Cold start (spawn to Ready) and warm call round trip of a no-op plugin
on the corral SDK against a bare python3 doing the same handshake, side by
side in one run, outside the sandbox (the sandbox's own cost is the same
for both and is measured by corral's benches).

    python3 runtimes/python/bench/startup.py [--python /usr/bin/python3] [--runs 50]

Compile the package first (python3 -m compileall runtimes/python/corral),
as a shipped corral has it: under -B nothing else would cache the bytecode.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from corral import wire  # noqa: E402
from corral.testing import BOOTSTRAP  # noqa: E402


class Peer:
    """A started plugin: the host's end of its channel and its pid."""

    def __init__(self, python: str, argv: list[str]) -> None:
        self.sock, child = socket.socketpair()
        began = time.perf_counter()
        self.pid = os.posix_spawn(python, [python, "-I", "-B", *argv], {"LANG": "C.UTF-8"},
                                  file_actions=[(os.POSIX_SPAWN_DUP2, child.fileno(), 3)])
        child.close()
        self.buf = wire.FrameBuffer(wire.HARD_MAX_FRAME)
        while not isinstance(self.read(), wire.Hello):
            pass
        self.sock.sendall(wire.encode_frame(wire.Init(
            1, 1 << 20, b"{}", wire.InitLimits(64 << 20, 10_000, 16, 64))))
        while not isinstance(self.read(), wire.Ready):
            pass
        #: Seconds from spawn to Ready.
        self.ready = time.perf_counter() - began

    def read(self) -> wire.Message:
        while True:
            payload = self.buf.next_payload()
            if payload is not None:
                return wire.decode_plugin(payload)
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the plugin closed the channel")
            self.buf.extend(data)

    def round_trips(self, method: str, n: int) -> list[float]:
        times = []
        for i in range(n):
            began = time.perf_counter()
            self.sock.sendall(wire.encode_frame(wire.Call(i, method, b"", 0)))
            while not isinstance(self.read(), wire.Reply):
                pass
            times.append(time.perf_counter() - began)
        return times

    def context_switches(self) -> int:
        """Context switches of all the plugin's threads so far: each is a
        thread going to sleep or being pushed off a CPU, a count that a
        busy machine disturbs much less than it does times."""
        total = 0
        for status in Path(f"/proc/{self.pid}/task").glob("*/status"):
            try:
                for line in status.read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):  # a thread ended
                pass
        return total

    def stop(self) -> float:
        """Closes the channel; the CPU seconds the plugin used in all."""
        self.sock.close()
        _, _, usage = os.wait4(self.pid, 0)
        return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    subjects = {
        "bare python3": [str(HERE / "bare_handshake.py")],
        "corral SDK": [str(BOOTSTRAP), str(HERE / "noop_plugin.py")],
    }
    starts: dict[str, list[float]] = {k: [] for k in subjects}
    cpus: dict[str, list[float]] = {k: [] for k in subjects}
    for _ in range(args.runs):  # interleaved, so drift hits both alike
        for name, argv in subjects.items():
            peer = Peer(args.python, argv)
            starts[name].append(peer.ready)
            cpus[name].append(peer.stop())
    print(f"{'':14} {'spawn->Ready median':>20} {'CPU to exit median':>20}")
    for name in subjects:
        print(f"{name:14} {statistics.median(starts[name]) * 1e3:17.2f} ms "
              f"{statistics.median(cpus[name]) * 1e3:17.2f} ms")
    ratio = statistics.median(starts["corral SDK"]) / statistics.median(starts["bare python3"])
    print(f"start ratio corral/bare: {ratio:.2f} (target: within 1.3)")
    for name, argv, methods in [("bare python3", subjects["bare python3"], ["noop"]),
                                ("corral SDK", subjects["corral SDK"], ["noop", "noop_inline"])]:
        peer = Peer(args.python, argv)
        for method in methods:
            peer.round_trips(method, 200)  # threads started, code warm
            switches = peer.context_switches()
            times = peer.round_trips(method, 2000)
            switches = peer.context_switches() - switches
            print(f"warm call {name} {method}: median {statistics.median(times) * 1e6:.1f} us, "
                  f"{switches / len(times):.2f} context switches per call")
        peer.stop()


if __name__ == "__main__":
    main()

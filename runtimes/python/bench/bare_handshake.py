"""The baseline for a Python plugin's start: a bare python3 that does the
same handshake (Hello, read Init, Ready) with nothing but socket and
struct, then answers every call with `null` until end of stream.

Run it as corral runs a plugin: python3 -I -B bare_handshake.py, channel on
fd 3. The issue's target is a corral Python plugin starting within 1.3x of
this.
"""

import socket
import struct

channel = socket.socket(fileno=3)


def send(payload):
    channel.sendall(struct.pack("<I", len(payload)) + payload)


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = channel.recv(n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def text(s):
    return struct.pack("<Q", len(s)) + s


send(struct.pack("<I", 0) + b"CRRL" + struct.pack("<QH", 1, 1) + text(b"bare")
     + text(b"0.1.0") + struct.pack("<I", 4 << 20))
read_exact(struct.unpack("<I", read_exact(4))[0])  # Init
send(struct.pack("<I", 1))  # Ready
while True:
    payload = read_exact(struct.unpack("<I", read_exact(4))[0])
    tag = struct.unpack_from("<I", payload)[0]
    if tag == 1:  # Call: reply Ok(null)
        call_id = struct.unpack_from("<Q", payload, 4)[0]
        send(struct.pack("<IQI", 2, call_id, 0) + text(b"null"))
    elif tag == 3:  # Ping
        send(struct.pack("<I", 5) + payload[4:12])
    elif tag == 4:  # Shutdown
        raise SystemExit(0)

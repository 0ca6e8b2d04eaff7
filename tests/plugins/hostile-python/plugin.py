"""The escape suite's Python plugin: asks for nothing, so every attack must
fail inside the sandbox. Each method tries one thing and reports what
happened; the suite asserts that it was refused (an error the plugin saw,
or the typed error corrald reports when the kernel killed it)."""

import os

import corral

plugin = corral.Plugin("hostile-python", "0.1.0")


def attempt(action):
    """Runs ``action``: {"ok": True, "result": ...} or the error it raised."""
    try:
        return {"ok": True, "result": action()}
    except OSError as e:
        return {"ok": False, "error": type(e).__name__, "errno": e.errno, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the suite
        return {"ok": False, "error": type(e).__name__, "message": str(e)}


@plugin.method()
def read_file(input):
    """Reads a host file outside the package (default /etc/shadow)."""
    path = (input or {}).get("path", "/etc/shadow")

    def read():
        with open(path, "rb") as f:
            return len(f.read())

    return attempt(read)


@plugin.method()
def write_file(input):
    """Writes outside the scratch directory (default /var/tmp/escaped)."""
    path = (input or {}).get("path", "/var/tmp/corral-escaped-by-python")

    def write():
        with open(path, "w") as f:
            f.write("escaped")
        return path

    return attempt(write)


@plugin.method()
def write_scratch(input):
    """Writes in $TMPDIR: allowed (the plugin's own scratch)."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "scratch.txt")

    def write():
        with open(path, "w") as f:
            f.write("fine")
        with open(path) as f:
            return f.read()

    return attempt(write)


@plugin.method()
def list_processes(input):
    """Lists /proc: only the plugin's own pid namespace is visible."""
    return attempt(lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))


@plugin.method()
def socket(input):
    """Opens a network socket without network permission: seccomp kills."""
    import socket as sock

    family = sock.AF_INET6 if (input or {}).get("domain") == "inet6" else sock.AF_INET
    return attempt(lambda: sock.socket(family, sock.SOCK_STREAM).fileno())


@plugin.method()
def subprocess(input):
    """Runs a program without exec permission: seccomp kills (fork/clone)."""
    import subprocess as sp

    return attempt(lambda: sp.run(["/bin/true"], check=False).returncode)


@plugin.method()
def system(input):
    return attempt(lambda: os.system("true"))


@plugin.method()
def fork(input):
    return attempt(os.fork)


@plugin.method()
def ctypes_call(input):
    """Reaches libc through ctypes to call a forbidden system call
    (ptrace): seccomp kills, whatever the route to the kernel."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return attempt(lambda: libc.ptrace(0, 0, None, None))


@plugin.method()
def setuid(input):
    return attempt(lambda: os.setuid(0))


@plugin.method()
def memory_bomb(input):
    """Allocates until the cgroup's limit: memory_limit_exceeded."""
    hoard = []
    for _ in range(int((input or {}).get("max_mib", 1024))):
        hoard.append(bytearray(1 << 20))
    return {"ok": True, "mib": len(hoard)}


@plugin.method()
def spin(input):
    """Never returns, never looks at ctx.cancelled: timeout, then killed."""
    n = 0
    while True:
        n += 1


@plugin.method()
def raise_error(input):
    raise RuntimeError("on purpose")


@plugin.method()
def whoami(input):
    return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}


@plugin.method()
def service(ctx, input):
    """A host service through corrald: its answer, or its typed error."""
    try:
        return {"ok": ctx.host.kv.get("users", "u1")}
    except corral.ServiceError as e:
        return {"error": type(e).__name__, "code": e.code}

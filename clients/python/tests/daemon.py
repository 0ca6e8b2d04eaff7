"""A real corrald for the client's tests, started the way corral's own
daemon tests start it (tests/daemon/src/setup.rs): a directory under
/var/tmp with its configuration, socket, state, policy and a source folder
holding copies of the packaged test plugins, and a cgroup base and uid
range of its own, so that parallel daemons never touch each other's
plugins. (``corrald --dev`` would share the cgroup base ``corral-dev`` with
every other development daemon on the machine and remove their cgroups as
stale at start.)

It needs what ``cargo xtask package`` builds, named by the variables
``cargo xtask test`` sets: CORRAL_BIN_DIR (corrald), CORRAL_SANDBOX (the
trampoline) and CORRAL_TEST_PACKAGES (the packages).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from corral_client import Client, CorralError, PluginNotFound

HOW = ("run the client tests through `cargo xtask test`, or by hand after `cargo xtask package`:\n"
       "  CORRAL_BIN_DIR=$PWD/target/debug \\\n"
       "  CORRAL_SANDBOX=$PWD/target/x86_64-unknown-linux-gnu/plugin-test/corral-sandbox \\\n"
       "  CORRAL_TEST_PACKAGES=$PWD/target/corral-packages \\\n"
       "  python3 -m pytest clients/python\n"
       "(as root: corrald creates cgroups and runs plugins as other uids)")

READY_WAIT = 120.0
EXIT_WAIT = 30.0
#: Where this suite's uid ranges start: above the Rust daemon tests'
#: (3,000,000 + up to 4096 * 64 ranges of 1024).
UID_BASE = 400_000_000
UIDS = 1024
# Daemons of one run that may be alive at the same time.
INSTANCES_PER_RUN = 4


class TestEnv:
    __test__ = False  # not a pytest test class, though it is named like one

    def __init__(self) -> None:
        missing = [v for v in ("CORRAL_BIN_DIR", "CORRAL_SANDBOX", "CORRAL_TEST_PACKAGES")
                   if not os.environ.get(v)]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not set: {HOW}")
        self.bin_dir = Path(os.environ["CORRAL_BIN_DIR"])
        self.sandbox = Path(os.environ["CORRAL_SANDBOX"])
        self.packages = Path(os.environ["CORRAL_TEST_PACKAGES"])
        for path, what in [(self.bin_dir / "corrald", "corrald"), (self.sandbox, "the trampoline"),
                           (self.packages / "hello" / "plugin.toml", "the hello package"),
                           (self.packages / "hostile" / "plugin.toml", "the hostile package")]:
            if not path.is_file():
                raise RuntimeError(f"{what} is missing at {path}: {HOW}")
        if os.geteuid() != 0:
            raise RuntimeError(f"the client tests start corrald, which needs root: {HOW}")

    def package(self, name: str) -> Path:
        return self.packages / name


def copy_package(src: Path, dest: Path, name: str | None = None) -> Path:
    """A copy of a built package, renamed in its manifest when ``name``."""
    shutil.copytree(src, dest)
    if name is not None:
        manifest = dest / "plugin.toml"
        text = manifest.read_text()
        text, n = re.subn(r'(?m)^name\s*=\s*".*"$', f'name = "{name}"', text, count=1)
        assert n == 1, f"no name in {manifest}"
        manifest.write_text(text)
    return dest


#: The checkout's runtime scripts (runtimes/python/corral_bootstrap.py),
#: for a corrald that has not been told where they are.
RUNTIMES = Path(__file__).resolve().parents[3] / "runtimes"


class Daemon:
    _instances = itertools.count()

    def __init__(self, env: TestEnv, packages: list[str], *, policy: str = "",
                 extra: dict[str, Path] | None = None) -> None:
        self.env = env
        self.root = Path(tempfile.mkdtemp(prefix="corral-py-", dir="/var/tmp"))
        # Plugins run as other uids and reach their packages below here.
        os.chmod(self.root, 0o755)
        # Several daemons of one test run may be alive at once (module
        # fixtures): each gets a cgroup base and a uid range of its own,
        # since corrald refuses a base another live corrald holds.
        n = next(Daemon._instances) % INSTANCES_PER_RUN
        self.id = f"{os.getpid()}-{n}"
        self.cgroup_base = f"corral-py-{self.id}"
        self.uid_first = UID_BASE + ((os.getpid() % 65536) * INSTANCES_PER_RUN + n) * UIDS
        self.uid_last = self.uid_first + UIDS - 1
        self.socket = self.root / "corral.sock"
        self.sources = self.root / "sources"
        for sub in ("sources", "policy.d", "state", "uploads"):
            (self.root / sub).mkdir()
        (self.root / "policy.toml").write_text(policy)
        (self.root / "policy.d" / "00-test-uids.toml").write_text(
            f'[sandbox]\nuid_range = "{self.uid_first}-{self.uid_last}"\n')
        (self.root / "corrald.toml").write_text(
            f'socket = "{self.socket}"\nsocket_mode = "0660"\nsocket_group = "root"\n'
            f'state_dir = "{self.root / "state"}"\npolicy = "{self.root / "policy.toml"}"\n'
            f'policy_dir = "{self.root / "policy.d"}"\nadmin_groups = []\ncaller_groups = []\n'
            f'cgroup_base = "{self.cgroup_base}"\nshutdown_grace = "5s"\n\n'
            f'[[sources]]\npath = "{self.sources}"\nload = true\nwatch = true\n')
        for name in packages:
            copy_package(env.package(name), self.sources / name)
        for name, path in (extra or {}).items():
            copy_package(path, self.sources / name)
        self.log_path = self.root / "corrald.log"
        self._log = open(self.log_path, "ab")
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("CORRAL_CONFIG", "CORRAL_SOCKET", "NOTIFY_SOCKET",
                                    "WATCHDOG_USEC", "JOURNAL_STREAM", "CORRAL_MASK_FEATURES")}
        environment.update(CORRAL_SANDBOX=str(env.sandbox), RUST_LOG="info")
        environment.setdefault("CORRAL_RUNTIMES", str(RUNTIMES))
        self.process = subprocess.Popen(
            [str(env.bin_dir / "corrald"), "--config", str(self.root / "corrald.toml")],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=environment)
        self.client = Client(self.socket, timeout=60)
        self.wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WAIT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"corrald exited with {self.process.returncode} before it was "
                                   f"ready; its log:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"corrald did not answer within {READY_WAIT}s; its log:\n"
                                   f"{self.log()}")
            try:
                self.client.health()
                if "corrald ready" in self.log():
                    return
            except (CorralError, OSError):
                pass
            time.sleep(0.05)

    def wait_plugin_ready(self, name: str, within: float = 60.0) -> None:
        """Waits for ``name`` (installed from the sources at start) to serve."""
        deadline = time.monotonic() + within
        while True:
            try:
                info = self.client.info(name)
            except PluginNotFound:
                said = "\n".join(line for line in self.log().splitlines() if name in line)
                raise AssertionError(f"corrald did not install {name} from its sources; "
                                     f"its log about it:\n{said}") from None
            if info.get("state") == "ready":
                return
            if info.get("state") == "installed":  # its load failed
                said = "\n".join(line for line in self.log().splitlines() if name in line)
                raise AssertionError(f"corrald installed {name} but could not load it; its "
                                     f"log about it:\n{said}")
            assert time.monotonic() < deadline, (
                f"{name} not ready ({info.get('state')}, last error "
                f"{info.get('last_error')}); log:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM; a clean exit is status 0 with the socket removed."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(EXIT_WAIT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
                    raise AssertionError(f"corrald did not stop within {EXIT_WAIT}s") from None
            assert self.process.returncode == 0, (
                f"corrald exited with {self.process.returncode}; its log:\n{self.log()}")
            assert not self.socket.exists(), "the socket is left after a clean stop"
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Whatever a failed run left: plugin processes in this daemon's uid
        range and its cgroups."""
        kill_uid_range(self.uid_first, self.uid_last)
        remove_cgroup_base(self.cgroup_base)
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def kill_uid_range(first: int, last: int) -> None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if first <= int(uid_line.split()[1]) <= last:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def remove_cgroup_base(base: str) -> None:
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return
    for hierarchy in root.iterdir():
        top = hierarchy / base
        if not top.is_dir():
            continue
        for leaf in sorted((p for p in top.iterdir() if p.is_dir()), reverse=True):
            try:
                for pid in (leaf / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
            for _ in range(50):
                try:
                    leaf.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        try:
            top.rmdir()
        except OSError:
            pass

"""A network namespace behind a veth pair, for bench/scenarios.py (root only).

    host netns                          namespace pjb<pid>
    ┌────────────────────┐   veth pair   ┌───────────────────────┐
    │ pg_recvlogical,    │ pjh<pid> ──── │ pjn<pid>  Postgres     │
    │ projector, sink    │  10.231.T.1   │ 10.231.T.2            │
    └────────────────────┘               └───────────────────────┘

Every byte between the clients and Postgres crosses the veth pair: the
kernel's full (non-loopback) TCP path, with segmentation offloads as veth
has them. `set_rate` caps both directions with an htb qdisc (this kernel
has no netem; `DelayedPath` below adds a round trip instead, through a
TUN pair and examples/delay_line). `down` removes the pair and the
namespace and ends what still runs inside it; it runs on exit and on
SIGTERM/SIGINT/SIGHUP too, and `python3 bench/netns.py --cleanup` removes
what an earlier run left (names pjb*/pjh*/pjq* only).
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys

PREFIX_NS = "pjb"
PREFIX_HOST_IF = "pjh"
PREFIX_DELAY_NS = "pjq"  # DelayedPath's namespaces (its TUN devices go with its process)


def run(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


class Veth:
    # Names and subnet; a subclass sets its own so both can run side by side.
    NS_PREFIX = PREFIX_NS
    HOST_IF_PREFIX = PREFIX_HOST_IF
    INNER_IF_PREFIX = "pjn"
    NET = "10.231"
    WHAT = "the veth pair"

    def __init__(self):
        pid = os.getpid()
        tag = 20 + pid % 200  # third octet: runs of different pids do not collide
        self.name = f"{self.NS_PREFIX}{pid}"
        self.host_if = f"{self.HOST_IF_PREFIX}{pid}"   # at most 15 characters (IFNAMSIZ)
        self.inner_if = f"{self.INNER_IF_PREFIX}{pid}"
        self.host_ip = f"{self.NET}.{tag}.1"
        self.inner_ip = f"{self.NET}.{tag}.2"
        self.rate = None
        self._up = False

    def check(self):
        """Exits with the fix when this path cannot be set up here."""
        if os.getuid() != 0:
            sys.exit(f"{self.WHAT} needs root (ip netns add)")

    def make_links(self):
        """The two interfaces, the inner one inside the namespace."""
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
        run("ip", "link", "set", self.inner_if, "netns", self.name)

    def up(self):
        self.check()
        atexit.register(self.down)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            # SystemExit unwinds the callers' finally blocks, then atexit.
            signal.signal(sig, lambda *_: sys.exit(f"signal: cleaning up {self.name}"))
        self._up = True
        try:
            run("ip", "netns", "add", self.name)
            self.make_links()
            run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            run("ip", "link", "set", self.host_if, "up")
            self.inside("ip", "addr", "add", f"{self.inner_ip}/24", "dev", self.inner_if)
            self.inside("ip", "link", "set", self.inner_if, "up")
            self.inside("ip", "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            self.down()
            sys.exit(f"cannot set up {self.WHAT}: {' '.join(e.cmd)}: {e.stderr}")
        except RuntimeError as e:
            self.down()
            sys.exit(f"cannot set up {self.WHAT}: {e}")
        return self

    def inside(self, *cmd, check=True):
        return run("ip", "netns", "exec", self.name, *cmd, check=check)

    def set_rate(self, rate):
        """Caps both directions at `rate` (tc syntax, e.g. "1gbit"); None
        removes the cap."""
        for dev, where in ((self.host_if, run), (self.inner_if, self.inside)):
            where("tc", "qdisc", "del", "dev", dev, "root", check=False)
            if rate:
                # r2q 1000: a quantum under htb's 200,000-byte ceiling at 1 Gbit/s.
                where("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb",
                      "default", "10", "r2q", "1000")
                where("tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10",
                      "htb", "rate", rate, "ceil", rate)
        self.rate = rate

    def set_gro(self, on):
        """GRO on (or off) at both ends, as a NIC merges the segments it
        receives; veth does not by default (it then receives every segment
        of the walsender's small writes alone, as loopback does)."""
        if on and not shutil.which("ethtool"):
            sys.exit("the veth-gro scenario needs ethtool (apt-get install ethtool)")
        if not shutil.which("ethtool"):
            return
        state = "on" if on else "off"
        run("ethtool", "-K", self.host_if, "gro", state, check=on)
        self.inside("ethtool", "-K", self.inner_if, "gro", state, check=on)

    def qdisc_stats(self):
        return subprocess.run(["tc", "-s", "qdisc", "show", "dev", self.host_if],
                              capture_output=True, text=True).stdout

    def down(self):
        if not self._up:
            return
        self._up = False
        # What still runs inside (the server, if its stop failed): ours.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run("ip", "link", "del", self.host_if, check=False)  # takes its peer with it
        run("ip", "netns", "del", self.name, check=False)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


DELAY_LINE = os.environ.get("BENCH_DELAY_LINE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "production", "examples",
    "delay_line")
# The TUN devices' MTU. A real path carries 1,500-byte frames, but a NIC with
# TSO and GRO hands both TCP stacks segments of up to 64 KiB; this MTU gives
# the stacks those segments without a per-frame cost in user space.
DELAY_MTU = 65000


class DelayedPath(Veth):
    """Like Veth, but through a TUN pair joined by examples/delay_line,
    which holds every packet for half of `rtt_ms` each way: a real round
    trip for both TCP stacks (this kernel has no netem). What it distorts:
    the MTU (DELAY_MTU, as TSO/GRO present it to the stacks, not 1,500),
    no loss or jitter beyond the timer's (tens of microseconds), no
    bandwidth limit unless set_rate adds one, and the delay line's own CPU
    (reported) on these two cores, where a real network costs none."""

    # Its own namespace and subnet: a run may set up a Veth beside it.
    NS_PREFIX = PREFIX_DELAY_NS
    HOST_IF_PREFIX = "pjd"
    INNER_IF_PREFIX = "pje"
    NET = "10.232"
    WHAT = "the delayed path"

    def __init__(self, rtt_ms=0):
        super().__init__()
        self.rtt_ms = rtt_ms
        self.line = None

    def check(self):
        super().check()
        if not os.path.exists(DELAY_LINE):
            sys.exit(f"build the delay line first: cargo build --profile production "
                     f"--example delay_line (or set BENCH_DELAY_LINE); not at {DELAY_LINE}")

    def make_links(self):
        # The line opens both TUN devices, the inner one inside the namespace.
        self.line = subprocess.Popen(
            [DELAY_LINE, self.host_if, self.name, self.inner_if,
             str(int(self.rtt_ms * 1000 / 2))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if self.line.stdout.readline().strip() != "ready":
            raise RuntimeError("delay_line did not start (see its error above)")
        for dev, where in ((self.host_if, run), (self.inner_if, self.inside)):
            where("ip", "link", "set", dev, "mtu", str(DELAY_MTU), "txqueuelen", "10000")

    def set_delay(self, rtt_ms):
        """A new round trip for the packets sent from now on."""
        self.rtt_ms = rtt_ms
        self.line.stdin.write(f"{int(rtt_ms * 1000 / 2)}\n")
        self.line.stdin.flush()
        if not self.line.stdout.readline().startswith("delay "):
            sys.exit("delay_line did not take the new delay (see its error above)")

    def set_gro(self, on):
        if on:
            sys.exit("GRO does not apply to the delayed path (its MTU stands in for it)")

    def down(self):
        if not self._up:
            return
        super().down()
        if self.line:
            self.line.stdin.close()  # the devices go with the process
            try:
                self.line.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.line.kill()
            self.line = None


def cleanup():
    """Removes namespaces and links an earlier run left (our prefixes only)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        for kind in (Veth, DelayedPath):
            pid = name[len(kind.NS_PREFIX):]
            if name.startswith(kind.NS_PREFIX) and pid.isdigit():
                # down() ends what still runs inside, removes the host
                # interface (its peer goes with it) and the namespace.
                v = kind()
                v.name, v.host_if, v._up = name, kind.HOST_IF_PREFIX + pid, True
                v.down()
                print(f"removed {name}")

if __name__ == "__main__":
    if sys.argv[1:] == ["--cleanup"]:
        cleanup()
    else:
        sys.exit("usage: bench/netns.py --cleanup")

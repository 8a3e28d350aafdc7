"""Stream churn: audiopolicyd's memory and CPU over thousands of short streams.

For each server (a private PulseAudio 16, a private PipeWire + WirePlumber + pipewire-pulse, both
from ``tests/support/servers.py``, as in ``bench/reaction.py``):

* residents: ``--residents`` (2) streams of silence with ``media.role=game`` (``ambient``, which a
  call ducks), played by ``bench/victims.py`` for the whole run, so that calls have something to
  act on;
* churn: ``--streams`` (5,000) short streams played by ``bench/shorts.py``: each a new client
  process (connects, its playback stream appears, plays ``--lifetime-ms`` (50) ms, the stream
  and the client go), ``--parallel`` (4) at a time, their ``media.role`` cycling through
  ``--roles`` (``event,music,phone``: a notification that mixes, a player that interrupts the
  other players, a call that ducks the residents and interrupts the players),
  ``application.name`` ``bench-churn-<k mod 16>``;
* phases, one after the other on the same server and residents:

  * ``no daemon``: ``--baseline`` (1,000) streams with no policy client running, for the
    server's own CPU per stream;
  * ``reference``: ``--reference`` (1,000) streams with ``bench/reference_reactor.py`` running
    (the least a ducking client does: reads each stream on its events, ducks the others on a
    ``phone`` stream, no ramp, journal or D-Bus), for the floor of a Python policy client's CPU
    per stream;
  * ``daemon``: ``--streams`` streams with the daemon (``audiopolicyd --no-mpris``, shipped
    policies, started as ``bench/reaction.py`` starts it).

  The policy client of a phase is measured from when its CPU time has stopped moving before
  the churn to when it has stopped moving after it: its CPU time and the server processes'
  (``utime + stime`` of ``/proc/<pid>/stat``, all threads), divided by the streams played.
  The daemon's ``VmRSS`` is read before the churn (connected, then 1 s idle), every tenth of
  the churn and after it; its open file descriptors before and after, the size of its state
  directory (journal) after.

At the end it checks what the daemon should have left: the residents back at their volume, no
stream with an effect, only the residents in its stream count; the table says if not.

It prints figures and asserts nothing about speed. See ``bench/README.md``.

Run, from the repository root: ``.venv/bin/python -m bench.churn [--streams N] [--server
pulseaudio|pipewire]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pulsectl

from bench.reaction import (BIN, PROCS, ROOT, Bench, DaemonReactor, ReferenceReactor, fmt,
                            rss_mb, run_on_servers, tail)
from bench.shorts import APPS
from tests.support.servers import SERVERS, AudioServer
from tests.support.streams import VOLUME_NORM

#: Clock ticks per second of ``/proc/<pid>/stat`` times.
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: How long a policy client's CPU time must stay still to count as idle (caught up), in seconds.
QUIET = 1.0
#: The name under which a phase's policy client (reference or daemon) is measured.
REACTOR = "reactor"


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads, not its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # comm (field 2) may hold spaces and parentheses: count fields after the last ')'
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


@dataclass
class Phase:
    """One churn: streams started, failed, wall time, CPU seconds of each process by name."""

    streams: int = 0
    failed: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float] = (float("nan"), float("nan"))

    def ms_per_stream(self, *names: str) -> float:
        """CPU ms per stream of the processes *names* together (NaN if one was not measured)."""
        if not self.streams or any(n not in self.cpu_s for n in names):
            return float("nan")
        return sum(self.cpu_s[n] for n in names) * 1000 / self.streams


@dataclass
class Result:
    server: str
    version: str = ""
    processes: list[str] = field(default_factory=list)  #: the server's, in start order
    #: "no daemon", "reference", "daemon", in the order they ran
    phases: dict[str, Phase] = field(default_factory=dict)
    #: (streams started so far, daemon VmRSS in MB), from before the churn to after it
    rss: list[tuple[int, float]] = field(default_factory=list)
    residents: int = 0  #: resident streams: what the daemon's stream count ends at
    residents_restored: bool | None = None
    end_status: dict = field(default_factory=dict)
    fds: tuple[int, int] = (0, 0)  #: the daemon's open file descriptors before, after
    journal_kb: float = float("nan")  #: size of its state directory after the churn

    @property
    def churn(self) -> Phase | None:
        return self.phases.get("daemon")

    @property
    def rss_before(self) -> float:
        return self.rss[0][1] if self.rss else float("nan")

    @property
    def rss_after(self) -> float:
        return self.rss[-1][1] if self.rss else float("nan")

    def growth_per_1000(self) -> float:
        """(RSS after - RSS before) per 1,000 streams, in MB."""
        n = self.churn.streams if self.churn else 0
        return (self.rss_after - self.rss_before) * 1000 / n if n else float("nan")

    def slope_second_half(self) -> float:
        """Least-squares slope of RSS over the streams of the churn's second half, MB/1,000.

        Separates a steady leak from the first streams' one-off allocations (caches, imports
        done on first use, the allocator's arenas).
        """
        n = self.churn.streams if self.churn else 0
        pts = [(k, mb) for k, mb in self.rss if k >= n / 2]
        if len(pts) < 2 or len({k for k, _ in pts}) < 2:
            return float("nan")
        return statistics.linear_regression([k for k, _ in pts],
                                            [mb for _, mb in pts]).slope * 1000


class Churner:
    """Plays short streams with ``bench/shorts.py`` (one client process per stream).

    :param env: the clients' environment (the server's ``PULSE_SERVER``)
    :param args: ``roles``, ``parallel``, ``lifetime_ms`` of the command line
    :param spec: ``--rate``/``--channels`` arguments: the server's own sample spec
    :param log: where the clients' errors go
    """

    def __init__(self, env: dict[str, str], args: argparse.Namespace, spec: list[str],
                 log: Path):
        self.env = env
        self.args = args
        self.spec = spec
        self.log = log

    def _run(self, n: int, phase: Phase, every: int, on_progress) -> None:
        with open(self.log, "ab") as err:
            start = err.tell()
            # a module of the bench package (it imports bench.victims): run from the root
            proc = PROCS.spawn([sys.executable, "-m", "bench.shorts", str(n),
                                f"--parallel={self.args.parallel}",
                                f"--roles={','.join(self.args.roles)}",
                                f"--lifetime-ms={self.args.lifetime_ms}", f"--every={every}",
                                *self.spec], self.env, stdout=subprocess.PIPE, stderr=err,
                               cwd=ROOT)
        try:
            for line in proc.stdout:
                word, _, count = line.decode().partition(" ")
                if word == "ended" and on_progress:
                    on_progress(int(count))
                elif word == "done":
                    phase.streams = int(count.split()[0])
                    phase.failed = int(count.split()[2])
            proc.wait()
        finally:
            PROCS.stop(proc)
        if proc.returncode not in (0, 1) or not phase.streams:
            raise RuntimeError(f"shorts.py exited with {proc.returncode}\n{tail(self.log)}")
        if phase.failed:
            with open(self.log, "rb") as f:
                f.seek(start)
                phase.first_error = f.readline().decode(errors="replace").strip()

    async def run(self, n: int, phase: Phase, every: int = 0, on_progress=None) -> None:
        """Play *n* streams into *phase*; ``on_progress(ended)`` after each *every* ended
        (called from a worker thread)."""
        began = time.monotonic()
        load0 = os.getloadavg()[0]
        await asyncio.get_running_loop().run_in_executor(
            None, self._run, n, phase, every, on_progress)
        phase.wall_s = time.monotonic() - began
        phase.load = (load0, os.getloadavg()[0])


def cpu_of(procs: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in procs.items()}


async def wait_quiet(pid: int, quiet: float = QUIET, timeout: float = 60.0) -> None:
    """Wait until *pid*'s CPU time has not moved for *quiet* seconds (it has caught up)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now
    raise RuntimeError(f"pid {pid} still busy {timeout:.0f}s after the churn")


def start_py_spy(prefix: str, server: str, pid: int, workdir: Path) -> subprocess.Popen:
    """``py-spy record`` of *pid* into ``PREFIX.<server>.txt`` (collapsed stacks)."""
    exe = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    out = f"{prefix}.{server}.txt"
    print(f"  sampling the daemon with py-spy into {out} (its CPU figure is inflated)",
          flush=True)
    with open(workdir / "py-spy.log", "ab") as log:
        # --nonblocking: read the daemon's stacks without stopping it
        return PROCS.spawn([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                            "--nonblocking", "--output", out], os.environ.copy(),
                           stdout=log, stderr=log)


def stop_py_spy(spy: subprocess.Popen, workdir: Path) -> None:
    """SIGINT makes py-spy write its output; wait for that."""
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    finally:
        PROCS.stop(spy)
    if spy.returncode:
        print(f"  py-spy exited with {spy.returncode}\n{tail(workdir / 'py-spy.log')}",
              flush=True)


async def measure(churner: Churner, n: int, pids: dict[str, int], watch: int | None = None,
                  every: int = 0, on_progress=None) -> Phase:
    """Play *n* short streams; the CPU seconds of *pids* over them, until *watch* is quiet."""
    phase = Phase()
    cpu0 = cpu_of(pids)
    await churner.run(n, phase, every, on_progress)
    if watch is not None:
        await wait_quiet(watch)
    cpu1 = cpu_of(pids)
    phase.cpu_s = {k: cpu1[k] - cpu0[k] for k in cpu0}
    return phase


def said(name: str, phase: Phase) -> None:
    print(f"  {name}: {phase.streams} streams in {phase.wall_s:.1f}s"
          + (f", {phase.failed} failed: {phase.first_error}" if phase.failed else ""), flush=True)


async def reset_residents(bench: Bench) -> None:
    """Put every resident back at its volume from before the run."""
    for index, volume in bench.victims.items():
        await bench.observer.pulse.sink_input_volume_set(
            index, pulsectl.PulseVolumeInfo([v / VOLUME_NORM for v in volume]))
    await bench.wait_restored()


async def run_server(server: AudioServer, args: argparse.Namespace, workdir: Path) -> Result:
    res = Result(server.name, processes=[Path(p.args[0]).name for p in server.procs],
                 residents=args.residents)
    server_pids = {Path(p.args[0]).name: p.pid for p in server.procs}
    # Bench gives the residents (its victims), the observer that checks their volume, and the
    # server's sample spec; streams_per_process: all residents in one client
    bench = Bench(server, argparse.Namespace(streams_per_process=max(args.residents, 1)),
                  workdir)
    try:
        res.version = await bench.setup()
        print(f"\n== {server.name}: {res.version} ==", flush=True)
        if args.residents:
            await bench.add_victims(args.residents)
        churner = Churner(bench.env, args, bench.spec, workdir / "shorts.log")

        if args.baseline:
            res.phases["no daemon"] = phase = await measure(churner, args.baseline, server_pids)
            said("no daemon", phase)

        if args.reference:
            reference = ReferenceReactor(server, workdir)
            try:
                await reference.start()
                await wait_quiet(reference.proc.pid)
                res.phases["reference"] = phase = await measure(
                    churner, args.reference, {REACTOR: reference.proc.pid, **server_pids},
                    reference.proc.pid)
                said("reference", phase)
            finally:
                reference.stop()  # it restores on SIGTERM
            try:
                await bench.wait_restored(timeout=5.0)
            except RuntimeError as exc:
                # not the daemon's business: note it, and start the daemon from clean residents
                print(f"  the reference left residents off ({exc}); setting them back", flush=True)
                await reset_residents(bench)

        config_home = workdir / "config"  # empty: the shipped policies only
        config_home.mkdir()
        daemon = DaemonReactor(server, workdir, config_home, args.daemon_profile)
        try:
            await daemon.start()
            status = await daemon.wait_connected(args.residents)
            if status.get("PolicyProblems"):
                raise RuntimeError(f"policy problems: {status['PolicyProblems']}")
            pid = daemon.proc.pid
            await asyncio.sleep(1.0)
            await wait_quiet(pid)
            res.rss.append((0, rss_mb(pid)))
            fds0 = len(os.listdir(f"/proc/{pid}/fd"))
            spy = start_py_spy(args.py_spy, server.name, pid, workdir) if args.py_spy else None
            res.phases["daemon"] = phase = await measure(
                churner, args.streams, {REACTOR: pid, **server_pids}, pid,
                max(args.streams // 10, 1), lambda ended: res.rss.append((ended, rss_mb(pid))))
            res.rss.append((phase.streams, rss_mb(pid)))
            res.fds = (fds0, len(os.listdir(f"/proc/{pid}/fd")))
            res.journal_kb = sum(f.stat().st_size for f in workdir.glob("state-*/**/*")
                                 if f.is_file()) / 1000
            if spy:
                stop_py_spy(spy, workdir)
            said("daemon", phase)
            # what the daemon left behind (read only now: a status call costs it CPU)
            try:
                await bench.wait_restored(timeout=5.0)
                res.residents_restored = True
            except RuntimeError as exc:
                print(f"  {exc}", flush=True)
                res.residents_restored = False
            res.end_status = await daemon.status() or {}
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.proc.returncode}\n"
                                   f"{tail(daemon.log)}")
        finally:
            daemon.stop()
        return res
    finally:
        bench.observer.close()


# -- report -----------------------------------------------------------------------------------

def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"\n# Stream churn: {args.streams} short streams (each a new client process playing "
          f"{args.lifetime_ms} ms, {args.parallel} at a time, roles {','.join(args.roles)} "
          f"cycled, {APPS} app names) "
          f"with {args.residents} resident game stream(s) playing; daemon audiopolicyd "
          f"--no-mpris with the shipped policies; {os.cpu_count()} CPUs")
    print("# servers: " + "; ".join(f"{r.server}: {r.version}" for r in results))
    print("# RSS: the daemon's VmRSS (MB) connected and idle before the churn, and once its CPU "
          "time stopped moving after it; growth/1k: (after - before) per 1,000 streams; "
          "slope/1k: least-squares slope over the churn's second half (a steady leak shows "
          "here, one-off warm-up does not); fds: its open file descriptors before/after; "
          "state kB: its state directory (journal + WAL) after; left clean: the residents back "
          "at their volume, no effect and no stream but the residents in its status")
    head = (f"{'server':11s} {'streams':>7s} {'failed':>6s} {'RSS before':>10s} "
            f"{'RSS after':>9s} {'growth/1k':>9s} {'slope/1k':>8s} {'fds':>7s} "
            f"{'state kB':>8s}  {'left clean':>10s}")
    print(head)
    print("-" * len(head))
    for r in results:
        c = r.churn
        print(f"{r.server:11s} {c.streams:7d} {c.failed:6d} {fmt(r.rss_before, 10, 1)} "
              f"{fmt(r.rss_after, 9, 1)} {fmt(r.growth_per_1000(), 9, 2)} "
              f"{fmt(r.slope_second_half(), 8, 2)} {f'{r.fds[0]}/{r.fds[1]}':>7s} "
              f"{fmt(r.journal_kb, 8, 0)}  {end_check(r):>10s}")
    print("\n# RSS of the daemon along the churn (streams ended: MB)")
    for r in results:
        print(f"{r.server:11s} " + "  ".join(f"{k}: {mb:.1f}" for k, mb in r.rss))

    print("\n# CPU per stream (ms): utime + stime over the churn / streams played. reactor: "
          "the policy client of the phase, none, the reference (bench/reference_reactor.py: "
          "reads each stream on its events, ducks on phone, no ramp, no journal, no D-Bus) or "
          "the daemon; server: the server's processes (by process on PipeWire); wall: the "
          "churn's wall time per stream; load: 1-min load average before/after (other jobs "
          "inflate CPU times too: caches, frequency)")
    head = (f"{'server':11s} {'phase':9s} {'streams':>7s} {'reactor':>7s} {'server':>7s}  "
            f"{'server by process':50s} {'wall':>6s} {'load':>9s}")
    print(head)
    print("-" * len(head))
    for r in results:
        for name, phase in r.phases.items():
            by = " ".join(f"{p} {phase.ms_per_stream(p):.2f}" for p in r.processes) \
                if len(r.processes) > 1 else ""
            print(f"{r.server:11s} {name:9s} {phase.streams:7d} "
                  f"{fmt(phase.ms_per_stream(REACTOR), 7)} "
                  f"{fmt(phase.ms_per_stream(*r.processes), 7)}  {by:50s} "
                  f"{phase.wall_s * 1000 / phase.streams:6.1f} "
                  f"{phase.load[0]:4.1f}/{phase.load[1]:.1f}")
        ref, dmn = r.phases.get("reference"), r.phases.get("daemon")
        if ref and dmn:
            print(f"{'':11s} {'ratio':9s} {'':7s} "
                  f"{fmt(dmn.ms_per_stream(REACTOR) / ref.ms_per_stream(REACTOR), 6)}x "
                  f"{fmt(dmn.ms_per_stream(*r.processes) / ref.ms_per_stream(*r.processes), 6)}x"
                  f"  daemon/reference")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
        print(f"\nraw figures written to {args.json}")


def end_check(r: Result) -> str:
    """'yes' when the daemon left nothing behind after the churn, else what is off."""
    st = r.end_status
    off = []
    if r.residents_restored is False:
        off.append("volume")
    if st.get("StreamsWithEffects", 0):
        off.append(f"{st['StreamsWithEffects']}fx")
    if st and st.get("Streams") != r.residents:
        off.append(f"{st.get('Streams')}st")
    if not st:
        off.append("status?")
    return ",".join(off) or "yes"


# -- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=5000, metavar="N",
                   help="short streams played with the daemon running (default 5000; use 200 "
                        "while developing: the machine is shared)")
    p.add_argument("--server", action="append", choices=sorted(SERVERS),
                   help="pulseaudio or pipewire (repeatable; default: both)")
    p.add_argument("--baseline", type=int, default=1000, metavar="N",
                   help="streams played with no policy client running, for the server's own "
                        "CPU per stream (default 1000; 0 skips it)")
    p.add_argument("--reference", type=int, default=1000, metavar="N",
                   help="streams played with the reference reactor running instead of the daemon, "
                        "for the floor of a policy client's CPU per stream (default 1000; 0 skips "
                        "it)")
    p.add_argument("--parallel", type=int, default=4, metavar="P",
                   help="short streams (client processes) at once (default 4; PulseAudio "
                        "takes at most 64 clients)")
    p.add_argument("--roles", default="event,music,phone",
                   help="media.role of the short streams, cycled (default event,music,phone)")
    p.add_argument("--residents", type=int, default=2, metavar="N",
                   help="long-lived game streams playing throughout (default 2)")
    p.add_argument("--lifetime-ms", type=int, default=50, metavar="MS",
                   help="how long each short stream plays before it and its client go "
                        "(default 50)")
    p.add_argument("--py-spy", metavar="PREFIX",
                   help="sample the daemon with py-spy during the churn into PREFIX.<server>.txt "
                        "(collapsed stacks, for flamegraph.pl or speedscope; needs py-spy in the "
                        "venv; inflates the daemon's CPU figure)")
    p.add_argument("--daemon-profile", metavar="PREFIX",
                   help="run the daemon under cProfile, stats to PREFIX.<server>.1 (start-up and "
                        "shutdown included; distorts every daemon figure)")
    p.add_argument("--json", metavar="FILE", help="also write the raw figures to FILE")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    args.server = list(dict.fromkeys(args.server or ["pulseaudio", "pipewire"]))
    args.roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if args.streams < 1 or args.lifetime_ms < 1:
        p.error("--streams and --lifetime-ms must be >= 1")
    if min(args.baseline, args.reference, args.residents) < 0:
        p.error("--baseline, --reference and --residents must be >= 0")
    if not 1 <= args.parallel <= 32:
        p.error("--parallel must be 1..32")
    if not args.roles:
        p.error("--roles needs at least one role")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Result] = []

    async def run(server: AudioServer, sdir: Path) -> None:
        results.append(await run_server(server, args, sdir))

    return run_on_servers(args.server, "apd-churn-", ("dbus-daemon", "pactl", "sox"), args.keep,
                          run, lambda: report(results, args))


if __name__ == "__main__":
    sys.exit(main())

"""Reaction latency of audiopolicyd against a minimal reference reactor, as a third client sees it.

For each server (a private PulseAudio 16, a private PipeWire + WirePlumber + pipewire-pulse, both
from ``tests/support/servers.py``) and each victim count (default 1 and 200):

* victims: N playback streams of silence with ``media.role=game`` (category ``ambient``, which a
  call ducks), all linked and at their full volume; played by ``bench/victims.py``, at most
  ``--streams-per-process`` (10) streams per process, because PulseAudio 16 drops the 65th client
  connection (so 200 ``pacat`` processes are impossible there), the processes alternating between
  the sinks ``speaker`` and ``headphones``, because PipeWire 0.3's mixer links at most 128 streams
  into one sink;
* reactors, one after the other on the same server and victims: the reference reactor
  (``bench/reference_reactor.py``) and the daemon (``audiopolicyd`` with ``duck_ramp_ms = 0`` in an
  override of ``playAndRecord.toml``, so both write each victim once);
* trials: ``paplay --property=media.role=phone`` of a tone starts (the trigger); the observer, a
  separate pulsectl-asyncio client in this process, takes t0 when it sees the trigger's ``new``
  event and, per victim, the time of the first ``change`` event after which the victim's volume is
  below its pre-trial value (it fetches the volume on each such event, concurrently and without
  pulsectl's object parsing, to stay cheap); then the trigger is stopped and the next trial waits
  until every victim is back at its pre-trial volume. One warm-up trial per series is discarded.

It prints p50/p99 of the latency to the first and to the last victim ducked, the daemon/reference
ratios, the daemon's RSS and its idle wake-ups, next to the targets of issue 2 item 12. It asserts
nothing. See ``bench/README.md``.

Run, from the repository root: ``.venv/bin/python -m bench.reaction [--servers
pulseaudio,pipewire] [--trials N] [--victims 1,200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pulsectl
import pulsectl_asyncio
from pulsectl import _pulsectl as c

from tests.support.audio import make_tone
from tests.support.bus import PrivateBus
from tests.support.processes import child_env, missing_binaries, stop_process
from tests.support.servers import SERVERS, SINKS, AudioServer
from tests.support.streams import VOLUME_NORM

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Where the daemon's executables are: the venv this script runs in, else the repository's.
BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "audiopolicyd").exists() \
    else ROOT / ".venv" / "bin"
INVALID_INDEX = 0xFFFFFFFF
VICTIM_ROLE, TRIGGER_ROLE = "game", "phone"

#: Targets of issue 2, item 12.
TARGET_P50_RATIO = 1.25
TARGET_ALL_200_MS = 50.0
TARGET_RSS_MB = 60.0
IDLE_SECONDS = 10.0

#: Seconds a trial waits for every victim to be ducked, then restored.
DUCK_TIMEOUT, RESTORE_TIMEOUT = 5.0, 10.0
#: Quiet time before each trial, so the reactor and the server are idle when the trigger comes.
SETTLE = 0.1


# -- processes --------------------------------------------------------------------------------

class Processes:
    """Every process the benchmark starts; stopped by pid (never by name), also on error."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, env=env, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        stop_process(proc, timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        """SIGTERM to all first (200 victims stop in parallel), then wait, then SIGKILL."""
        procs, self.procs = self.procs[::-1], []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            stop_process(proc, 5.0)


PROCS = Processes()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# -- statistics -------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """The *q*-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Series:
    """The trials of one reactor on one server with one victim count."""

    server: str
    victims: int
    reactor: str
    first_ms: list[float] = field(default_factory=list)
    all_ms: list[float] = field(default_factory=list)
    incomplete: int = 0  #: trials where not every victim was seen ducked in time
    #: victim change events the observer handled per trial (up to each victim's duck)
    change_events: list[int] = field(default_factory=list)
    load: tuple[float, float] = (float("nan"), float("nan"))  #: 1-min load average before, after


@dataclass
class DaemonStats:
    server: str
    victims: int
    rss_start_mb: float = float("nan")
    rss_after_mb: float = float("nan")
    idle_wakeups_per_s: float = float("nan")
    idle_threads: int = 0
    idle_server_events: int = 0


def proc_status(path: str) -> dict[str, str]:
    """The fields of a ``/proc/.../status`` file."""
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of *pid* in MB (10^6 bytes)."""
    return int(proc_status(f"/proc/{pid}/status")["VmRSS"].split()[0]) * 1024 / 1e6


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary + nonvoluntary context switches summed over the threads of *pid*, threads)."""
    total, threads = 0, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status(f"/proc/{pid}/task/{tid}/status")
        except FileNotFoundError:
            continue  # a thread that just ended
        total += int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
        threads += 1
    return total, threads


# -- the observer -----------------------------------------------------------------------------

class Observer:
    """A third client that timestamps what the server tells it, on its monotonic clock.

    Events are handled in pulsectl-asyncio's subscription callback itself, inside libpulse's
    dispatch, so a timestamp is taken when the event is read from the socket, not when some task
    gets round to it. Volumes are fetched with a bare ``pa_context_get_sink_input_info`` whose
    callback reads only the ``pa_cvolume``: pulsectl's full object parsing (proplist, channel map)
    costs enough per stream to delay the timestamps of later events with 200 victims.
    """

    #: The event facilities it subscribes to.
    FACILITIES: tuple[str, ...] = ("sink_input",)

    def __init__(self, server: AudioServer):
        self.pulse = pulsectl_asyncio.PulseAsync("audiopolicyd-bench-observer",
                                                 server=server.pulse_server)
        self._keep: dict[int, object] = {}  #: ctypes callbacks alive until called, by id
        self.events = 0
        self._reset()

    def _reset(self) -> None:
        self.armed = False
        self.victims: dict[int, tuple[int, ...]] = {}
        self.t0: float | None = None
        self.trigger: int | None = None
        self.ducked: dict[int, float] = {}
        self.victim_changes = 0
        self.done: asyncio.Event | None = None

    async def connect(self) -> None:
        await self.pulse.connect()
        self.pulse.event_callback = self._on_event
        # the callback API, no queue: timestamps taken inside libpulse's dispatch
        await self.pulse._event_mask_set(*self.FACILITIES)  # noqa: SLF001

    def close(self) -> None:
        self.pulse.close()

    # the cheap reads
    def raw_volume(self, index: int) -> asyncio.Future:
        """Future of the per-channel raw volume of sink-input *index* (None if it is gone)."""
        return self.raw_sink_input(
            index, lambda info: tuple(info.volume.values[:info.volume.channels]))

    def raw_sink_input(self, index: int, pick: Callable[[Any], Any]) -> asyncio.Future:
        """Future of ``pick(pa_sink_input_info)`` for sink-input *index* (None if it is gone),
        without pulsectl's object parsing."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        result: list[Any] = []

        def cb(ctx, info, eof, userdata):
            if eof:
                if not fut.done():
                    fut.set_result(result[0] if result else None)
            elif info:
                result.append(pick(info[0]))

        cb_c = c.PA_SINK_INPUT_INFO_CB_T(cb)
        self._keep[id(cb_c)] = cb_c
        self.pulse.waiting_futures.add(fut)  # failed by pulsectl-asyncio on disconnect

        def forget(_f):
            self._keep.pop(id(cb_c), None)
            self.pulse.waiting_futures.discard(fut)

        fut.add_done_callback(forget)
        op = c.pa.context_get_sink_input_info(self.pulse._ctx, index, cb_c, None)  # noqa: SLF001
        c.pa.operation_unref(op)
        return fut

    async def volumes(self, indexes) -> dict[int, tuple[int, ...] | None]:
        indexes = list(indexes)
        got = await asyncio.gather(*(self.raw_volume(i) for i in indexes))
        return dict(zip(indexes, got))

    # trials
    def arm(self, victims: dict[int, tuple[int, ...]]) -> asyncio.Event:
        self._reset()
        self.victims = dict(victims)
        self.done = asyncio.Event()
        self.armed = True
        return self.done

    def disarm(self) -> None:
        self.armed = False

    def _on_event(self, ev) -> None:
        now = time.monotonic()
        self.events += 1
        if not self.armed:
            return
        if ev.t == "new":
            if self.t0 is None and ev.index not in self.victims:
                self.t0, self.trigger = now, ev.index
        elif ev.t == "change" and ev.index in self.victims and ev.index not in self.ducked:
            if self.t0 is None:
                return  # cannot be the reaction: the trigger has not appeared
            self.victim_changes += 1
            fut = self.raw_volume(ev.index)
            fut.add_done_callback(lambda f, i=ev.index, t=now: self._seen(i, t, f))

    def _seen(self, index: int, t: float, fut: asyncio.Future) -> None:
        if not self.armed or fut.cancelled() or fut.exception() is not None:
            return
        vol = fut.result()
        base = self.victims[index]
        if vol is None or len(vol) != len(base) or not all(v < b for v, b in zip(vol, base)):
            return
        if index not in self.ducked or t < self.ducked[index]:
            self.ducked[index] = t
        if len(self.ducked) == len(self.victims):
            self.done.set()


# -- reactors ---------------------------------------------------------------------------------

class Reactor:
    name = ""
    proc: subprocess.Popen | None = None

    async def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            PROCS.stop(self.proc, 10.0)
            self.proc = None


class ReferenceReactor(Reactor):
    name = "reference"
    #: The reference client's program, in bench/.
    script = "reference_reactor.py"

    def __init__(self, server: AudioServer, workdir: Path):
        self.server = server
        self.log = workdir / "reference.log"

    async def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = PROCS.spawn([sys.executable, str(HERE / self.script)],
                                    child_env(self.server.env), stdout=subprocess.PIPE,
                                    stderr=err)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0)
            if ready:
                line = self.proc.stdout.readline().decode().strip()
                if line == "ready":
                    return
                if not line and self.proc.poll() is not None:
                    break
            await asyncio.sleep(0.02)
        raise RuntimeError(f"reference reactor not ready\n{tail(self.log)}")


class DaemonReactor(Reactor):
    name = "daemon"

    profile_runs = 0

    def __init__(self, server: AudioServer, workdir: Path, config_home: Path,
                 profile: str | None = None):
        self.server = server
        self.profile = profile
        self.workdir = workdir
        self.config_home = config_home
        self.log = workdir / "audiopolicyd.log"
        self.env = child_env({**server.env, "XDG_CONFIG_HOME": str(config_home)})

    async def start(self) -> None:
        state = Path(tempfile.mkdtemp(prefix="state-", dir=self.workdir))
        argv = [str(BIN / "audiopolicyd")]
        if self.profile:
            # cProfile writes its stats when the daemon exits (it does on SIGTERM)
            self.profile_runs += 1
            out = f"{self.profile}.{self.server.name}.{self.profile_runs}"
            argv = [str(BIN / "python"), "-m", "cProfile", "-o", out, "-m", "audiopolicyd.app"]
            print(f"  profiling the daemon into {out} (its figures are distorted)", flush=True)
        with open(self.log, "ab") as err:
            self.proc = PROCS.spawn(
                [*argv, "--log-level", "warning", "--log-target", "stderr",
                 "--state-dir", str(state), "--no-mpris"],
                self.env, stdout=err, stderr=subprocess.STDOUT)

    async def status(self) -> dict | None:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "audiopolicyctl"), "status", "--json", env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            out, _ = await proc.communicate()
        except BaseException:  # cancelled (Ctrl-C): do not leave it behind
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    async def wait_connected(self, streams: int, timeout: float = 30.0) -> dict:
        """Poll ``audiopolicyctl status --json`` until ServerConnected and *streams* are known."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            status = await self.status()
            if status and status.get("ServerConnected") and status.get("Streams", 0) >= streams:
                return status
            await asyncio.sleep(0.1)
        raise RuntimeError(f"daemon not connected (last status {status})\n{tail(self.log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"--- {path}: {exc}"


def write_override(config_home: Path) -> Path:
    """``$XDG_CONFIG_HOME/audiopolicyd/policies/playAndRecord.toml``: shipped, ramp 0."""
    text = (ROOT / "policies" / "playAndRecord.toml").read_text()
    new, n = re.subn(r"(?m)^duck_ramp_ms\s*=.*$", "duck_ramp_ms = 0", text)
    if n != 1:
        raise RuntimeError("policies/playAndRecord.toml has no single duck_ramp_ms line")
    path = config_home / "audiopolicyd" / "policies" / "playAndRecord.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    return path


# -- victims and trials -----------------------------------------------------------------------

class Bench:
    #: The victims' media.role, and the sinks their processes take in turn.
    role: str = VICTIM_ROLE
    sinks: tuple[str, ...] = tuple(SINKS)

    def __init__(self, server: AudioServer, args: argparse.Namespace, workdir: Path):
        self.server = server
        self.args = args
        self.workdir = workdir
        self.observer = Observer(server)
        self.victim_procs: list[subprocess.Popen] = []
        self.victim_streams = 0
        self.victims: dict[int, tuple[int, ...]] = {}
        self.trigger_wav = make_tone(workdir / "trigger.wav", seconds=30, freq=880)
        self.spec: list[str] = []
        self.env = child_env(server.env)

    async def setup(self) -> str:
        await self.observer.connect()
        info = await self.observer.pulse.server_info()
        # play at the server's own rate: no resampling work for 200 streams (pulsectl's
        # sample_spec points into freed libpulse memory, so ask pactl)
        out = subprocess.run(["pactl", "info"], env=self.env, capture_output=True,
                             text=True, timeout=10).stdout
        m = re.search(r"Default Sample Specification: (\S+) (\d+)ch (\d+)Hz", out)
        if m:
            self.spec = [f"--channels={m[2]}", f"--rate={m[3]}"]
        return f"{info.server_name} {info.server_version}"

    async def add_victims(self, count: int) -> None:
        """Start victims until there are *count*; wait until all are linked, at full volume."""
        with open(self.workdir / "victims.log", "ab") as log:
            while self.victim_streams < count:
                n = min(self.args.streams_per_process, count - self.victim_streams)
                # alternate sinks: PipeWire 0.3's mixer takes at most 128 inputs per sink port
                sink = self.sinks[len(self.victim_procs) % len(self.sinks)]
                self.victim_procs.append(PROCS.spawn(
                    [sys.executable, str(HERE / "victims.py"), str(n), "--role", self.role,
                     "--name", f"bench-victim-{len(self.victim_procs) + 1}", *self.spec,
                     f"--device={sink}"],
                    self.env, stdout=log, stderr=log))
                self.victim_streams += n
        pids = {str(p.pid) for p in self.victim_procs}
        deadline = time.monotonic() + 60
        while True:
            self.check_victims()
            linked = [i for i in await self.observer.pulse.sink_input_list()
                      if i.proplist.get("application.process.id") in pids
                      and i.sink != INVALID_INDEX]
            if len(linked) == count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(linked)} of {count} victims linked\n"
                                   f"{tail(self.workdir / 'victims.log')}")
            await asyncio.sleep(0.1)
        full = {i.index: tuple([VOLUME_NORM] * len(i.volume.values)) for i in linked}
        vols = await self.observer.volumes(full)
        fix = [i for i in linked if vols[i.index] != full[i.index]]
        for i in fix:  # a restore database may hand a new stream an old volume
            await self.observer.pulse.sink_input_volume_set(
                i.index, pulsectl.PulseVolumeInfo(1.0, len(i.volume.values)))
        self.victims = full
        await self.wait_restored()

    def check_victims(self) -> None:
        dead = [p.pid for p in self.victim_procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"victim(s) {dead[:5]} exited\n{tail(self.workdir / 'victims.log')}")

    async def wait_restored(self, timeout: float = RESTORE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            vols = await self.observer.volumes(self.victims)
            off = {i: v for i, v in vols.items()
                   if v is None or len(v) != len(self.victims[i])
                   or any(abs(a - b) > 1 for a, b in zip(v, self.victims[i]))}
            if not off:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(off)} victim(s) not back at their volume after "
                                   f"{timeout:.0f}s, e.g. {list(off.items())[:3]}")
            await asyncio.sleep(0.02)

    async def trial(self) -> tuple[float | None, float | None, int, int]:
        """One trigger; returns (first ms, all ms, victims ducked, victim change events)."""
        self.check_victims()
        await asyncio.sleep(SETTLE)
        done = self.observer.arm(self.victims)
        trigger = PROCS.spawn(["paplay", f"--property=media.role={TRIGGER_ROLE}",
                               "--property=application.name=bench-trigger",
                               str(self.trigger_wav)], self.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            try:
                await asyncio.wait_for(done.wait(), DUCK_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        finally:
            self.observer.disarm()
            await asyncio.get_running_loop().run_in_executor(None, PROCS.stop, trigger)
        obs = self.observer
        n = len(obs.ducked)
        first = last = None
        if obs.t0 is not None and n:
            first = (min(obs.ducked.values()) - obs.t0) * 1000
            last = (max(obs.ducked.values()) - obs.t0) * 1000 if n == len(self.victims) else None
        changes = obs.victim_changes
        await self.wait_restored()
        return first, last, n, changes

    async def series(self, reactor: Reactor, trials: int) -> Series:
        s = Series(self.server.name, len(self.victims), reactor.name)
        load0 = os.getloadavg()[0]
        for k in range(trials + 1):
            first, last, n, changes = await self.trial()
            if k == 0:
                continue  # warm-up
            s.change_events.append(changes)
            if first is not None:
                s.first_ms.append(first)
            if last is not None:
                s.all_ms.append(last)
            else:
                s.incomplete += 1
        s.load = (load0, os.getloadavg()[0])
        return s


async def idle_wakeups(pid: int, observer: Observer, seconds: float) -> tuple[float, int, int]:
    """Context switches of *pid* per second over *seconds* with no stream changes."""
    events0 = observer.events
    cs0, threads = context_switches(pid)
    await asyncio.sleep(seconds)
    cs1, _ = context_switches(pid)
    return (cs1 - cs0) / seconds, threads, observer.events - events0


async def run_server(server: AudioServer, args: argparse.Namespace, workdir: Path,
                     results: list[Series], daemon_stats: list[DaemonStats]) -> str:
    bench = Bench(server, args, workdir)
    config_home = workdir / "config"
    override = write_override(config_home)
    try:
        version = await bench.setup()
        print(f"\n== {server.name}: {version} (victims: {args.victims}) ==", flush=True)
        for count in args.victims:
            t = time.monotonic()
            await bench.add_victims(count)
            print(f"  {count} victim(s) linked and at full volume ({time.monotonic() - t:.1f}s)",
                  flush=True)
            trials = args.trials or (30 if count == 1 else 10)
            for reactor in (ReferenceReactor(server, workdir),
                            DaemonReactor(server, workdir, config_home, args.daemon_profile)):
                try:
                    t = time.monotonic()
                    await reactor.start()
                    if isinstance(reactor, DaemonReactor):
                        status = await reactor.wait_connected(count)
                        if str(override) not in status.get("PolicyFiles", []):
                            raise RuntimeError(f"the daemon did not load {override}: "
                                               f"{status.get('PolicyFiles')}")
                        if status.get("PolicyProblems"):
                            raise RuntimeError(f"policy problems: {status['PolicyProblems']}")
                        ds = DaemonStats(server.name, count)
                        ds.rss_start_mb = rss_mb(reactor.proc.pid)
                        await asyncio.sleep(1.0)
                        ds.idle_wakeups_per_s, ds.idle_threads, ds.idle_server_events = \
                            await idle_wakeups(reactor.proc.pid, bench.observer, IDLE_SECONDS)
                        daemon_stats.append(ds)
                    s = await bench.series(reactor, trials)
                    if isinstance(reactor, DaemonReactor):
                        ds.rss_after_mb = rss_mb(reactor.proc.pid)
                    results.append(s)
                    print(f"  {reactor.name:9s} {count:4d} victim(s): {trials} trials "
                          f"({time.monotonic() - t:.1f}s): first p50 {pct(s.first_ms, 50):.2f} ms,"
                          f" all p50 {pct(s.all_ms, 50):.2f} ms"
                          + (f", {s.incomplete} incomplete" if s.incomplete else ""), flush=True)
                finally:
                    reactor.stop()
                # the reactor restores on SIGTERM; make sure the victims are clean for the next
                await bench.wait_restored()
        return version
    finally:
        bench.observer.close()


# -- report -----------------------------------------------------------------------------------

def fmt(x: float, width: int = 8, prec: int = 2) -> str:
    return f"{x:{width}.{prec}f}" if x == x else f"{'-':>{width}}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("meets" if ok else "MISSES")


def report(results: list[Series], daemon_stats: list[DaemonStats], versions: dict[str, str],
           args: argparse.Namespace) -> None:
    print("\n# Reaction latency: trigger's `new` event -> victim's volume below its pre-trial "
          "value, as the observer sees it (ms)")
    print("# servers: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    print("# both reactors write each victim once: the daemon runs with duck_ramp_ms = 0 "
          "(override of playAndRecord.toml), the reference has no ramp")
    print(f"# victims: {args.streams_per_process} streams per "
          f"process, processes alternating between sinks {' and '.join(SINKS)}")
    print(f"# one warm-up trial per series discarded; p99 of n samples interpolates between the "
          f"two largest (n <= 100: about the max); {os.cpu_count()} CPUs; load: the machine's "
          f"1-min load average before/after the series (other jobs inflate every figure); "
          f"chg/trial: victim change events per trial up to each victim's duck (1 per victim "
          f"= one write each)")
    head = (f"{'server':11s} {'victims':>7s} {'reactor':9s} {'n':>3s} {'first p50':>9s} "
            f"{'first p99':>9s} {'all p50':>8s} {'all p99':>8s}  {'chg/trial':>9s} "
            f"{'load':>9s}")
    print(head)
    print("-" * len(head))
    by = {(s.server, s.victims, s.reactor): s for s in results}
    ratios = []
    for server in dict.fromkeys(s.server for s in results):
        for victims in dict.fromkeys(s.victims for s in results if s.server == server):
            for reactor in ("reference", "daemon"):
                s = by.get((server, victims, reactor))
                if s is None:
                    continue
                chg = statistics.mean(s.change_events) if s.change_events else float("nan")
                print(f"{server:11s} {victims:7d} {reactor:9s} {len(s.first_ms):3d} "
                      f"{fmt(pct(s.first_ms, 50), 9)} {fmt(pct(s.first_ms, 99), 9)} "
                      f"{fmt(pct(s.all_ms, 50))} {fmt(pct(s.all_ms, 99))}  {fmt(chg, 9, 1)} "
                      f"{s.load[0]:4.1f}/{s.load[1]:.1f}"
                      + (f"  ({s.incomplete} trial(s) not all ducked in "
                         f"{DUCK_TIMEOUT:.0f}s)" if s.incomplete else ""))
            ref, dmn = by.get((server, victims, "reference")), by.get((server, victims, "daemon"))
            if ref and dmn:
                r = {k: pct(getattr(dmn, f), q) / pct(getattr(ref, f), q)
                     for k, f, q in (("first50", "first_ms", 50), ("first99", "first_ms", 99),
                                     ("all50", "all_ms", 50), ("all99", "all_ms", 99))}
                ratios.append((server, victims, r))
                print(f"{'':11s} {'':7s} {'ratio':9s} {'':3s} {fmt(r['first50'], 8)}x "
                      f"{fmt(r['first99'], 8)}x {fmt(r['all50'], 7)}x {fmt(r['all99'], 7)}x"
                      f"   daemon/reference")
    print("\n# Daemon process (audiopolicyd): RSS (VmRSS) and idle wake-ups (voluntary + "
          f"nonvoluntary context switches of all its threads over {IDLE_SECONDS:.0f}s without "
          "stream changes, victims playing, measured 1s after it was connected)")
    print(f"{'server':11s} {'victims':>7s} {'RSS start MB':>12s} {'RSS after trials MB':>19s} "
          f"{'idle wake-ups/s':>15s} {'threads':>7s} {'server events':>13s}")
    for d in daemon_stats:
        print(f"{d.server:11s} {d.victims:7d} {fmt(d.rss_start_mb, 12, 1)} "
              f"{fmt(d.rss_after_mb, 19, 1)} {fmt(d.idle_wakeups_per_s, 15, 2)} "
              f"{d.idle_threads:7d} {d.idle_server_events:13d}")

    print("\n# Targets (issue 2, item 12)")
    for server, victims, r in ratios:
        print(f"  p50 ratio <= {TARGET_P50_RATIO}: {server}, {victims} victim(s): first "
              f"{r['first50']:.2f} {verdict(r['first50'] <= TARGET_P50_RATIO)}, all "
              f"{r['all50']:.2f} {verdict(r['all50'] <= TARGET_P50_RATIO)}")
    for s in results:
        if s.reactor == "daemon" and s.victims >= 200:
            p50, p99 = pct(s.all_ms, 50), pct(s.all_ms, 99)
            ok = None if p50 != p50 else (p99 <= TARGET_ALL_200_MS and not s.incomplete)
            print(f"  {s.victims} victims all ducked within {TARGET_ALL_200_MS:.0f} ms: "
                  f"{s.server}: daemon p50 {p50:.2f} ms, p99 {p99:.2f} ms -> {verdict(ok)} "
                  f"(judged on p99)")
    for d in daemon_stats:
        print(f"  RSS after start < {TARGET_RSS_MB:.0f} MB: {d.server} ({d.victims} victim(s) "
              f"present): {d.rss_start_mb:.1f} MB {verdict(d.rss_start_mb < TARGET_RSS_MB)}")
    for d in daemon_stats:
        print(f"  no wake-ups while idle: {d.server} ({d.victims} victim(s) playing): "
              f"{d.idle_wakeups_per_s:.2f}/s {verdict(d.idle_wakeups_per_s == 0)}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "versions": versions,
            "series": [s.__dict__ for s in results],
            "daemon": [d.__dict__ for d in daemon_stats]}, indent=1))
        print(f"\nraw samples written to {args.json}")


# -- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="pulseaudio,pipewire",
                   help="comma-separated: pulseaudio, pipewire (default: both)")
    p.add_argument("--trials", type=int, default=0,
                   help="measured trials per series (default: 30 with 1 victim, 10 with more)")
    p.add_argument("--victims", default="1,200", help="comma-separated victim counts")
    p.add_argument("--streams-per-process", type=int, default=10, metavar="N",
                   help="victim streams per victim process (default 10; PulseAudio takes at "
                        "most 64 clients)")
    p.add_argument("--daemon-profile", metavar="PREFIX",
                   help="run the daemon under cProfile, stats to PREFIX.<server>.<n> (for "
                        "finding where its time goes; distorts every daemon figure)")
    p.add_argument("--json", metavar="FILE", help="also write the raw samples to FILE")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        p.error(f"unknown server(s) {unknown}; known: {sorted(SERVERS)}")
    args.victims = sorted({int(v) for v in args.victims.split(",")})
    if not args.victims or args.victims[0] < 1:
        p.error("victim counts must be >= 1")
    return args


def run_on_servers(servers: list[str], prefix: str, binaries: tuple[str, ...], keep: bool,
                   run: Callable[[AudioServer, Path], Any],
                   report: Callable[[], None]) -> int:
    """Run a benchmark on each server, then report; the exit status of the benchmark script.

    Each server gets a private bus and its own directory under a temporary work directory;
    ``run(server, directory)`` is a coroutine function run to the end in its own event loop.
    Every process of :data:`PROCS` is stopped before the server goes. A failure keeps the
    server's logs; the work directory is removed unless something failed or ``keep``.

    :param binaries: programs needed besides the servers' own
    :returns: 0, 2 when a program is missing, 130 when interrupted (SIGINT, SIGTERM)
    """
    missing = missing_binaries((*binaries,
                                  *(("pulseaudio",) if "pulseaudio" in servers else ()),
                                  *(("pipewire", "wireplumber", "pipewire-pulse")
                                    if "pipewire" in servers else ())))
    if missing:
        print(f"missing programs: {missing}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    began = time.monotonic()
    failed = False
    try:
        for name in servers:
            sdir = workdir / name
            sdir.mkdir()
            with PrivateBus(service_dirs=[]) as bus, SERVERS[name](bus) as server:
                try:
                    asyncio.run(run(server, sdir))
                except Exception:
                    for log in server.logs():  # the server's directory goes with it
                        if log.exists():
                            shutil.copy(log, sdir)
                    raise
                finally:
                    PROCS.stop_all()  # every client and reactor: before the server goes
        report()
        print(f"\ntotal time {time.monotonic() - began:.0f}s")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        failed = True
        raise
    finally:
        PROCS.stop_all()
        if failed or keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Series] = []
    daemon_stats: list[DaemonStats] = []
    versions: dict[str, str] = {}

    async def run(server: AudioServer, sdir: Path) -> None:
        versions[server.name] = await run_server(server, args, sdir, results, daemon_stats)

    return run_on_servers(args.servers, "apd-bench-", ("dbus-daemon", "pactl", "paplay", "sox"),
                          args.keep, run, lambda: report(results, daemon_stats, versions, args))


if __name__ == "__main__":
    sys.exit(main())

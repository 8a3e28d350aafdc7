"""Routing latency of audiopolicyd against a minimal reference mover, as a third client sees it.

For each server (a private PulseAudio 16, a private PipeWire + WirePlumber + pipewire-pulse, from
``tests/support/servers.py``) and each call count (default 1 and 50):

* calls: N playback streams of silence with ``media.role=phone`` (category ``playAndRecord``),
  all on the test servers' ``headphones`` sink (``device.form_factor=headphone``: where the
  shipped ``playAndRecord`` route puts a call without a USB or Bluetooth headset), played by
  ``bench/victims.py`` (at most ``--streams-per-process`` per process);
* reactors, one after the other on the same server and calls: the reference mover
  (``bench/reference_mover.py``: calls to a sink whose ``device.bus`` is ``usb``, else to
  headphones, else to the default sink) and the daemon (``audiopolicyd`` with the shipped
  policies: ``playAndRecord`` prefers ``usbAudio``, then ``headphones``, ...);
* trials: a USB headset is plugged (``tests/support/devices.py``: a null sink with the
  properties of a USB headset, under a new name each trial, so that PulseAudio's
  module-stream-restore, which moves a stream back to a device it remembers by name, cannot do
  the reactor's work), then unplugged. The observer, a separate pulsectl-asyncio client in this
  process, takes t0 at the headset sink's ``new`` (plug) or ``remove`` (unplug) event and, per
  call, the time of the first ``change`` event after which the call is on the expected sink (the
  headset; the headphones after the unplug: the server itself moves a vanishing sink's streams
  to its default sink, the reactor then to the headphones). The next trial waits until every
  call is back on the headphones. The trials are split into ``--rounds`` rounds (default 2) in
  which the reactors take turns to go first (ABBA), so that a drift of the server's speed over
  a run weighs on both alike, and each phase starts once the server's processes are quiet
  (``QUIET_CPU``). Each round starts its reactor afresh and begins with a warm-up trial,
  discarded.

It prints p50/p99 of the latency to the first and to the last call moved, for plug and unplug,
and the daemon/reference ratios (target of issue 11: p50 ratio <= 1.25). It asserts nothing.

Run, from the repository root: ``.venv/bin/python -m bench.routing [--servers
pulseaudio,pipewire] [--trials N] [--calls 1,50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.devices import USB_HEADSET, plug, unplug
from tests.support.servers import SERVERS, AudioServer

from .reaction import (
    Bench, DaemonReactor, Observer, Reactor, ReferenceReactor, fmt, pct, run_on_servers,
)

CALL_ROLE = "phone"
TARGET_P50_RATIO = 1.25
#: Seconds a trial waits for every call to be moved, and for every call to be back.
MOVE_TIMEOUT, BACK_TIMEOUT = 5.0, 10.0
SETTLE = 0.1
#: Before each phase, the bench waits (at most QUIET_TIMEOUT s) until the server's processes
#: used at most QUIET_CPU of a core over a QUIET_WINDOW s window, so that no phase starts on
#: the last one's leftover work (WirePlumber's, with 50 calls); in the runs of 2026-12-01 that
#: took 0.5-1.0 s.
QUIET_CPU, QUIET_WINDOW, QUIET_TIMEOUT = 0.1, 0.5, 20.0


@dataclass
class Series:
    """The trials of one reactor on one server with one call count."""

    server: str
    calls: int
    reactor: str
    #: phase ("plug", "unplug") -> latencies in ms to the first / the last call moved
    first_ms: dict[str, list[float]] = field(default_factory=lambda: {"plug": [], "unplug": []})
    all_ms: dict[str, list[float]] = field(default_factory=lambda: {"plug": [], "unplug": []})
    incomplete: int = 0  #: phases in which not every call was seen moved in time


class MoveObserver(Observer):
    """The reaction benchmark's observer, following sinks as well: when does each call reach
    the sink it should be on."""

    FACILITIES = ("sink_input", "sink")

    def _reset(self) -> None:
        super()._reset()
        self.phase = ""
        self.calls: set[int] = set()
        self.headset: int | None = None  # the headset's sink index (known on plug)
        self.target: int | None = None  # where the calls should go
        self.moved: dict[int, float] = {}

    def arm_phase(self, phase: str, calls, headset: int | None = None,
                  target: int | None = None) -> asyncio.Event:
        """Follow one plug (the target is the sink that appears) or unplug (of *headset*, the
        calls going to *target*)."""
        self._reset()
        self.phase, self.calls = phase, set(calls)
        self.headset, self.target = headset, target
        self.done = asyncio.Event()
        self.armed = True
        return self.done

    def _on_event(self, ev) -> None:
        now = time.monotonic()
        self.events += 1
        if not self.armed:
            return
        if ev.facility == "sink":
            if self.t0 is None and self.phase == "plug" and ev.t == "new":
                self.t0, self.headset, self.target = now, ev.index, ev.index
            elif self.t0 is None and self.phase == "unplug" and ev.t == "remove" \
                    and ev.index == self.headset:
                self.t0 = now
                self._check_done()
        elif ev.facility == "sink_input" and ev.t == "change" and ev.index in self.calls \
                and ev.index not in self.moved:
            self.victim_changes += 1
            fut = self.raw_sink_input(ev.index, lambda info: info.sink)
            # a change before t0 is not the reactor's (PulseAudio's rescue comes before the
            # sink's `remove`); its read, answered later, may show the reactor's move: that
            # move is timed by the answer, never by the earlier event
            at = now if self.t0 is not None else None
            fut.add_done_callback(lambda f, i=ev.index, t=at: self._seen_sink(i, t, f))

    def _seen_sink(self, index: int, t: float | None, fut: asyncio.Future) -> None:
        """A call's read after its change event at *t* (None: before t0, timed now)."""
        if not self.armed or fut.cancelled() or fut.exception() is not None:
            return
        if t is None:
            t = time.monotonic()
        if self.target is not None and fut.result() == self.target \
                and index not in self.moved:
            self.moved[index] = t
            self._check_done()

    def _check_done(self) -> None:
        if self.t0 is not None and len(self.moved) == len(self.calls):
            self.done.set()

    def latencies(self) -> tuple[float | None, float | None]:
        """(ms to the first call moved, ms to the last: None unless all moved); a move before
        t0 counts as 0."""
        if self.t0 is None or not self.moved:
            return None, None
        ms = [max(0.0, (t - self.t0) * 1000) for t in self.moved.values()]
        return min(ms), (max(ms) if len(ms) == len(self.calls) else None)


class RoutingBench(Bench):
    role = CALL_ROLE

    def __init__(self, server: AudioServer, args: argparse.Namespace, workdir: Path):
        super().__init__(server, args, workdir)
        self.observer = MoveObserver(server)
        self.home = -1  # the sink calls are on without a headset
        self.settle_s: list[float] = []  # seconds each phase waited for a quiet server
        self.plugs = 0

    async def setup(self) -> str:
        version = await super().setup()
        home = [s for s in await self.observer.pulse.sink_list()
                if s.proplist.get("device.form_factor") == "headphone"]
        if not home:
            raise RuntimeError("the test server has no headphones sink")
        self.sinks, self.home = (home[0].name,), home[0].index
        return version

    async def sinks_of_calls(self) -> dict[int, int | None]:
        got = await asyncio.gather(*(self.observer.raw_sink_input(i, lambda info: info.sink)
                                     for i in self.victims))
        return dict(zip(self.victims, got))

    async def wait_back(self) -> bool:
        """Until every call is on the headphones again; False when the bench had to put them
        back itself (the reactor left some elsewhere within BACK_TIMEOUT)."""
        deadline, put_back = time.monotonic() + BACK_TIMEOUT, False
        while True:
            off = {i: s for i, s in (await self.sinks_of_calls()).items()
                   if s != self.home}
            if not off:
                return not put_back
            if time.monotonic() > deadline:
                if put_back:
                    raise RuntimeError(f"{len(off)} call(s) not back on the headphones even "
                                       f"after the bench moved them, e.g. {list(off.items())[:3]}")
                put_back = True
                print(f"  {len(off)} call(s) not back on the headphones after "
                      f"{BACK_TIMEOUT:.0f}s (e.g. {list(off.items())[:3]}): put back", flush=True)
                await asyncio.gather(*(self.observer.pulse.sink_input_move(i, self.home)
                                       for i in off), return_exceptions=True)
                deadline = time.monotonic() + BACK_TIMEOUT
            await asyncio.sleep(0.02)

    def _cpu_ticks(self) -> int:
        """CPU clock ticks the server's processes used so far (utime + stime, /proc)."""
        ticks = 0
        for proc in self.server.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks

    async def quiet(self) -> float:
        """Wait until the server's processes are quiet (:data:`QUIET_CPU`); the seconds
        waited (:data:`QUIET_TIMEOUT` when they never were)."""
        hz = os.sysconf("SC_CLK_TCK")
        start = time.monotonic()
        while time.monotonic() - start < QUIET_TIMEOUT:
            before = self._cpu_ticks()
            await asyncio.sleep(QUIET_WINDOW)
            if (self._cpu_ticks() - before) / hz <= QUIET_CPU * QUIET_WINDOW:
                break
        return time.monotonic() - start

    async def phase(self, phase: str, action, **arm):
        """Arm the observer, run *action* (blocking: in a thread), wait for the moves.

        :returns: ((ms to the first call moved, ms to the last), what *action* returned)
        """
        await asyncio.sleep(SETTLE)
        self.settle_s.append(await self.quiet())
        done = self.observer.arm_phase(phase, self.victims, **arm)
        result = await asyncio.get_running_loop().run_in_executor(None, action)
        try:
            await asyncio.wait_for(done.wait(), MOVE_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        finally:
            self.observer.disarm()
        return self.observer.latencies(), result

    async def trial(self) -> dict[str, tuple[float | None, float | None]]:
        """Plug a new USB headset, then unplug it: the latencies of each phase."""
        self.check_victims()
        self.plugs += 1
        device = dataclasses.replace(USB_HEADSET, name=f"{USB_HEADSET.name}_{self.plugs}")
        out: dict[str, tuple[float | None, float | None]] = {}
        out["plug"], loaded = await self.phase("plug", lambda: plug(self.server, device))
        out["unplug"], _ = await self.phase(
            "unplug", lambda: unplug(self.server, loaded), headset=self.observer.headset,
            target=self.home)
        if not await self.wait_back():
            out["unplug"] = (out["unplug"][0], None)  # not all back: incomplete
        return out

    async def series(self, reactor: Reactor, trials: int, s: Series | None = None) -> Series:
        """Run one warm-up trial and *trials* more with *reactor*; their latencies are added
        to *s* (a new :class:`Series` by default)."""
        if s is None:
            s = Series(self.server.name, len(self.victims), reactor.name)
        for k in range(trials + 1):
            result = await self.trial()
            if k == 0:
                continue  # warm-up
            for phase, (first, last) in result.items():
                if first is not None:
                    s.first_ms[phase].append(first)
                if last is not None:
                    s.all_ms[phase].append(last)
                else:
                    s.incomplete += 1
        return s


class ReferenceMover(ReferenceReactor):
    script = "reference_mover.py"


async def run_server(server: AudioServer, args: argparse.Namespace, workdir: Path,
                     results: list[Series]) -> str:
    bench = RoutingBench(server, args, workdir)
    config_home = workdir / "config"  # the shipped policies only
    config_home.mkdir(parents=True, exist_ok=True)
    try:
        version = await bench.setup()
        print(f"\n== {server.name}: {version} (calls: {args.calls}) ==", flush=True)
        for count in args.calls:
            await bench.add_victims(count)
            print(f"  {count} call(s) linked on {bench.sinks[0]}", flush=True)
            trials = args.trials or (20 if count == 1 else 10)
            rounds = max(1, min(args.rounds, trials))
            made = {"reference": lambda: ReferenceMover(server, workdir),
                    "daemon": lambda: DaemonReactor(server, workdir, config_home)}
            series = {name: Series(server.name, count, name) for name in made}
            for r in range(rounds):
                # ABBA: each reactor runs first in every other round
                order = ("reference", "daemon") if r % 2 == 0 else ("daemon", "reference")
                share = trials // rounds + (1 if r < trials % rounds else 0)
                for name in order:
                    reactor = made[name]()
                    try:
                        t = time.monotonic()
                        await reactor.start()
                        if isinstance(reactor, DaemonReactor):
                            await reactor.wait_connected(count)
                        s = await bench.series(reactor, share, series[name])
                        print(f"  {reactor.name:9s} {count:3d} call(s), round {r + 1}/{rounds}: "
                              f"{share} trials ({time.monotonic() - t:.1f}s): plug all p50 "
                              f"{pct(s.all_ms['plug'], 50):.2f} ms, unplug all p50 "
                              f"{pct(s.all_ms['unplug'], 50):.2f} ms so far"
                              + (f", {s.incomplete} incomplete" if s.incomplete else ""),
                              flush=True)
                    finally:
                        reactor.stop()
                    await bench.wait_back()
            results.extend(series.values())
            waits, bench.settle_s = bench.settle_s, []
            print(f"  before each phase, waited for a quiet server: p50 {pct(waits, 50):.1f} s, "
                  f"max {max(waits):.1f} s, {sum(w >= QUIET_TIMEOUT for w in waits)} never quiet",
                  flush=True)
        return version
    finally:
        bench.observer.close()


def report(results: list[Series], versions: dict[str, str]) -> None:
    print("\n# servers: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    print("# latency in ms from the headset sink's new (plug) / remove (unplug) event to the "
          "first and to the last call on its expected sink, as a third client sees it")
    head = (f"{'server':11s} {'calls':>5s} {'reactor':9s} {'n':>3s} "
            + " ".join(f"{p + ' ' + w:>14s}" for p in ("plug", "unplug")
                       for w in ("first p50", "all p50", "all p99")) + "  incomplete")
    print(head)
    print("-" * len(head))
    by_key = {(s.server, s.calls, s.reactor): s for s in results}

    def row(s: Series) -> list[float]:
        return [v for p in ("plug", "unplug") for v in (
            pct(s.first_ms[p], 50), pct(s.all_ms[p], 50), pct(s.all_ms[p], 99))]

    for s in results:
        n = max(len(s.all_ms["plug"]), len(s.all_ms["unplug"]))
        print(f"{s.server:11s} {s.calls:5d} {s.reactor:9s} {n:3d} "
              + " ".join(fmt(v, 14) for v in row(s)) + f"  {s.incomplete:10d}")
        ref = by_key.get((s.server, s.calls, "reference"))
        if s.reactor == "daemon" and ref is not None:
            ratios = [a / b if b > 0 else float("nan") for a, b in zip(row(s), row(ref))]
            print(f"{'':11s} {'':5s} {'ratio':9s} {'':3s} "
                  + " ".join(f"{fmt(r, 13)}x" for r in ratios) + "  daemon/reference")
    print(f"\n# Target (issue 11): p50 ratio daemon/reference <= {TARGET_P50_RATIO}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="pulseaudio,pipewire",
                   help="comma-separated servers to run on (pulseaudio, pipewire)")
    p.add_argument("--trials", type=int, default=0,
                   help="trials per series (default 20 with 1 call, 10 with more)")
    p.add_argument("--calls", default="1,50", help="comma-separated call counts")
    p.add_argument("--streams-per-process", type=int, default=10, metavar="N",
                   help="calls per bench/victims.py process (default 10)")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds the trials are split into, the reactors taking turns to go "
                        "first (ABBA; default 2); each round starts its reactor afresh and "
                        "begins with a warm-up trial")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        p.error(f"unknown server(s) {unknown}; known: {sorted(SERVERS)}")
    args.calls = [int(n) for n in args.calls.split(",") if n]
    args.daemon_profile = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Series] = []
    versions: dict[str, str] = {}

    async def run(server: AudioServer, sdir: Path) -> None:
        versions[server.name] = await run_server(server, args, sdir, results)

    return run_on_servers(args.servers, "apd-bench-routing-", ("dbus-daemon", "pactl", "sox"),
                          args.keep, run, lambda: report(results, versions))


if __name__ == "__main__":
    raise SystemExit(main())

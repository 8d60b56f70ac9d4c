"""Live conntrack events: what `conntrack -E` shows, from the ctnetlink multicast groups.

`subscribe(netns, flt, columns, kinds)` opens a NETLINK_NETFILTER socket
inside the namespace, joins the groups of the asked event kinds
(NFNLGRP_CONNTRACK_NEW / _UPDATE / _DESTROY, or the expectation groups) and
returns a `Subscription`; iterating it yields `Event`s (or `ExpectEvent`s),
and a `Lost` record wherever the kernel dropped events.

An event message is decoded exactly like an entry of a dump (ctnetlink.py's
`Decoder`, one message per datagram) and filtered by the same `Filter`
checks as `ct list`. An event carries only what changed: an update may lack
the TCP state, an event has no use count, and the mark is there only when
it is set or changed (`Event.has`). With net.netfilter.nf_conntrack_events
at 2 (the default: "when someone listens"), entries created before the first
listener subscribed send no events at all, not even their destroy.

Losses are never hidden. When the socket's receive queue is full the kernel
drops the message for this socket and counts it in the socket's drop counter
(SO_MEMINFO's sk_drops). By default netlink also marks the socket congested at
the first such drop: it reports the overrun once with ENOBUFS on the next
recv() and drops everything until the queue has been read empty, however much
room reading has made meanwhile. A subscription switches that off
(NETLINK_NO_ENOBUFS), so that in a burst the kernel queues again as soon as
there is room: on Linux 6.18 a slow reader of a 150,000-entry flush with a 32M
buffer received about 100,000 destroys with it against 80,000 without. The
loss is then known from sk_drops alone: the subscription reads it whenever the
queue runs empty and every `CHECK_EVERY` messages while it does not, and yields
`Lost(count)` there, within that many messages of where the events are
missing; `lost` is the total and `overruns` counts the runs of drops (a check
that finds new drops after one that found none). On a socket that keeps
ENOBUFS (one given to the Subscription that has no NO_ENOBUFS), the loss is
yielded once the queue has been read empty after the ENOBUFS, and each ENOBUFS
is an overrun. A large receive buffer (`rcvbuf`, forced past rmem_max as root)
makes loss rare.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import select
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ctkit.errors import KernelError, UsageError
from ctkit.kernel import ctnetlink as nl
from ctkit.kernel.conntrack.columns import DEFAULT_COLUMNS, FAMILY_NAMES, PROTOCOL_NAMES
from ctkit.kernel.conntrack.expect import Expectation, parse_expectations
from ctkit.kernel.conntrack.filters import Filter, FilterError
from ctkit.kernel.conntrack.layout import Entry, Layout

NEW, UPDATE, DESTROY = "new", "update", "destroy"
KINDS = (NEW, UPDATE, DESTROY)
EXPECT_KINDS = (NEW, DESTROY)  # the kernel sends no expectation updates
GROUPS = {NEW: nl.NFNLGRP_CONNTRACK_NEW, UPDATE: nl.NFNLGRP_CONNTRACK_UPDATE,
          DESTROY: nl.NFNLGRP_CONNTRACK_DESTROY}
SUMMARY_COLUMNS = ("proto", "state", "dport", "src")
EXPECT_GROUPS = {NEW: nl.NFNLGRP_CONNTRACK_EXP_NEW, DESTROY: nl.NFNLGRP_CONNTRACK_EXP_DESTROY}
#: bytes asked for the receive buffer; the kernel doubles it and charges ~1.3 KiB per queued event,
#: so this holds ~50,000 events: 2.5 s at 20,000 events/s with nothing read
DEFAULT_RCVBUF = 32 << 20
_CT_NEW = nl.NFNL_SUBSYS_CTNETLINK << 8 | nl.IPCTNL_MSG_CT_NEW
_CT_DELETE = nl.NFNL_SUBSYS_CTNETLINK << 8 | nl.IPCTNL_MSG_CT_DELETE
_EXP_NEW = nl.NFNL_SUBSYS_CTNETLINK_EXP << 8 | nl.IPCTNL_MSG_EXP_NEW
_EXP_DELETE = nl.NFNL_SUBSYS_CTNETLINK_EXP << 8 | nl.IPCTNL_MSG_EXP_DELETE
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, portid
#: messages read between two looks at the drop counter while the queue never runs empty (one getsockopt)
CHECK_EVERY = 1024


@dataclass(frozen=True, slots=True)
class Event(Entry):
    """One conntrack event: its kind, the entry's fields as the event carried them, who caused it.

    `portid` is the netlink port of the process whose request caused the
    event (`conntrack -D`, a ctnetlink flush...), 0 when the kernel did.
    `time` is when ctkit received it (seconds since the epoch).
    """

    kind: str = NEW
    portid: int = 0
    time: float = 0.0

    def has(self, raw: str) -> bool:
        """Whether the event message carried raw field `raw` (e.g. "mark"; see ctnetlink.RAW_FIELDS)."""
        return self.raw[self.layout.raws.index(raw)] is not None

    def as_dict(self) -> dict[str, object]:
        return {"event": self.kind, "time": self.time, "portid": self.portid, **Entry.as_dict(self)}


@dataclass(frozen=True, slots=True)
class ExpectEvent:
    """An expectation created or removed (a helper waits for, or stopped waiting for, a related flow)."""

    kind: str
    expectation: Expectation
    portid: int = 0
    time: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"event": self.kind, "time": self.time, "portid": self.portid, **self.expectation.as_dict()}


@dataclass(frozen=True, slots=True)
class Lost:
    """Events the kernel dropped at this point of the stream (receive queue full: ENOBUFS)."""

    count: int
    total: int  # lost since the subscription started
    overruns: int  # runs of drops so far (on a socket that reports them: ENOBUFS reports)
    time: float = 0.0

    kind = "lost"

    def as_dict(self) -> dict[str, object]:
        return {"event": self.kind, "time": self.time, "lost": self.count, "lost_total": self.total,
                "overruns": self.overruns}


def expect_filter_checks(flt: Filter) -> Callable[[Expectation], bool]:
    """A predicate on expectations for the part of `flt` they have (family, tuple, zone, helper)."""
    for name, value in (("reply_src", flt.reply_src), ("reply_dst", flt.reply_dst), ("state", flt.states),
                        ("status", flt.status or flt.status_clear or None), ("mark", flt.mark)):
        if value is not None:
            raise FilterError(name, " does not apply to expectations (they are filtered by family, proto, src, dst, "
                                    "sport, dport, zone and helper)")
    family = FAMILY_NAMES.get(flt.family) if flt.family is not None else None
    proto = PROTOCOL_NAMES.get(flt.proto, str(flt.proto)) if flt.proto is not None else None

    def check(e: Expectation) -> bool:
        if family is not None and e.family != family:
            return False
        if proto is not None and e.proto != proto:
            return False
        for net, addr in ((flt.src, e.src), (flt.dst, e.dst)):
            if net is not None and (addr is None or ipaddress.ip_address(addr) not in net):
                return False
        if flt.sport is not None and e.sport != flt.sport:
            return False
        if flt.dport is not None and e.dport != flt.dport:
            return False
        if flt.zone is not None and (e.zone or 0) != flt.zone:
            return False
        return flt.helper is None or e.helper == flt.helper
    return check


class EventDecoder:
    """Conntrack event messages -> `Event`s of `columns` that pass `flt` (the same checks as a dump's)."""

    def __init__(self, flt: Filter | None = None, columns: Sequence[str] = DEFAULT_COLUMNS,
                 kinds: Sequence[str] = KINDS) -> None:
        self.kinds = frozenset(kinds)  # the groups joined decide it live; this keeps saved messages honest
        self.layout = Layout.of(columns)
        checks = (flt or Filter()).checks()
        names = list(self.layout.raws) + [raw for raw, _ in checks if raw not in self.layout.raws]
        self.decoder = nl.Decoder(names)
        self.tests = [(names.index(raw), test) for raw, test in checks]
        self.width = len(self.layout.raws)

    def raw(self, buf: bytes | bytearray, off: int, mtype: int, flags: int, portid: int, now: float
            ) -> tuple[str, tuple, int, float] | None:
        """(kind, raw row in layout.raws order, portid, now) of the message at `off`, None if filtered out."""
        if mtype == _CT_DELETE:
            kind = DESTROY
        elif mtype == _CT_NEW:
            kind = NEW if flags & nl.NLM_F_CREATE else UPDATE
        else:
            return None
        if kind not in self.kinds:
            return None
        row = self.decoder.row(buf, off)
        for i, test in self.tests:
            if not test(row[i]):
                return None
        if len(row) > self.width:
            row = row[:self.width]
        return kind, row, portid, now

    def event(self, buf: bytes | bytearray, off: int, mtype: int, flags: int, portid: int, now: float
              ) -> Event | None:
        """The `Event` of the message at `off`, None if it is not a conntrack event or `flt` refuses it."""
        got = self.raw(buf, off, mtype, flags, portid, now)
        return None if got is None else Event(got[1], self.layout, got[0], portid, now)


class ExpectDecoder:
    """Expectation event messages -> `ExpectEvent`s that pass `flt` (decoded generically: they are few)."""

    def __init__(self, flt: Filter | None = None, kinds: Sequence[str] = EXPECT_KINDS) -> None:
        self.check = expect_filter_checks(flt or Filter())
        self.kinds = frozenset(kinds)

    def event(self, buf: bytes | bytearray, off: int, mtype: int, flags: int, portid: int, now: float
              ) -> ExpectEvent | None:
        """The `ExpectEvent` of the message at `off`, None if it is not an expectation event or `flt` refuses it."""
        if mtype == _EXP_DELETE:
            kind = DESTROY
        elif mtype == _EXP_NEW:
            kind = NEW
        else:
            return None
        if kind not in self.kinds:
            return None
        mlen = nl._NLMSGHDR.unpack_from(buf, off)[0]
        (exp,) = parse_expectations([(bytes(buf[off:off + mlen]), mlen)])
        return ExpectEvent(kind, exp, portid, now) if self.check(exp) else None

    raw = event  # expectations are few: they have no cheaper form


def split(data: bytes | bytearray, decoder: EventDecoder | ExpectDecoder, now: float = 0.0
          ) -> Iterator[Event | ExpectEvent]:
    """Events in saved event messages (back to back, as recv() returned them), filtered like a live stream."""
    off = 0
    while off + 16 <= len(data):
        mlen, mtype, flags, _seq, portid = _HEADER.unpack_from(data, off)
        if mlen < 16 or off + mlen > len(data):
            raise KernelError("malformed ctnetlink event (truncated message)")
        if mtype > 15:
            event = decoder.event(data, off, mtype, flags, portid, now)
            if event is not None:
                yield event
        off += (mlen + 3) & ~3


class Subscription:
    """An open event socket. Iterate `events()`; `lost`, `overruns` and `received` count as it goes.

    Iteration stops at `deadline` (a time.monotonic() value) or after `stop()`;
    `on_idle()` runs whenever the receive queue is empty (the moment to flush
    output) and at least every `tick` seconds while nothing comes. Close it
    (or use it as a context manager) to leave the groups.
    """

    def __init__(self, netns: str | None = None, flt: Filter | None = None,
                 columns: Sequence[str] = DEFAULT_COLUMNS, kinds: Sequence[str] = KINDS, expect: bool = False,
                 rcvbuf: int = DEFAULT_RCVBUF, sock: nl.NetlinkSocket | None = None) -> None:
        """`sock`: a socket to use instead of opening one in `netns` (tests give a scripted one)."""
        table = EXPECT_GROUPS if expect else GROUPS
        bad = [k for k in kinds if k not in table]
        if bad or not kinds:
            raise UsageError(f"unknown event kind {', '.join(bad) or '(none)'} "
                             f"(known{' for expectations' if expect else ''}: {', '.join(table)})")
        self.kinds, self.expect = tuple(kinds), expect
        self.decoder: EventDecoder | ExpectDecoder = (ExpectDecoder(flt, self.kinds) if expect
                                                      else EventDecoder(flt, columns, self.kinds))
        self.received = 0  # event messages read from the socket, before filtering
        self.lost = 0
        self.overruns = 0
        self._stopped = False
        self._dropping = False  # the last look at the drop counter found new drops
        self.sock = nl.open_in(netns) if sock is None else sock
        try:
            self.rcvbuf = self.sock.set_rcvbuf(rcvbuf)
            self.sock.join([table[k] for k in self.kinds])
            #: whether an overrun congests the socket and is reported by ENOBUFS (see the module docstring)
            self.enobufs = not self.sock.set_no_enobufs()
            self.sock.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise KernelError(f"cannot set up the event socket: {exc.strerror}") from None
        except KernelError:
            self.sock.close()
            raise
        self._drops_seen = self.sock.drops()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event | ExpectEvent | Lost]:
        return self.events()

    def stop(self) -> None:
        """End the iteration at the next message or tick (safe to call from a signal handler)."""
        self._stopped = True

    def check_losses(self) -> Lost | None:
        """A `Lost` for drops counted since the last check, if any (the iteration calls it itself)."""
        drops = self.sock.drops()
        if drops == self._drops_seen:
            self._dropping = False
            return None
        count, self._drops_seen = drops - self._drops_seen, drops
        self.lost += count
        if not self.enobufs and not self._dropping:  # no ENOBUFS to count overruns by: a new run of drops
            self.overruns += 1
        self._dropping = True
        return Lost(count, self.lost, self.overruns, time.time())

    def events(self, deadline: float | None = None, on_idle: Callable[[], None] | None = None,
               tick: float = 1.0, linger: float = 0.0, raw: bool = False) -> Iterator[Event | ExpectEvent | Lost]:
        """Events as they come (see the class): one per message, and `Lost` after an overrun.

        With `raw`, a conntrack event is the tuple (kind, raw row, portid, time) instead of an `Event`
        (its layout is `self.decoder.layout`): the fast path of the CLI, which formats raw rows itself.

        `linger` seconds: after the queue ran empty and a message came, wait that long before reading
        on, so that a busy stream is read in bursts (far fewer system calls per event) at the cost of
        that much latency; the receive buffer holds what comes meanwhile.
        """
        buf, recv_into = self.sock.buf, self.sock.sock.recv_into
        poller = select.poll()
        poller.register(self.sock.sock.fileno(), select.POLLIN)
        unpack_hdr, decode = _HEADER.unpack_from, self.decoder.raw if raw else self.decoder.event
        clock, wall = time.monotonic, time.time
        pending_loss = False
        check_every = 0 if self.enobufs else CHECK_EVERY  # without ENOBUFS, drops are looked for as we go
        unchecked = 0  # datagrams read since the last look at the drop counter
        while not self._stopped:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                if pending_loss or unchecked:  # the queue is empty: the overrun is over and its count final
                    pending_loss, unchecked = False, 0
                    lost = self.check_losses()
                    if lost is not None:
                        yield lost
                if on_idle is not None:
                    on_idle()
                wait = tick
                if deadline is not None:
                    wait = min(wait, deadline - clock())
                    if wait <= 0:
                        break
                if not poller.poll(int(wait * 1000) + 1):
                    lost = self.check_losses()  # a quiet tick: pick up a drop that came without ENOBUFS
                    if lost is not None:
                        yield lost
                elif linger:
                    time.sleep(linger)
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    pending_loss = True
                    continue
                raise KernelError(f"reading conntrack events failed: {exc.strerror}") from None
            now = wall()
            off = 0
            while off + 16 <= n:
                mlen, mtype, flags, _seq, portid = unpack_hdr(buf, off)
                if mlen < 16 or off + mlen > n:
                    raise KernelError("malformed ctnetlink event (truncated message)")
                if mtype > 15:
                    self.received += 1
                    event = decode(buf, off, mtype, flags, portid, now)
                    if event is not None:
                        yield event
                off += (mlen + 3) & ~3
            if check_every:
                unchecked += 1
                if unchecked >= check_every:  # a queue that never runs empty: look at the drops now and then
                    unchecked = 0
                    lost = self.check_losses()
                    if lost is not None:
                        yield lost
            if deadline is not None and clock() >= deadline:
                break
        lost = self.check_losses()
        if lost is not None:
            yield lost


class Rates:
    """Event rates over a sliding window: per kind, per protocol and state, per port, per source.

    `add` takes an Event of `SUMMARY_COLUMNS` (or any layout that has them);
    counts go into `step`-second buckets and the oldest bucket leaves the
    running totals once the window has passed it, so a snapshot costs the
    number of distinct keys, not the number of events. New flows are
    counted per (protocol, destination port) and per source address: the
    top talkers are the sources that open the most flows.
    """

    def __init__(self, window: float = 10.0, step: float = 1.0, start: float | None = None) -> None:
        if window <= 0 or step <= 0:
            raise UsageError("the summary window and its step must be positive")
        self.window, self.step = window, min(step, window)
        self.start = time.time() if start is None else start
        self.kinds: Counter = Counter()  # since the start
        self.lost = self.overruns = 0
        self._buckets: deque = deque()  # (bucket start, by state, by port, by source, lost)
        self._totals = (Counter(), Counter(), Counter(), Counter())
        self._current = self._new_bucket(self.start)
        self._layout: Layout | None = None  # the last event's layout and where SUMMARY_COLUMNS sit in it
        self._pos: tuple[int, ...] = ()

    def _new_bucket(self, at: float) -> tuple:
        return (at, Counter(), Counter(), Counter(), Counter())

    def _roll(self, now: float) -> None:
        while now >= self._current[0] + self.step:
            self._buckets.append(self._current)
            for total, part in zip(self._totals, self._current[1:], strict=True):
                total.update(part)
            self._current = self._new_bucket(self._current[0] + self.step)
            if now - self._current[0] > self.window:  # a long quiet spell: skip empty buckets
                self._current = self._new_bucket(now - (now - self.start) % self.step)
        while self._buckets and self._buckets[0][0] + self.step <= now - self.window:
            old = self._buckets.popleft()
            for total, part in zip(self._totals, old[1:], strict=True):
                total.subtract(part)
                for key in part:
                    if total[key] <= 0:
                        del total[key]

    def add(self, event: Event) -> None:
        self.add_row(event.kind, event.raw, event.time, event.layout)

    def add_row(self, kind: str, raw: tuple, at: float, layout: Layout) -> None:
        """`add` for a raw event (Subscription.events(raw=True)) of `layout`."""
        if layout is self._layout:
            pos = self._pos
        else:
            names = [c.name for c in layout.columns]
            missing = [n for n in SUMMARY_COLUMNS if n not in names]
            if missing:
                raise ValueError(f"a summary needs the fields {', '.join(missing)}")
            self._layout, self._pos = layout, tuple(names.index(n) for n in SUMMARY_COLUMNS)
            pos = self._pos
        if at >= self._current[0] + self.step:
            self._roll(at)
        v = layout.convert(raw)
        proto = v[pos[0]]
        self.kinds[kind] += 1
        bucket = self._current
        bucket[1][(proto, v[pos[1]], kind)] += 1
        if kind == NEW:
            bucket[2][(proto, v[pos[2]])] += 1
            bucket[3][v[pos[3]]] += 1

    def add_lost(self, lost: Lost) -> None:
        self.lost, self.overruns = lost.total, lost.overruns
        if lost.time >= self._current[0] + self.step:
            self._roll(lost.time)
        self._current[4]["lost"] += lost.count

    def snapshot(self, now: float | None = None, top: int = 10) -> dict[str, object]:
        """The rates over the window ending at `now`, per second; JSON-ready."""
        now = time.time() if now is None else now
        self._roll(now)
        first = self._buckets[0][0] if self._buckets else self._current[0]
        span = max(now - max(first, self.start), 1e-3)  # what the buckets counted covers exactly this
        states, ports, sources, lost = (t.copy() for t in self._totals)
        for total, part in zip((states, ports, sources, lost), self._current[1:], strict=True):
            total.update(part)
        per_kind: Counter = Counter()
        rows: dict[tuple, dict[str, float]] = {}
        for (proto, state, kind), n in states.items():
            per_kind[kind] += n
            row = rows.setdefault((proto or "", state or ""), dict.fromkeys(KINDS, 0.0))
            row[kind] += n / span
        rate = lambda n: round(n / span, 1)  # noqa: E731
        return {
            "time": round(now, 3), "window": round(span, 3), "elapsed": round(now - self.start, 3),
            "rates": {**{k: rate(per_kind[k]) for k in KINDS}, "lost": rate(lost["lost"])},
            "totals": {**{k: self.kinds[k] for k in KINDS}, "lost": self.lost, "overruns": self.overruns},
            "by_proto_state": [{"proto": p or None, "state": st or None, **{k: round(v, 1) for k, v in r.items()}}
                               for (p, st), r in sorted(rows.items(), key=lambda kv: -sum(kv[1].values()))],
            "top_ports": [{"proto": p, "dport": d, "new": rate(n)} for (p, d), n in ports.most_common(top)],
            "top_sources": [{"src": src, "new": rate(n)} for src, n in sources.most_common(top)],
        }


def subscribe(netns: str | None = None, flt: Filter | None = None, columns: Sequence[str] = DEFAULT_COLUMNS,
              kinds: Sequence[str] = KINDS, expect: bool = False, rcvbuf: int = DEFAULT_RCVBUF) -> Subscription:
    """Listen to conntrack (or, with `expect`, expectation) events of `kinds` in `netns`."""
    return Subscription(netns, flt, columns, kinds, expect, rcvbuf)


def program_name(portid: int, _cache: dict[int, str | None] = {}) -> str | None:  # noqa: B006 - a cache
    """The program behind a netlink port id, as conntrack -E shows it (a port id is usually a pid)."""
    if portid in _cache:
        return _cache[portid]
    name = None
    try:
        with open(f"/proc/{portid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
        name = os.path.basename(argv0.decode("utf-8", "replace")) or None
    except OSError:
        pass
    if len(_cache) < 1024:
        _cache[portid] = name
    return name


__all__ = ["CHECK_EVERY", "DEFAULT_RCVBUF", "DESTROY", "EXPECT_KINDS", "KINDS", "NEW", "UPDATE", "Event", "EventDecoder",
           "ExpectDecoder", "ExpectEvent", "Lost", "Rates", "SUMMARY_COLUMNS", "Subscription", "program_name", "split", "subscribe"]

"""ctnetlink over a plain netlink socket: dump requests and a fast decoder.

Why not pyroute2 here: on the project's machines pyroute2's conntrack dump
takes about 70 times as long as `conntrack -L` (200k entries: ~87 s against
~1.2 s) because it builds a generic Python object tree for every attribute,
and it silently drops IPv6 entries unless asked for AF_UNSPEC. A raw dump of
the same table takes well under a second; the cost is all in decoding.

So this module talks NETLINK_NETFILTER itself and decodes with
`struct.unpack_from` over one reused receive buffer, reading only the
attributes a caller asks for. The trick that makes it fast is the *shape*:
ctnetlink writes every entry of the same kind (family, protocol, which
optional attributes are present) with the same attribute layout, so the byte
offsets of the requested values repeat from one message to the next. The
first message of a shape is walked attribute by attribute (`walk`); the walk
is compiled into two `struct.Struct`s: one that re-reads every attribute
header the walk depended on (top level, and every nest on the path to a
requested field), and one that reads the requested values. A later message
of the same length whose headers match exactly would be walked identically,
so its values are read with one `unpack_from` call. A message that matches
no known shape is walked and becomes a new shape (the cache is bounded).

What the decoder hands out per message is the shape's `finish` function of
those values, made once per shape by a factory: by default the values in the
requested order (`reorder`); `ct list` passes formatters that turn them into
the entry's text in one step (conntrack/text.py LineFormat, layout.py
JsonFormat). Key fields (`keys`, e.g. the protocol number) are read by the
check as well, so their value is fixed within a shape and a formatter can
write it, and what depends on it, into its template.

Events (ctkit/kernel/conntrack/events.py) use the same decoder: a multicast
event is one IPCTNL_MSG_CT_NEW or _DELETE message per datagram, laid out like
a dump entry, read with `Decoder.row`; the socket joins the NFNLGRP_CONNTRACK_*
groups (`join`), takes a large receive buffer (`set_rcvbuf`) and tells how
many messages the kernel dropped for it (`drops`).

The plumbing (message and attribute packing, the socket, errors) serves every
nfnetlink subsystem ctkit talks to: ctnetlink, its expectations and
cttimeout (ctkit/kernel/cttimeout.py). Nothing here knows about policies or
the CLI; errors become KernelError.
"""
from __future__ import annotations

import errno
import fcntl
import operator
import os
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ctkit.errors import KernelError
from ctkit.kernel.netns import entered

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_CTNETLINK_EXP = 2
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_STATS_CPU = 4
IPCTNL_MSG_CT_GET_STATS = 5
IPCTNL_MSG_EXP_NEW = 0
IPCTNL_MSG_EXP_GET = 1
IPCTNL_MSG_EXP_GET_STATS_CPU = 3
IPCTNL_MSG_EXP_DELETE = 2

# Multicast groups (enum nfnetlink_groups): ctnetlink sends each event to one of them,
# as IPCTNL_MSG_CT_NEW (flags NLM_F_CREATE|NLM_F_EXCL for a new entry, none for an update)
# or IPCTNL_MSG_CT_DELETE; expectations as IPCTNL_MSG_EXP_NEW / IPCTNL_MSG_EXP_DELETE.
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
NFNLGRP_CONNTRACK_EXP_NEW, NFNLGRP_CONNTRACK_EXP_UPDATE, NFNLGRP_CONNTRACK_EXP_DESTROY = 4, 5, 6
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_NO_ENOBUFS = 5
SO_MEMINFO = 55  # struct of SK_MEMINFO_VARS u32s; the last one we read is sk_drops
SK_MEMINFO_DROPS = 8
_MEMINFO = struct.Struct("=9I")

# enum ctattr_type (include/uapi/linux/netfilter/nfnetlink_conntrack.h)
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_HELP = 1, 2, 3, 4, 5
CTA_TIMEOUT, CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_USE, CTA_ID = 7, 8, 9, 10, 11, 12
CTA_TUPLE_MASTER, CTA_ZONE, CTA_SECCTX, CTA_TIMESTAMP, CTA_MARK_MASK, CTA_LABELS = 14, 18, 19, 20, 21, 22
CTA_FILTER, CTA_STATUS_MASK = 25, 26
CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_TUPLE_ZONE = 1, 2, 3
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 1, 2
# CTA_FILTER flag bits (net/netfilter/nf_internals.h)
FILTER_IP_SRC, FILTER_IP_DST, FILTER_PROTO_NUM = 1 << 0, 1 << 1, 1 << 3
FILTER_SRC_PORT, FILTER_DST_PORT = 1 << 4, 1 << 5

_NLMSGHDR = struct.Struct("=IHHII")
_NLMSG_LEN_TYPE = struct.Struct("=IH")
_NFGENMSG = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
_HDR_LEN = _NLMSGHDR.size + _NFGENMSG.size  # 20: where the attributes start
_U32 = struct.Struct("=I")
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20

RECV_BUFSIZE = 1 << 16  # the kernel fills at most ~32 KiB per dump recv
SOCKET_RCVBUF = 1 << 22
SHAPE_CACHE_MAX = 4096

# --------------------------------------------------------------- requests


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def nest(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">I", value & 0xFFFFFFFF))


def u16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">H", value & 0xFFFF))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("B", value & 0xFF))


def message(subsys: int, msg: int, flags: int, family: int, payload: bytes = b"", seq: int = 1,
            res_id: int = 0) -> bytes:
    length = _HDR_LEN + len(payload)
    return (_NLMSGHDR.pack(length, (subsys << 8) | msg, flags, seq, 0)
            + _NFGENMSG.pack(family, 0, socket.htons(res_id)) + payload)


# ----------------------------------------------------------------- socket


class NetlinkSocket:
    """A NETLINK_NETFILTER socket in the namespace the calling thread is in when it is created."""

    def __init__(self, timeout: float | None = None) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      NETLINK_NETFILTER)
        except OSError as exc:
            raise KernelError(f"cannot open a netfilter netlink socket: {exc.strerror}") from None
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_RCVBUF)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF)
            self.sock.bind((0, 0))
            if timeout is not None:
                self.sock.settimeout(timeout)
        except OSError as exc:
            self.sock.close()
            raise KernelError(f"cannot set up a netfilter netlink socket: {exc.strerror}") from None
        self.buf = bytearray(RECV_BUFSIZE)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "NetlinkSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def join(self, groups: Sequence[int]) -> None:
        """Subscribe to multicast `groups` (NFNLGRP_*); the kernel refuses it without CAP_NET_ADMIN."""
        for group in groups:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            except OSError as exc:
                raise kernel_error(exc.errno or errno.EPERM, f"listening to ctnetlink group {group}") from None

    def set_rcvbuf(self, size: int) -> int:
        """Ask for a receive buffer of `size` bytes (forced past rmem_max as root); the size the kernel
        accounts against (it doubles the request for its own overhead)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def set_no_enobufs(self) -> bool:
        """Drop only the multicast messages that do not fit, without ENOBUFS (NETLINK_NO_ENOBUFS).

        By default the first overrun marks the socket congested (net/netlink/af_netlink.c:
        netlink_overrun): the kernel then drops every message for it until the queue has been
        read empty, however much room reading has made, and recv() reports ENOBUFS once. With
        this option it queues again as soon as there is room, and reports nothing: the drops
        are counted in sk_drops only (`drops`). True when the kernel took the option.
        """
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        except OSError:
            return False
        return True

    def drops(self) -> int:
        """Messages the kernel could not queue on this socket so far (sk_drops, from SO_MEMINFO).

        Every multicast message netlink drops for a full receive queue is counted
        here, whereas recv() reports only the first of each overrun (ENOBUFS).
        """
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
        except OSError:
            return 0
        return _MEMINFO.unpack(raw.ljust(_MEMINFO.size, b"\0"))[SK_MEMINFO_DROPS]

    def send(self, subsys: int, msg: int, flags: int, family: int, payload: bytes = b"", res_id: int = 0) -> int:
        self.seq += 1
        try:
            self.sock.sendto(message(subsys, msg, flags, family, payload, self.seq, res_id), (0, 0))
        except OSError as exc:
            raise KernelError(f"ctnetlink request failed: {exc.strerror}") from None
        return self.seq

    def chunks(self, what: str, prefetch: bool = False) -> Iterator[tuple[bytearray, int]]:
        """Yield (buffer, valid length) for each chunk of the reply until NLMSG_DONE.

        The buffer is reused: a consumer must be done with a chunk before asking
        for the next. Messages are never split across chunks; a chunk may end
        with the DONE message, which consumers skip like any control message.
        With `prefetch`, a forked child reads the socket while this process
        decodes (see `_prefetched`); the output is the same.
        """
        if prefetch:
            yield from self._prefetched(what)
            return
        buf, recv_into = self.buf, self.sock.recv_into
        while True:
            n = _recv(recv_into, buf, what)
            end, status = scan(buf, n)
            if end:
                yield buf, end
            if status is not None:
                if status:
                    raise kernel_error(status, what)
                return

    def _prefetched(self, what: str) -> Iterator[tuple[bytearray, int]]:
        """Overlap the kernel's share of a dump with our decoding.

        On a large table about half the wall time of a dump is spent in the
        kernel, inside recv(). A thread cannot overlap it (the GIL hand-off
        after each recv waits for the switch interval), so a forked child
        does the recv() calls and streams the chunks through a pipe:
        [u32 length][bytes] per chunk, [u32 0] at the end, [u32 ~0][i32 errno]
        on a kernel error. The child exits when the pipe closes.
        """
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                os.close(rfd)
                self._pump(wfd)
            except BaseException:  # noqa: BLE001 - the child must never return into the caller
                code = 1
            finally:
                os._exit(code)
        os.close(wfd)
        reader = os.fdopen(rfd, "rb", buffering=0)
        buf, head = self.buf, bytearray(4)
        view = memoryview(buf)
        try:
            while True:
                _read_exact(reader, memoryview(head), 4)
                n = _U32.unpack_from(head)[0]
                if n == 0:
                    return
                if n == 0xFFFFFFFF:
                    _read_exact(reader, memoryview(head), 4)
                    raise kernel_error(_ERRNO.unpack_from(head)[0], what)
                if n > len(buf):
                    raise KernelError(f"malformed chunk while {what}")
                _read_exact(reader, view, n)
                yield buf, n
        finally:
            view.release()
            reader.close()
            os.waitpid(pid, 0)

    def _pump(self, wfd: int) -> None:  # pragma: no cover - runs in the child
        buf, recv_into = self.buf, self.sock.recv_into
        view = memoryview(buf)
        while True:
            try:
                n = recv_into(buf)
            except OSError as exc:
                _write_all(wfd, _U32.pack(0xFFFFFFFF) + _ERRNO.pack(exc.errno or errno.EIO))
                return
            end, status = scan(buf, n)
            if end:
                _write_all(wfd, _U32.pack(end))
                _write_all(wfd, view[:end])
            if status is not None:
                tail = _U32.pack(0) if not status else _U32.pack(0xFFFFFFFF) + _ERRNO.pack(status)
                _write_all(wfd, tail)
                return

    def request(self, subsys: int, msg: int, family: int, payload: bytes = b"", dump: bool = True,
                what: str = "the ctnetlink request", res_id: int = 0, prefetch: bool = False, flags: int = 0
                ) -> Iterator[tuple[bytearray, int]]:
        """Send one request (a dump, or one acknowledged message with extra `flags`); its reply chunks."""
        flags |= NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        self.send(subsys, msg, flags, family, payload, res_id)
        return self.chunks(what, prefetch)


def open_in(netns: str | None, timeout: float | None = None) -> NetlinkSocket:
    """A NetlinkSocket opened inside network namespace `netns` (None: the caller's); it stays bound there."""
    with entered(netns):
        return NetlinkSocket(timeout)


def scan(buf: bytearray, n: int) -> tuple[int, int | None]:
    """(bytes worth handing on, status): status None to read on, 0 at DONE/ACK, errno on error."""
    off = 0
    while off + 16 <= n:
        mlen, mtype = _NLMSG_LEN_TYPE.unpack_from(buf, off)
        if mtype == NLMSG_DONE:
            return off, 0
        if mtype == NLMSG_ERROR:
            return off, -_ERRNO.unpack_from(buf, off + 16)[0]
        if mlen < 16:
            return off, errno.EBADMSG
        off += (mlen + 3) & ~3
    return n, None


def _recv(recv_into: Callable, buf: bytearray, what: str) -> int:
    while True:
        try:
            return recv_into(buf)
        except InterruptedError:
            continue
        except TimeoutError:  # only on a socket opened with a timeout
            raise KernelError(f"{what}: no answer from the kernel") from None
        except OSError as exc:
            raise KernelError(f"{what} over ctnetlink failed: {exc.strerror}") from None


def _read_exact(reader, view: memoryview, n: int) -> None:
    got = 0
    while got < n:
        k = reader.readinto(view[got:n])
        if not k:
            raise KernelError("the ctnetlink reader process stopped early")
        got += k


def _write_all(fd: int, data: bytes | memoryview) -> None:  # pragma: no cover - runs in the child
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def kernel_error(code: int, what: str) -> KernelError:
    """A KernelError for errno `code`, which it keeps as `.errno`."""
    if code in (errno.EPERM, errno.EACCES):
        exc = KernelError(f"{what} needs CAP_NET_ADMIN: run as root")
    elif code == errno.EOPNOTSUPP:
        exc = KernelError(f"this kernel does not support {what} (EOPNOTSUPP)")
    else:
        exc = KernelError(f"the kernel refused {what}: {os.strerror(code)}")
    exc.errno = code  # type: ignore[attr-defined]
    return exc


def messages(chunk: bytearray, length: int) -> Iterator[int]:
    """Offsets of the data messages in one chunk (skips DONE/ERROR, which `chunks` handled)."""
    off = 0
    while off + 16 <= length:
        mlen, mtype = _NLMSG_LEN_TYPE.unpack_from(chunk, off)
        if mtype > NLMSG_DONE + 12:  # NLMSG_MIN_TYPE is 0x10
            yield off
        off += (mlen + 3) & ~3


def attrs(buf: bytes | bytearray, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload offset, payload length) of each attribute in [start, end)."""
    off = start
    while off + 4 <= end:
        alen, atype = _NLATTR.unpack_from(buf, off)
        if alen < 4:
            return
        yield atype & NLA_TYPE_MASK, off + 4, alen - 4
        off += (alen + 3) & ~3


def message_attrs(buf: bytes | bytearray, off: int) -> dict[int, tuple[int, int]]:
    """Top-level attributes of the message at `off`: type -> (payload offset, payload length)."""
    mlen = _NLMSGHDR.unpack_from(buf, off)[0]
    return {t: (p, n) for t, p, n in attrs(buf, off + _HDR_LEN, off + mlen)}


def be32(buf: bytes | bytearray, loc: tuple[int, int] | None) -> int | None:
    """The big-endian u32 at `loc` (a `message_attrs` value), None when the attribute is absent."""
    return None if loc is None else struct.unpack_from(">I", buf, loc[0])[0]


# ------------------------------------------------------------ the schema
#
# A field is a leaf attribute addressed by a path of attribute types from the
# top level of a message. Each field has a struct code for its payload; 'a'
# marks an address (4 or 16 bytes), 's' a NUL-terminated string, 'b' raw bytes.

@dataclass(frozen=True)
class Field:
    name: str
    paths: tuple[tuple[int, ...], ...]  # attribute types from the top level down (v4 and v6 variants)
    code: str  # struct code (big endian) or 'a' address, 's' string, 'b' bytes

    @property
    def parents(self) -> set[tuple[int, ...]]:
        return {p[:i] for p in self.paths for i in range(1, len(p))}


def _tuple_fields(top: int, prefix: str) -> list[Field]:
    ip, proto = (top, CTA_TUPLE_IP), (top, CTA_TUPLE_PROTO)
    return [
        Field(f"{prefix}src", (ip + (CTA_IP_V4_SRC,), ip + (CTA_IP_V6_SRC,)), "a"),
        Field(f"{prefix}dst", (ip + (CTA_IP_V4_DST,), ip + (CTA_IP_V6_DST,)), "a"),
        Field(f"{prefix}proto", (proto + (CTA_PROTO_NUM,),), "B"),
        Field(f"{prefix}sport", (proto + (CTA_PROTO_SRC_PORT,),), "H"),
        Field(f"{prefix}dport", (proto + (CTA_PROTO_DST_PORT,),), "H"),
        Field(f"{prefix}icmp_id", (proto + (4,), proto + (7,)), "H"),  # CTA_PROTO_ICMP(V6)_ID
        Field(f"{prefix}icmp_type", (proto + (5,), proto + (8,)), "B"),
        Field(f"{prefix}icmp_code", (proto + (6,), proto + (9,)), "B"),
        Field(f"{prefix}tuple_zone", ((top, CTA_TUPLE_ZONE),), "H"),
    ]


RAW_FIELDS: tuple[Field, ...] = tuple(
    _tuple_fields(CTA_TUPLE_ORIG, "") + _tuple_fields(CTA_TUPLE_REPLY, "reply_")
    + [f for f in _tuple_fields(CTA_TUPLE_MASTER, "master_")
       if f.name in ("master_src", "master_dst", "master_proto", "master_sport", "master_dport")]
    + [
        Field("status", ((CTA_STATUS,),), "I"),
        Field("timeout", ((CTA_TIMEOUT,),), "I"),
        Field("mark", ((CTA_MARK,),), "I"),
        Field("use", ((CTA_USE,),), "I"),
        Field("id", ((CTA_ID,),), "I"),
        Field("zone", ((CTA_ZONE,),), "H"),
        # PROTOINFO / PROTOINFO_TCP|DCCP|SCTP / *_STATE
        Field("tcp_state", ((CTA_PROTOINFO, 1, 1),), "B"),
        Field("dccp_state", ((CTA_PROTOINFO, 2, 1),), "B"),
        Field("sctp_state", ((CTA_PROTOINFO, 3, 1),), "B"),
        Field("helper", ((CTA_HELP, 1),), "s"),
        Field("secctx", ((CTA_SECCTX, 1),), "s"),
        Field("orig_packets", ((CTA_COUNTERS_ORIG, 1),), "Q"),
        Field("orig_bytes", ((CTA_COUNTERS_ORIG, 2),), "Q"),
        Field("reply_packets", ((CTA_COUNTERS_REPLY, 1),), "Q"),
        Field("reply_bytes", ((CTA_COUNTERS_REPLY, 2),), "Q"),
        Field("start", ((CTA_TIMESTAMP, 1),), "Q"),
        Field("stop", ((CTA_TIMESTAMP, 2),), "Q"),
        Field("labels", ((CTA_LABELS,),), "b"),
    ]
)
RAW_BY_NAME = {f.name: f for f in RAW_FIELDS}
_BY_PATH = {p: f for f in RAW_FIELDS for p in f.paths}
# every nest the walker can descend into; anything else is skipped as opaque
_NESTS = frozenset(n for f in RAW_FIELDS for n in f.parents)
FAMILY = "family"  # pseudo-field: nfgenmsg family, always at offset 16


def walk(buf: bytes | bytearray, off: int, wanted: frozenset[tuple[int, ...]] = _NESTS
         ) -> tuple[dict[tuple[int, ...], list[int]], dict[str, tuple[int, int]]]:
    """Walk one message at `off`.

    Returns the offsets of attribute headers per nest path (() is the top
    level) and, per field, (payload offset, payload length) -- both relative
    to `off`. Descends only into nests in `wanted`.
    """
    mlen = _NLMSG_LEN_TYPE.unpack_from(buf, off)[0]
    headers: dict[tuple[int, ...], list[int]] = {}
    found: dict[str, tuple[int, int]] = {}

    def go(path: tuple[int, ...], start: int, end: int) -> None:
        hdrs = headers.setdefault(path, [])
        pos = start
        while pos + 4 <= end:
            alen, atype = _NLATTR.unpack_from(buf, pos)
            if alen < 4 or pos + alen > end:
                raise KernelError("malformed ctnetlink attribute (truncated message)")
            hdrs.append(pos - off)
            sub = path + (atype & NLA_TYPE_MASK,)
            if sub in wanted:
                go(sub, pos + 4, pos + alen)
            else:
                fld = _BY_PATH.get(sub)
                if fld is not None:
                    found[fld.name] = (pos + 4 - off, alen - 4)
            pos += (alen + 3) & ~3

    go((), off + _HDR_LEN, off + mlen)
    return headers, found


# ------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """A compiled layout: if `check` reads `expected`, `values` reads the requested fields, `finish` makes them
    what the decoder hands out (by default: the values in the requested order, None for the absent ones)."""

    length: int
    check: struct.Struct
    expected: tuple
    values: struct.Struct
    finish: Callable[[tuple], object]  # values in offset order -> what Decoder.rows/row yield


@dataclass(frozen=True)
class ShapeFields:
    """What a shape holds, for a `finish` factory: where each requested field present in the shape sits in
    the tuple `values` reads (the absent ones are not in `at`), and the value of each key field (the
    same in every message of the shape: the shape's check reads it)."""

    at: dict[str, int]
    keys: dict[str, object]


def _layout(items: Sequence[tuple[int, str]]) -> str:
    fmt, pos = [">"], 0
    for at, code in items:
        if at > pos:
            fmt.append(f"{at - pos}x")
        fmt.append(code)
        pos = at + struct.calcsize(">" + code)
    return "".join(fmt)


def _runs(items: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """Adjacent fixed-size reads merged into one read of their bytes: one object to compare, not several."""
    out: list[tuple[int, int]] = []  # (offset, size)
    for at, code in items:
        size = struct.calcsize(">" + code)
        if out and out[-1][0] + out[-1][1] == at:
            out[-1] = (out[-1][0], out[-1][1] + size)
        else:
            out.append((at, size))
    return [(at, f"{size}s") for at, size in out]


def _code(fld: Field, length: int) -> str:
    if fld.code in "asb":
        return f"{length}s"
    return fld.code


def compile_shape(buf: bytes | bytearray, off: int, names: Sequence[str], keys: Sequence[str] = (),
                  finish: Callable[[ShapeFields], Callable[[tuple], object]] | None = None) -> Shape:
    """Walk the message at `off` and compile the shape for fields `names` (family allowed).

    `keys` (some of `names`) are fields whose values become part of the shape: its check reads them too,
    so a message with another value is another shape. `finish` makes the shape's function from its
    `ShapeFields` (default: `reorder`).
    """
    need = set()
    for name in names:
        if name == FAMILY:
            continue
        need.update(RAW_BY_NAME[name].parents)
    headers, found = walk(buf, off, frozenset(need))
    mlen = _NLMSG_LEN_TYPE.unpack_from(buf, off)[0]
    check_at = sorted({h for path in ((),) + tuple(need) for h in headers.get(path, ())})
    check_items = [(4, "H")] + [(h, "I") for h in check_at]
    reads: list[tuple[int, str, str]] = []  # (offset, code, name) of every field present
    for name in names:
        if name == FAMILY:
            reads.append((16, "B", name))
        elif name in found:
            loc = found[name]
            reads.append((loc[0], _code(RAW_BY_NAME[name], loc[1]), name))
    reads.sort()
    key_reads = [(at, code) for at, code, name in reads if name in keys]
    check = struct.Struct(_layout(_runs(sorted(check_items + key_reads))))
    expected = check.unpack_from(buf, off)
    values = struct.Struct(_layout([(at, code) for at, code, _ in reads]))
    at = {name: k for k, (_, _, name) in enumerate(reads)}
    sample = values.unpack_from(buf, off)
    fields = ShapeFields(at, {name: sample[at[name]] for name in keys if name in at})
    return Shape(mlen, check, expected, values, (finish or reorder(names))(fields))


def reorder(names: Sequence[str]) -> Callable[[ShapeFields], Callable[[tuple], tuple]]:
    """The default finish: a shape's values in the order of `names`, None for the fields it lacks."""
    def make(fields: ShapeFields) -> Callable[[tuple], tuple]:
        at = fields.at
        if list(at) == list(names):
            return _identity
        index = [at.get(name, len(at)) for name in names]  # len(at): the None appended below
        if len(index) == 1:
            k = index[0]
            return lambda t: ((t + (None,))[k],)
        getter = operator.itemgetter(*index)
        return lambda t: getter(t + (None,))
    return make


def _identity(t: tuple) -> tuple:
    return t


class Decoder:
    """Reads fields `names` from ctnetlink messages, caching compiled shapes.

    What it yields per message is the shape's `finish` function applied to the values: by default
    (`reorder`) a tuple in `names` order; a caller that formats entries passes its own factory, which
    is called once per shape (see `compile_shape` for `keys`). One Decoder per dump: the cache is
    local state, bounded by SHAPE_CACHE_MAX.
    """

    def __init__(self, names: Sequence[str], keys: Sequence[str] = (),
                 finish: Callable[[ShapeFields], Callable[[tuple], object]] | None = None) -> None:
        unknown = [n for n in names if n != FAMILY and n not in RAW_BY_NAME]
        if unknown:
            raise ValueError(f"unknown ctnetlink fields: {unknown}")
        if not set(keys) <= set(names):
            raise ValueError(f"key fields {sorted(set(keys) - set(names))} are not among the fields read")
        self.names = tuple(names)
        self.keys = tuple(keys)
        self.finish = finish or reorder(self.names)
        self.shapes: dict[int, list[Shape]] = {}
        self.last: dict[int, tuple] = {}  # per length, the shape that read the last message of that length
        self.nshapes = 0

    def rows(self, buf: bytearray, length: int) -> Iterator:
        """What `finish` makes of every data message in the chunk (raw tuples in `names` order by default)."""
        last, unpack_hdr = self.last, _NLMSG_LEN_TYPE.unpack_from
        off = 0
        while off + 16 <= length:
            mlen, mtype = unpack_hdr(buf, off)
            if mtype > 15:
                hot = last.get(mlen)
                if hot is None or hot[0](buf, off) != hot[1]:
                    hot = self._find(buf, off, mlen)
                yield hot[3](hot[2](buf, off))
            off += (mlen + 3) & ~3

    def row(self, buf: bytes | bytearray, off: int = 0):
        """What `finish` makes of the one data message at `off` (an event: one message per datagram)."""
        mlen = _NLMSG_LEN_TYPE.unpack_from(buf, off)[0]
        hot = self.last.get(mlen)
        if hot is None or hot[0](buf, off) != hot[1]:
            hot = self._find(buf, off, mlen)
        return hot[3](hot[2](buf, off))

    def _find(self, buf: bytes | bytearray, off: int, mlen: int) -> tuple:
        """The shape of the message at `off` among those of its length (learnt if new), as the tuple `rows`
        reads: (check reader, expected, values reader, finish). It becomes the first tried for that length."""
        for shape in self.shapes.get(mlen, ()):
            if shape.check.unpack_from(buf, off) == shape.expected:
                break
        else:
            shape = self._learn(buf, off, mlen)
        hot = (shape.check.unpack_from, shape.expected, shape.values.unpack_from, shape.finish)
        self.last[mlen] = hot
        return hot

    def _learn(self, buf: bytes | bytearray, off: int, mlen: int) -> Shape:
        shape = compile_shape(buf, off, self.names, self.keys, self.finish)
        if self.nshapes < SHAPE_CACHE_MAX:
            self.shapes.setdefault(mlen, []).append(shape)
            self.nshapes += 1
        return shape

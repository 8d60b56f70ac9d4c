"""The connection tracker of a network namespace, read through ctnetlink.

The library API the audit, the service and the CLI build on. Every function
takes an optional `netns` name (None: the caller's namespace); the netlink
socket is opened inside the namespace and stays there.

- `entries(netns, flt, columns)`: an iterator of `Entry` (lazy: values are
  converted from the raw netlink bytes only when read).
- `rows(netns, flt, columns)`: the same, as plain tuples of display values
  (converted by a compiled Layout); `lines`: conntrack -L's text, `json_rows`: one JSON object
  per entry (what `ct list` prints), both made by per-shape formatters through `formatted`.
- `summary(netns, by, flt)`: counts grouped by columns, one streaming pass.
- `count(netns)`, `stats(netns)`, `expectations(netns)`, `delete(netns, entries)`.
- `events.subscribe(netns, flt, columns, kinds)`: live events (`Event`, and `Lost` where the
  kernel dropped some), filtered by the same `Filter`; `events.Rates` for rates over a window.

Where each part lives:
- columns.py   the fields of an entry (`column`, `DEFAULT_COLUMNS`) and the kernel's names
- filters.py   `Filter`: what to select, which part the kernel applies and which ctkit checks
- layout.py    `Layout` (compiled row converters) and `Entry`
- dump.py      the table dump: `entries`, `rows`, `json_rows`, `summary`, saved dumps
- counters.py  `count` and the per-CPU `stats`
- expect.py    the expectation table (every attribute: tuple, mask, master, class, flags, NAT)
- text.py      conntrack(8)'s text of entries and expectations, word for word
- deletion.py  `delete`
- events.py    live events from the ctnetlink multicast groups, loss counting, rates
The ctnetlink decoder itself is ctkit/kernel/ctnetlink.py.
"""
from ctkit.kernel.conntrack.columns import DEFAULT_COLUMNS, STATUS_VALUES, column
from ctkit.kernel.conntrack.counters import count, stats
from ctkit.kernel.conntrack.deletion import delete
from ctkit.kernel.conntrack.dump import entries, formatted, json_rows, lines, rows, summary
from ctkit.kernel.conntrack.expect import expectations
from ctkit.kernel.conntrack.filters import Filter, FilterError

__all__ = ["DEFAULT_COLUMNS", "STATUS_VALUES", "Filter", "FilterError", "column", "count", "delete", "entries",
           "expectations", "formatted", "json_rows", "lines", "rows", "stats", "summary"]

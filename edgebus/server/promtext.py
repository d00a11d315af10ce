"""Prometheus' text exposition format (version 0.0.4), for the supervisor's metrics endpoint.

prometheus-client writes this format and the bridges use it (bridges/endpoint.py), but the
supervisor does not import it: its package imports its exposition module, which imports ssl,
http.server, urllib.request and wsgiref at the top, 8.2 MB of RSS in a supervisor that holds 19.5
(issue 16; nothing of the package can be imported without that module). The format is small, so
it is written here, to the byte as prometheus-client's `generate_latest` writes the same families:
tests/server/test_promtext.py renders one set of families both ways and compares them.

A family is what prometheus-client calls a MetricFamily: a name, its HELP text, its TYPE and
samples (name with its suffix, labels, value). A counter's name is given without `_total`,
which its HELP, TYPE and sample lines carry; a histogram's samples are its `_bucket`s (label
`le`), `_count` and `_sum`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family:
    __slots__ = ("doc", "labelnames", "name", "samples", "type")

    def __init__(self, name: str, doc: str, type_: str, labels: Sequence[str] = ()) -> None:
        self.name, self.doc, self.type = name, doc, type_
        self.labelnames = tuple(labels)
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        """One sample with these label values (in the order of the family's label names)."""
        suffix = "_total" if self.type == "counter" else ""
        self.samples.append((self.name + suffix, dict(zip(self.labelnames, labels, strict=True)),
                             value))


def gauge(name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()) -> Family:
    f = Family(name, doc, "gauge", labels)
    if value is not None:
        f.add_metric([], value)
    return f


def counter(name: str, doc: str, value: float | None = None, labels: Sequence[str] = ()) -> Family:
    f = Family(name.removesuffix("_total"), doc, "counter", labels)
    if value is not None:
        f.add_metric([], value)
    return f


def histogram(name: str, doc: str, buckets: Sequence[tuple[str, float]], sum_value: float
              ) -> Family:
    """`buckets`: (upper bound as written, cumulative count) pairs, "+Inf" last."""
    f = Family(name, doc, "histogram")
    f.samples += [(f"{name}_bucket", {"le": bound}, n) for bound, n in buckets]
    if float(buckets[0][0]) >= 0:  # as prometheus-client: no count and sum with negative bounds
        f.samples += [(f"{name}_count", {}, buckets[-1][1]), (f"{name}_sum", {}, sum_value)]
    return f


def go_float(x: float) -> str:
    """A value as Go's Prometheus libraries, and prometheus-client, write it."""
    d = float(x)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(families: Iterable[Family]) -> bytes:
    out: list[str] = []
    for f in families:
        name = f.name + "_total" if f.type == "counter" else f.name
        doc = f.doc.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {f.type}\n")
        for sname, labels, value in f.samples:
            if labels:
                pairs = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels.items()))
                out.append(f"{sname}{{{pairs}}} {go_float(value)}\n")
            else:
                out.append(f"{sname} {go_float(value)}\n")
    return "".join(out).encode("utf-8")

"""The Prometheus text exposition (format 0.0.4) of every family, produced chunk by chunk.

The primitives' families are rendered natively from one `_native.Scrape` (its figures read
when the first chunk is asked for, in a few native calls, none holding the GIL for more than
a fraction of a millisecond); the sources' families here. Nothing is rendered before it is
asked for: whoever sends the chunks decides how much is held (`admission.metrics.server`
holds one per client).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping

from admission import _native
from admission._native import WAIT_BOUNDS
from admission.metrics.families import _OUTCOMES, Family, HistogramSample, Sample, le_label
from admission.metrics.limiters import FAMILIES, _merge, _scrape, _source_families, _Spec

__all__ = ["CHUNK_BYTES", "CONTENT_TYPE", "chunks"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHUNK_BYTES = 256 * 1024
"""About how many bytes each chunk holds (one series more at most)."""
# Bytes rendered per native call: each holds the GIL for well under a millisecond.
_RENDER_BYTES = 64 * 1024

_SPECS = {spec.name: spec for spec in FAMILIES}
_LE = [le_label(b) for b in (*WAIT_BOUNDS, math.inf)]


def chunks(names: Collection[str] | None = None) -> Iterator[bytes]:
    """The exposition of every family now (only those with a sample name in ``names``, if
    given), in chunks of about `CHUNK_BYTES`. The figures are read at the first chunk."""
    wanted = None if names is None else set(names)
    scrape = _scrape()
    # The primitives' families (empty here: rendered natively) merged with the sources'.
    empty = [Family(s.name, s.type, s.help, (), s.unit) for s in FAMILIES]
    families = _merge([*empty, *_source_families()])
    pending: list[bytes] = []
    size = 0
    for family in families:
        if wanted is not None and not wanted & _sample_names(family):
            continue
        for part in _family_parts(scrape, family):
            pending.append(part)
            size += len(part)
            if size >= CHUNK_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _family_parts(scrape: _native.Scrape, family: Family) -> Iterator[bytes]:
    name = family.name + "_total" if family.type == "counter" else family.name
    help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
    yield f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n".encode()
    spec = _SPECS.get(family.name)
    if spec is not None:
        yield from _native_parts(scrape, spec, name)
    # A source's family can hold many series too (a breaker, a keyed limiter, a pool each):
    # parts of whole series, each about CHUNK_BYTES, as the native families are cut.
    part: list[str] = []
    size = 0
    for sample in family.samples:
        for line in _lines(sample, name):
            part.append(line)
            size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(part).encode()
            part, size = [], 0
    if part:
        yield "".join(part).encode()


def _native_parts(scrape: _native.Scrape, spec: _Spec, name: str) -> Iterator[bytes]:
    label, values = "", []
    if spec.field == "acquisitions":
        label, values = "outcome", list(_OUTCOMES)
    elif spec.field == "wait":
        label, values = "le", _LE
    start, end, budget = 0, len(scrape), min(_RENDER_BYTES, CHUNK_BYTES)
    while start < end:
        part, start = scrape.render(spec.field, name, start, budget, spec.live_only, label, values)
        yield part


def _lines(s: Sample | HistogramSample, name: str) -> Iterable[str]:
    """The text lines of one series (a histogram's buckets, count and sum together)."""
    if isinstance(s, HistogramSample):
        for le, count in s.buckets:
            yield f"{name}_bucket{{{_labels(s.labels, le=le_label(le))}}} {count}\n"
        yield f"{name}_count{{{_labels(s.labels)}}} {s.count}\n"
        yield f"{name}_sum{{{_labels(s.labels)}}} {_value(s.sum)}\n"
    else:
        yield f"{name}{{{_labels(s.labels)}}} {_value(s.value)}\n"


def _labels(labels: Mapping[str, str], **extra: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in {**labels, **extra}.items())


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _sample_names(family: Family) -> set[str]:
    if family.type == "counter":
        return {family.name + "_total"}
    if family.type == "histogram":
        return {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return {family.name}

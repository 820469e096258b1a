"""The exporter's text exposition (issue 12, case 7): rendered natively in chunks from one
native read of every primitive, it must say exactly what the neutral model (`collect`, which
the prometheus_client collector and OpenTelemetry export) says."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import unique

import admission as adm
from admission import _native
from admission.metrics import exposition
from admission.metrics.limiters import FAMILIES

Key = tuple[str, frozenset[tuple[str, str]]]


def parsed(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"sample twice: {key}"
            out[key] = s.value
    return out


def model() -> dict[Key, float]:
    """The samples `collect` reports, named as in the text format."""
    out: dict[Key, float] = {}
    for f in adm.metrics.collect():
        name = f.name + "_total" if f.type == "counter" else f.name
        for s in f.samples:
            labels = frozenset(s.labels.items())
            if isinstance(s, adm.metrics.HistogramSample):
                for le, count in s.buckets:
                    le_s = "+Inf" if le == math.inf else repr(le)
                    out[(name + "_bucket", labels | {("le", le_s)})] = count
                out[(name + "_count", labels)] = s.count
                out[(name + "_sum", labels)] = s.sum
            else:
                out[(name, labels)] = s.value
    return out


def text() -> str:
    return b"".join(exposition.chunks()).decode()


@pytest.mark.usefixtures("registry")  # dropped primitives keep their counts
def test_the_text_says_what_the_model_says() -> None:
    name = unique("expo")
    sem = adm.Semaphore(4, name=name)
    assert sem.try_acquire(3)
    clock = adm.testing.ManualClock()
    bucket = adm.TokenBucket(rate=1, burst=2, name=name, clock=clock)
    assert bucket.try_acquire(2)
    with bucket:  # waits one virtual second: a bucket above 0
        pass
    assert not bucket.try_acquire()
    # On the manual clock: a real one could expire the entry between the two reads.
    window = adm.SlidingWindow(limit=5, window=1.0, name=name, clock=clock)
    assert window.try_acquire(4)
    loop_clocked = adm.TokenBucket(rate=3, clock=adm.LoopClock(), name=unique("expo-loop"))
    unnamed = adm.Semaphore(2)
    gone = adm.TokenBucket(rate=9, name=unique("expo-gone"))
    assert gone.try_acquire(4)
    del gone
    gc.collect()

    # Read twice: once by each renderer, with no call in between.
    rendered, expected = parsed(text()), model()
    assert rendered == expected
    # And it is the primitives' figures: a few spot checks.
    sem_labels = {("kind", "semaphore"), ("limiter", name)}
    assert rendered[("admission_permits_in_use", frozenset(sem_labels))] == 3
    tb = {("kind", "token_bucket"), ("limiter", name)}
    assert (
        rendered[("admission_acquisitions_total", frozenset(tb | {("outcome", "rejected")}))] == 1
    )
    assert rendered[("admission_wait_seconds_bucket", frozenset(tb | {("le", "1.0")}))] == 2
    assert rendered[("admission_wait_seconds_bucket", frozenset(tb | {("le", "0.0")}))] == 1
    assert rendered[("admission_wait_seconds_sum", frozenset(tb))] == 1.0
    loop_labels = frozenset({("kind", "token_bucket"), ("limiter", loop_clocked.name or "")})
    assert ("admission_tokens_capacity", loop_labels) in rendered
    assert ("admission_tokens_available", loop_labels) not in rendered
    del sem, bucket, window, loop_clocked, unnamed


def test_families_in_order_with_help_and_type() -> None:
    keep = adm.Semaphore(1, name=unique("hdr"))
    families = list(text_string_to_metric_families(text()))
    names = [f.name for f in families if f.name.startswith("admission_")]
    assert names[: len(FAMILIES)] == [spec.name for spec in FAMILIES]
    by_name = {f.name: f for f in families}
    for spec in FAMILIES:
        assert by_name[spec.name].type == spec.type
        assert by_name[spec.name].documentation == spec.help
    del keep


def test_label_values_are_escaped() -> None:
    name = unique('odd "name"\\ with\nnewline')
    keep = adm.Semaphore(7, name=name)
    rendered = parsed(text())
    assert (
        rendered[("admission_permits_limit", frozenset({("kind", "semaphore"), ("limiter", name)}))]
        == 7
    )
    del keep


def test_chunks_are_bounded_and_add_up_to_the_same_text(monkeypatch: pytest.MonkeyPatch) -> None:
    keep = [adm.Semaphore(3, name=unique("chunk")) for _ in range(300)]
    for s in keep:
        assert s.try_acquire()
    whole = text()
    monkeypatch.setattr(exposition, "CHUNK_BYTES", 4096)
    parts = list(exposition.chunks())
    assert len(parts) > 20
    # A chunk is closed once it reaches the budget: at most one series' lines beyond it
    # (a histogram's 29 lines, a few KiB) and the next family's header.
    assert max(len(p) for p in parts) < 4096 + 8192
    assert parsed(b"".join(parts).decode()) == parsed(whole)
    del keep


def test_sources_are_merged_into_families_of_the_same_name() -> None:
    name = unique("merge")
    keep = adm.Semaphore(1, name=name)

    def source() -> Iterator[adm.metrics.Family]:
        yield adm.metrics.Family(
            "admission_waiters",
            "gauge",
            "Also from a source.",
            (adm.metrics.Sample({"kind": "queue", "limiter": name}, 5.0),),
        )
        yield adm.metrics.Family(
            "admission_demo_jobs",
            "histogram",
            "Jobs.",
            (adm.metrics.HistogramSample({"queue": 'a"b'}, ((0.5, 1), (math.inf, 3)), 2.5),),
        )

    remove = adm.metrics.add_source(source)
    try:
        out = text()
    finally:
        remove()
    families = {f.name: f for f in text_string_to_metric_families(out)}
    waiters = {
        tuple(sorted(s.labels.items())): s.value for s in families["admission_waiters"].samples
    }
    assert waiters[(("kind", "queue"), ("limiter", name))] == 5.0
    assert waiters[(("kind", "semaphore"), ("limiter", name))] == 0.0
    jobs = parsed(out)
    assert jobs[("admission_demo_jobs_bucket", frozenset({("queue", 'a"b'), ("le", "0.5")}))] == 1
    assert jobs[("admission_demo_jobs_count", frozenset({("queue", 'a"b')}))] == 3
    del keep


def test_names_filter() -> None:
    keep = adm.Semaphore(1, name=unique("filter"))
    out = b"".join(exposition.chunks(["admission_permits_limit", "admission_wait_seconds_sum"]))
    names = {f.name for f in text_string_to_metric_families(out.decode())}
    assert names == {"admission_permits_limit", "admission_wait_seconds"}
    del keep


def test_a_scrape_is_read_once_then_only_rendered() -> None:
    scrape = _native.Scrape("unnamed")
    scrape.read([adm.Semaphore(2, name=unique("once")), object()])
    assert len(scrape) == 1
    assert len(scrape.rows()) == 1
    with pytest.raises(RuntimeError, match="already read"):
        scrape.read([adm.Semaphore(1)])
    with pytest.raises(ValueError, match="unknown field"):
        scrape.render("nope", "x", 0, 10)
    with pytest.raises(ValueError, match="27 label values expected"):
        scrape.render("wait", "x", 0, 10, label="le", values=["1"])
    other = _native.Scrape("unnamed")
    with pytest.raises(ValueError, match="27 counts expected"):
        other.add_retired("semaphore", "x", (0, 0, 0, 0, 0), [1, 2], 0)
    with pytest.raises(ValueError, match="unknown kind"):
        other.add_retired("queue", "x", (0, 0, 0, 0, 0), [0] * 27, 0)


def test_a_large_source_family_is_cut_into_bounded_chunks_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Breakers are a Python metrics source (not the native scrape): 400 named ones make one
    # family of 1,600 series, which once went out as a single chunk of the whole family.
    keep = [adm.CircuitBreaker(name=unique("chunk-breaker")) for _ in range(400)]
    whole = text()
    monkeypatch.setattr(exposition, "CHUNK_BYTES", 4096)
    parts = list(exposition.chunks())
    assert max(len(p) for p in parts) < 4096 + 8192
    assert parsed(b"".join(parts).decode()) == parsed(whole)
    del keep

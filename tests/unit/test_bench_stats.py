"""The arithmetic of the report (bench/stats.py: percentiles, ratios) and the tables built from
it (bench/report.py), with per-query latencies read from real dnsperf 2.10 -v output
(bench/dnsperf.py)."""

from __future__ import annotations

import math
from array import array
from datetime import datetime
from pathlib import Path

import pytest

from bench.__main__ import parse_rates
from bench.dnsperf import DnsperfRun, Summary, parse_latencies, parse_summary
from bench.errors import Invalid
from bench.report import (
    LatencyMeasurement,
    Measurement,
    Settings,
    comparison,
    latency_table,
    render,
    reserve,
)
from bench.stats import format_ms, format_ratio, latency_percentiles, percentile, ratio

# Captured from `dnsperf -s ... -l 1 -Q 6 -c 2 -v` against a dnsmasq (address rewritten).
VERBOSE_SAMPLE = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.1.2.3 -p 5399 -d /tmp/q.txt -l 1 -Q 6 -c 2 -v
[Status] Sending queries (to 127.1.2.3:5399)
[Status] Started at: Sun Nov 29 04:34:53 2026
[Status] Stopping after 1.000000 seconds
> NOERROR c0 A 0.000300
> NOERROR c0 AAAA 0.000103
> NXDOMAIN nx A 0.000150
> NOERROR 2.0.128.10.in-addr.arpa PTR 0.000078
> NOERROR c0 A 0.000116
> NOERROR c0 AAAA 0.000103
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         6
  Queries completed:    6 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 5 (83.33%), NXDOMAIN 1 (16.67%)
  Average packet size:  request 23, response 31
  Run time (s):         1.000338
  Queries per second:   5.997973

  Average Latency (s):  0.000141 (min 0.000078, max 0.000300)
  Latency StdDev (s):   0.000081

"""


def test_percentile_is_nearest_rank_so_each_value_is_a_real_sample() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 99.9) == 100.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # not an interpolated 2.5
    assert math.isnan(percentile([], 50))
    with pytest.raises(Invalid, match="percentile 0"):
        percentile(samples, 0)


def test_latency_percentiles_count_lost_queries_as_infinitely_slow() -> None:
    answered = [0.001 * (i + 1) for i in range(990)]  # 1 ms .. 990 ms, given out of order
    answered.reverse()
    p50, p99, p999 = latency_percentiles(answered, lost=10)
    assert p50 == pytest.approx(0.500)
    assert p99 == pytest.approx(0.990)  # rank 990 of 1000: the slowest answered query
    assert p999 == math.inf  # the top 1% are the lost ones
    assert latency_percentiles(answered, lost=0)[2] == pytest.approx(0.990)
    with pytest.raises(Invalid, match="negative"):
        latency_percentiles(answered, lost=-1)


def test_ratio_needs_a_positive_reference() -> None:
    assert ratio(110.0, 100.0) == pytest.approx(1.1)
    assert ratio(5.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None
    assert format_ratio(1.2345) == "1.23x"
    assert format_ratio(None) == "n/a"
    assert format_ms(0.0012) == "1.200"
    assert format_ms(math.inf) == "lost"


def test_parse_latencies_reads_every_answered_query_of_dnsperf_v_output() -> None:
    latencies = parse_latencies(VERBOSE_SAMPLE)
    expected = [0.000300, 0.000103, 0.000150, 0.000078, 0.000116, 0.000103]
    assert list(latencies) == pytest.approx(expected)
    summary = parse_summary(VERBOSE_SAMPLE)
    assert summary.completed == len(latencies)
    assert summary.rcodes == (("NOERROR", 5), ("NXDOMAIN", 1))
    with pytest.raises(Invalid, match="without a latency"):
        parse_latencies("> NOERROR c0 A fast\n")
    # A timed-out query has no latency and is not an answer.
    assert list(parse_latencies("> T c0 A\n> NOERROR c0 A 0.000200\n")) == [0.0002]


def test_dnsperf_runs_inside_the_target_client_namespace_with_per_query_output() -> None:
    run = DnsperfRun("127.0.0.11", 53, Path("w1.txt"), 2, netns="ndc-nd-abc", verbose=True)
    command = run.command()
    assert command[:5] == ["ip", "netns", "exec", "ndc-nd-abc", "dnsperf"]
    assert command[-1] == "-v"


def _summary(qps: float, sent: int = 1000, lost: int = 0) -> Summary:
    return Summary(sent, sent - lost, lost, qps, 1.0, 0.001, 0.0005, 0.002, (("NOERROR", sent),))


def _measure(target: str, workload: str, *qps: float) -> Measurement:
    return Measurement(target, workload, "title", tuple(_summary(q) for q in qps))


def test_comparison_shows_netdns_ratio_to_each_peer_from_medians() -> None:
    measurements = [
        _measure("netdns", "W1", 90, 110, 100),  # median 100
        _measure("aardvark-dns", "W1", 80, 50, 90),  # median 80
        _measure("dnsmasq", "W1", 200, 100, 125),  # median 125
        _measure("netdns", "W5", 10, 10, 10),
        _measure("aardvark-dns", "W5", 0, 0, 0),  # nothing answered: no ratio
        _measure("dnsmasq", "W5", 20, 20, 20),
    ]
    lines = comparison(measurements).splitlines()
    assert lines[0] == (
        "| Workload | netdns QPS | aardvark-dns QPS | dnsmasq QPS | netdns / aardvark-dns "
        "| netdns / dnsmasq |"
    )
    assert lines[2] == "| W1 title | 100 | 80 | 125 | 1.25x | 0.80x |"
    assert lines[3] == "| W5 title | 10 | 0 | 20 | n/a | 0.50x |"


def test_latency_table_pools_runs_and_compares_p99_with_netdns() -> None:
    fast = LatencyMeasurement(
        "netdns", "W1", 5000, (_summary(5000), _summary(4990)), array("d", [0.001] * 2000)
    )
    slow = LatencyMeasurement(
        "aardvark-dns", "W1", 5000, (_summary(5000, lost=20),), array("d", [0.002] * 980)
    )
    assert slow.lost_percent == pytest.approx(2.0)
    assert fast.qps_median == pytest.approx(4995)
    lines = latency_table([fast, slow]).splitlines()
    assert lines[2] == "| netdns | W1 | 5000 | 4995 | 0.00 | 1.000 | 1.000 | 1.000 | 1.00x |"
    # 2% lost: its p99 and p99.9 are lost queries, so there is no finite ratio.
    assert lines[3] == "| aardvark-dns | W1 | 5000 | 5000 | 2.00 | 2.000 | lost | lost | n/a |"


def test_report_links_plots_and_reserves_a_fresh_name_per_run(tmp_path: Path) -> None:
    when = datetime(2025, 1, 2, 3, 4)
    first = reserve(tmp_path, when)
    assert (first.markdown, first.plots) == (tmp_path / "2025-01-02.md", tmp_path / "2025-01-02")
    first.plots.mkdir()
    second = reserve(tmp_path, when)
    assert second.stamp == "2025-01-02-2"
    text = render(
        Settings(10, 100, 4, 3, rates=(5000,)),
        [_measure("netdns", "W1", 100), _measure("dnsmasq", "W1", 50)],
        when,
        {"cpu": "x"},
        plots=[("Throughput", "2025-01-02/throughput.png")],
    )
    assert "| netdns / dnsmasq |" in text
    assert "| W1 title | 100 | 50 | 2.00x |" in text
    assert "![Throughput](2025-01-02/throughput.png)" in text


def test_parse_rates_takes_positive_whole_rates_and_empty_for_none() -> None:
    assert parse_rates("5000,20000") == (5000, 20000)
    assert parse_rates("") == ()
    assert parse_rates("100, 100") == (100,)
    with pytest.raises(Invalid, match="whole number"):
        parse_rates("5k")
    with pytest.raises(Invalid, match="outside"):
        parse_rates("0")


def test_cpu_per_query_is_the_median_of_the_runs_and_its_comparison_has_ratios() -> None:
    # 1000 completed queries per run: 0.010 s is 10 us/query, 0.030 s 30, 0.020 s 20.
    netdns = Measurement(
        "netdns", "W1", "title", tuple(_summary(q) for q in (1, 2, 3)), (0.010, 0.030, 0.020)
    )
    dnsmasq = Measurement("dnsmasq", "W1", "title", (_summary(1), _summary(1)), (0.040, None))
    unknown = Measurement("aardvark-dns", "W1", "title", (_summary(1),))
    assert netdns.cpu_us_per_query == pytest.approx(20.0)
    assert dnsmasq.cpu_us_per_query == pytest.approx(40.0)  # a run without a reading is left out
    assert unknown.cpu_us_per_query is None
    lines = comparison([netdns, unknown, dnsmasq], cpu=True).splitlines()
    assert lines[0].startswith("| Workload | netdns us/query | aardvark-dns us/query |")
    assert lines[2] == "| W1 title | 20.0 | - | 40.0 | n/a | 0.50x |"


def test_latency_table_compares_each_workload_with_netdns_on_the_same_workload() -> None:
    rows = [
        LatencyMeasurement("netdns", "W1", 5000, (_summary(5000),), array("d", [0.001] * 1000)),
        LatencyMeasurement("netdns", "W7", 5000, (_summary(5000),), array("d", [0.004] * 1000)),
        LatencyMeasurement("dnsmasq", "W7", 5000, (_summary(5000),), array("d", [0.002] * 1000)),
    ]
    lines = latency_table(rows).splitlines()
    assert lines[4].startswith("| dnsmasq | W7 | 5000 |")
    assert lines[4].endswith("| 2.00x |")  # netdns's W7 p99 (4 ms) over dnsmasq's (2 ms)

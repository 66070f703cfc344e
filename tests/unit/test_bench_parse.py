"""The dnsperf summary parser (bench/dnsperf.py) on real dnsperf 2.10 output, and the report
numbers built from it (bench/report.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bench.dnsperf import DnsperfRun, Summary, parse_summary
from bench.errors import Invalid
from bench.report import Measurement, Settings, render, table

DATA = Path(__file__).parent / "data"


def sample(name: str = "dnsperf_sample.txt") -> str:
    return (DATA / name).read_text()


def test_parse_summary_reads_counts_qps_latency_and_rcodes() -> None:
    summary = parse_summary(sample())
    assert summary.sent == 4000
    assert summary.completed == 4000
    assert summary.lost == 0
    assert summary.qps == pytest.approx(1999.804019)
    assert summary.run_time == pytest.approx(2.000196)
    assert summary.avg_latency == pytest.approx(0.000043)
    assert summary.min_latency == pytest.approx(0.000020)
    assert summary.max_latency == pytest.approx(0.000239)
    assert summary.rcodes == (("NOERROR", 3000), ("NXDOMAIN", 1000))
    assert summary.rcode("NXDOMAIN") == 1000
    assert summary.rcode("SERVFAIL") == 0
    assert summary.lost_fraction == 0.0


def test_parse_summary_of_a_silent_server_counts_every_query_lost() -> None:
    # Real output against an address nobody answers on: timeout lines, then zeros.
    summary = parse_summary(sample("dnsperf_sample_lost.txt"))
    assert summary.sent > 0
    assert summary.completed == 0
    assert summary.lost == summary.sent
    assert summary.lost_fraction == 1.0
    assert summary.qps == 0.0
    assert summary.rcodes == ()


def test_parse_summary_without_statistics_block_is_invalid() -> None:
    banner = sample().split("Statistics:")[0]
    with pytest.raises(Invalid, match="Statistics"):
        parse_summary(banner)


def test_parse_summary_with_a_missing_line_names_it() -> None:
    text = sample().replace("Queries per second:", "Queries per minute:")
    with pytest.raises(Invalid, match="qps"):
        parse_summary(text)


def test_dnsperf_command_is_bounded_and_capped_when_asked() -> None:
    run = DnsperfRun("127.9.8.7", 5353, Path("/tmp/w1.txt"), 3, clients=4, max_qps=1000)
    command = run.command()
    assert command[0] == "dnsperf"
    assert command[command.index("-s") + 1] == "127.9.8.7"
    assert command[command.index("-p") + 1] == "5353"
    assert command[command.index("-l") + 1] == "3"
    assert command[command.index("-c") + 1] == "4"
    assert command[command.index("-Q") + 1] == "1000"
    assert "-Q" not in DnsperfRun("127.9.8.7", 53, Path("w"), 1).command()


def _summary(qps: float, sent: int, lost: int, avg: float) -> Summary:
    return Summary(sent, sent - lost, lost, qps, 1.0, avg, avg / 2, avg * 2, (("NOERROR", sent),))


def test_report_row_takes_median_qps_total_lost_and_median_latency() -> None:
    runs = (
        _summary(1000, 1000, 0, 0.001),
        _summary(3000, 3000, 30, 0.003),
        _summary(2000, 2000, 10, 0.002),
    )
    m = Measurement("netdns", "W1", "A, container names (local)", runs)
    assert m.qps_median == 2000
    assert m.qps_range == (1000, 3000)
    assert m.lost_percent == pytest.approx(100 * 40 / 6000)
    assert m.avg_latency_ms == pytest.approx(2.0)
    text = table([m])
    assert "| netdns | W1 A, container names (local) | 2000 | 1000-3000 | 0.67 | 2.000 |" in text
    report = render(Settings(10, 1000, 4, 3), [m], datetime(2025, 1, 2, 3, 4), {"cpus": "2"})
    assert report.startswith("# netdns bench, 2025-01-02 03:04")
    assert "- cpus: 2" in report
    assert text in report

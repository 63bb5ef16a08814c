"""The `outcomes` command, driven as a user would (through click's runner, on a temporary store)."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import DEFINITIONS
from metrics.cli import main


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("OUTCOMES_DATABASE_URL", db_url)
    monkeypatch.setenv("OUTCOMES_DEFINITIONS", str(DEFINITIONS))  # the hand-built extracts hold the foundation sources
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output + (result.stderr if hasattr(result, "stderr") else "")
        return result

    return run


def test_every_command_has_help_with_an_example(cli):
    for name, command in main.commands.items():
        assert command.help and "Example:" in command.help, f"`outcomes {name}` needs help text with an example"
        cli(name, "--help")


def test_validate_list_and_explain(cli):
    assert "0 error(s)" in cli("validate").output
    listing = cli("list").output
    assert "Timely discharge from hospital" in listing and "breast_screening_coverage" in listing
    assert "in scope: patient_classification = 1" in cli("explain", "--metrics", "discharged_on_ready_date").output


def test_validate_checks_the_refresh_schedule_too(cli, tmp_path, monkeypatch):
    schedule = tmp_path / "schedule.yaml"
    monkeypatch.setenv("OUTCOMES_SCHEDULE", str(schedule))
    schedule.write_text("extracts: var/demo\nsources:\n  community_contacts:\n    cron: '0 6 * * *'\n")
    assert "schedule.yaml checked" in cli("validate").output
    schedule.write_text("extracts: var/demo\nsources:\n  community_contact:\n    cron: '0 6 * * *'\n")
    output = cli("validate", code=1).output
    assert "schedule.yaml" in output and "unknown source 'community_contact'" in output and "1 error(s)" in output


def test_refresh_then_read_values(cli, handbuilt_dir, tmp_path):
    result = cli("refresh", "--data", str(handbuilt_dir), "--as-of", "2026-01-01")
    summary = json.loads(result.stdout)
    assert summary["status"] == "published" and summary["quarantined"] == 4
    assert "inpatient_spells: 13 rows valid, 4 quarantined, 1 superseded" in result.stderr

    csv = cli("values", "--metric", "breast_screening_coverage", "--breakdown", "overall").stdout
    frame = pl.read_csv(io.StringIO(csv))
    assert frame.columns == ["metric_id", "place", "period_type", "period_start", "period_end", "breakdown", "group",
                             "numerator", "denominator", "value", "lower_95", "upper_95", "lower_99_8", "upper_99_8",
                             "run_id"]
    assert sorted(frame["value"].round(4).to_list()) == [50.0, 66.6667]

    rows = json.loads(cli("values", "--metric", "discharged_on_ready_date", "--place", "Walsall",
                          "--period-type", "financial_quarter", "--breakdown", "overall", "--format", "json").stdout)
    assert len(rows) == 1 and rows[0]["numerator"] == 2 and rows[0]["denominator"] == 3

    out = tmp_path / "v.parquet"
    cli("values", "--format", "parquet", "--out", str(out))
    assert pl.read_parquet(out).height > 300

    runs = cli("runs").stdout
    assert "published" in runs and "run    1" in runs
    quarantine = cli("quarantine", "--source", "inpatient_spells").stdout
    assert "future_date" in quarantine and "2031-01-01" in quarantine


def test_values_of_an_unpublished_run_is_an_error(cli):
    assert "not a published run" in cli("values", "--run", "99", code=2).stderr


def test_refresh_with_broken_definitions_exits_2(cli, handbuilt_dir, definitions_dir):
    path = definitions_dir / "metrics" / "delayed_bed_days.yaml"
    path.write_text(path.read_text().replace("polarity:", "polarty:"))
    result = cli("refresh", "--data", str(handbuilt_dir), "--definitions", str(definitions_dir), code=2)
    assert "nothing was refreshed" in result.stderr and "polarty" in result.stderr


def test_refresh_with_a_broken_source_exits_3_but_publishes(cli, handbuilt_dir):
    (handbuilt_dir / "breast_screening" / "screening_2024-03-31.csv").write_text("")
    result = cli("refresh", "--data", str(handbuilt_dir), "--as-of", "2026-01-01", code=3)
    assert json.loads(result.stdout)["failed_sources"] == ["breast_screening"]
    assert "file is empty" in result.stderr


def test_db_current_and_upgrade(cli, db_url):
    import store

    assert "revision: none (head is" in cli("db", "current").stdout
    assert "upgraded from no schema to revision" in cli("db", "upgrade").stdout
    current = cli("db", "current").stdout
    assert "(head)" in current and f"store:    {store.safe_url(db_url)}" in current  # password as ***
    assert "already at revision" in cli("db", "upgrade").stdout
    assert "cannot migrate to 'nope'" in cli("db", "upgrade", "--revision", "nope", code=2).stderr


@pytest.mark.postgresql
def test_no_output_shows_the_postgresql_password(pg_cluster, handbuilt_dir, monkeypatch):
    import traceback

    import store

    url = pg_cluster.create_database("cli")
    password = pg_cluster.password
    monkeypatch.setenv("OUTCOMES_DATABASE_URL", url)
    runner = CliRunner()
    try:
        outputs = []
        for args in (["db", "current"], ["db", "upgrade"], ["refresh", "--data", str(handbuilt_dir)], ["runs"],
                     ["values", "--metric", "breast_screening_coverage"], ["quarantine"]):
            result = runner.invoke(main, args)
            assert result.exit_code in (0, 3), (args, result.output)
            outputs.append(result.output)
        assert "postgresql+psycopg://postgres:***@127.0.0.1" in outputs[0]
        # A wrong password: the command fails, and neither its output nor the error shows the password tried.
        wrong = url.replace(password, "Wr0ng-" + password[::-1])
        monkeypatch.setenv("OUTCOMES_DATABASE_URL", wrong)
        result = runner.invoke(main, ["runs"])
        assert result.exit_code != 0 and "password authentication failed" in str(result.exception)
        outputs += [result.output, "".join(traceback.format_exception(result.exception))]
        for text in outputs:
            assert password not in text and password[::-1] not in text
    finally:
        store.dispose_engine()
        pg_cluster.drop_database(url)


def test_publish_withholds_small_counts_and_says_so(cli, handbuilt_dir):
    cli("refresh", "--data", str(handbuilt_dir), "--as-of", "2026-01-01")
    result = cli("values", "--publish")
    frame = pl.read_csv(io.StringIO(result.stdout))
    # The hand-built data is all small numbers: every count from 1 to 7 must be gone.
    for column in ("numerator", "denominator"):
        published = frame[column].drop_nulls()
        assert not published.is_between(1, 7).any(), column
        assert (published % 5 == 0).all(), column  # the rest rounded to the nearest 5
    withheld = frame.filter(pl.col("suppressed"))
    assert withheld.height and withheld["value"].null_count() == withheld.height
    assert withheld["suppression_note"].null_count() == 0
    assert "suppressed" in result.stderr.lower()
    raw = pl.read_csv(io.StringIO(cli("values").stdout))
    assert raw.height == frame.height  # nothing dropped, only withheld


def test_scorecard_lists_every_metric_and_place(cli, handbuilt_dir):
    cli("refresh", "--data", str(handbuilt_dir), "--as-of", "2026-01-01")
    card = pl.read_csv(io.StringIO(cli("scorecard", "--format", "csv").stdout))
    assert card.select("metric_id", "place").unique().height == 14
    text = cli("scorecard", "--place", "Walsall").stdout
    assert "Timely discharge from hospital" in text and "Dudley " not in text


def test_refresh_while_another_holds_the_lease_exits_4(cli, handbuilt_dir, db_url):
    import store

    lease = store.Lease(store.get_engine(db_url), ttl=60)
    assert lease.acquire()
    try:
        result = cli("refresh", "--data", str(handbuilt_dir), "--as-of", "2026-01-01", code=4)
        assert "nothing refreshed: another refresh is running" in result.stderr
    finally:
        lease.release()

"""The user's path through the UI, in a real browser: on a quickstarted instance served by `kpi-platform ui`, the
Catalog leads to `meta_ads/client_daily_kpis`, its Partitions tab shows the client × date grid, Materialize…
launches a backfill of 2 clients × 14 days (only the failed and missing ones), the backfill page shows one run per
client and both succeed, the Checks tab shows `rows_meet_contract` passed with its metadata, and the health report
asset, materialized from its page, shows its report as a table.

Playwright drives the system's Chromium (/usr/bin/chromium; browsers are not downloaded). Every step leaves a
screenshot in `screenshots/<test name>/` beside this file (git-ignored), so a failure can be looked at; the UI
process's output is printed with the failure. Waits are on what the page shows, never on the clock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from kpi_platform.cli.supervisor import (
    ProcessSpec,
    Supervisor,
    Webserver,
    free_port,
    marked_processes,
    wait_until,
)
from kpi_platform_tests.support.process_logs import process_tails

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS_DIR = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
#: Set to 1 (CI does) to make a missing browser a failure instead of a skip.
ENV_REQUIRE_BROWSER = "KPI_REQUIRE_BROWSER"

CLIENT_IDS = ("alpha", "beta", "gamma")
PICKED = ("alpha", "beta")
TIMEZONE = "Europe/Warsaw"
QUICKSTART_DAYS = 3
BACKFILL_DAYS = 14

# Generous bounds for two cores shared with other work; every wait ends as soon as the page shows the state.
UI_TIMEOUT_MS = 60_000
RUNS_TIMEOUT_MS = 420_000


def _browser_or_skip() -> None:
    """Skip without Playwright or /usr/bin/chromium, or fail when KPI_REQUIRE_BROWSER=1."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Playwright package (`pip install -e '.[test]'`)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (`apt-get install chromium`)")
    if not missing:
        return
    reason = "the browser test needs " + " and ".join(missing)
    if os.environ.get(ENV_REQUIRE_BROWSER) == "1":
        pytest.fail(f"{reason}; {ENV_REQUIRE_BROWSER}=1 requires it")
    pytest.skip(reason)


def _clients_yaml(first_day: date) -> str:
    """Three clients whose history starts at the quickstart's first day, so that gap healing leaves the older days
    alone, and whose daily collection hour is far from now, so that no scheduled run joins the test's."""
    hour = (datetime.now(ZoneInfo(TIMEZONE)).hour + 12) % 24
    entries = [
        {
            "id": client_id,
            "name": client_id.title(),
            "ad_account_id": f"act_{100000000001 + i}",
            "currency": "EUR",
            "timezone": TIMEZONE,
            "start_date": first_day.isoformat(),
            "settings": {"collection_hour": hour},
        }
        for i, client_id in enumerate(CLIENT_IDS)
    ]
    return yaml.safe_dump({"clients": entries}, sort_keys=False)


def _local_env(tmp_path: Path, clients_file: Path) -> dict[str, str]:
    """The embedded default in temporary folders: no setting of the developer's (warehouse URLs, a Meta token,
    DAGSTER_HOME) leaks in; DAGSTER_HOME is left unset so the CLI seeds `<data dir>/dagster_home` itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KPI_", "DAGSTER_", "META_"))}
    env["KPI_DATA_DIR"] = str(tmp_path / "data")
    env["KPI_CLIENTS_FILE"] = str(clients_file)
    return env


class Shots:
    """Numbered screenshots of the test's steps, in a folder named after the test (emptied first)."""

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.count = 0

    def take(self, page, step: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}_{step}.png"), full_page=True)


def _toast_id(page, announcement: str) -> str:
    """The id in the toast "<announcement> <id>" (a backfill's, or a run's first 8 characters). Toasts stay a
    while across pages, so the link to follow is found by this id, not by its "View" label."""
    from playwright.sync_api import expect

    toast = page.get_by_text(re.compile(rf"{announcement} \w+"))
    expect(toast).to_be_visible()
    found = re.search(rf"{announcement} (\w+)", toast.inner_text())
    assert found is not None, toast.inner_text()
    return found.group(1)


@dataclass(frozen=True)
class LocalUI:
    url: str
    yesterday: date
    log_dir: Path
    quickstart_output: str

    def print_logs(self) -> None:
        """The quickstart's output and the tail of the UI process's, for a failure message."""
        print(f"--- quickstart\n{self.quickstart_output}", file=sys.stderr)
        print(process_tails(self.log_dir, lines=120), file=sys.stderr)


@pytest.fixture
def ui(tmp_path) -> Iterator[LocalUI]:
    """A quickstarted instance (3 clients × the last 3 days) and `kpi-platform ui` serving it on a free port, in
    its own process group (stopped, group and all, at the end)."""
    _browser_or_skip()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(_clients_yaml(yesterday - timedelta(days=QUICKSTART_DAYS - 1)), encoding="utf-8")
    env = _local_env(tmp_path, clients_file)
    cli = str(Path(sys.executable).with_name("kpi-platform"))
    quickstart = subprocess.run(  # noqa: S603 - fixed argv
        [cli, "quickstart", "--days", str(QUICKSTART_DAYS)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert quickstart.returncode == 0, f"quickstart failed:\n{quickstart.stdout}\n{quickstart.stderr}"

    port = free_port()
    local = LocalUI(
        url=f"http://127.0.0.1:{port}",
        yesterday=yesterday,
        log_dir=tmp_path / "logs",
        quickstart_output=quickstart.stdout + quickstart.stderr,
    )
    supervisor = Supervisor(env=env, log_dir=local.log_dir, cwd=PROJECT_ROOT)
    try:
        supervisor.start(ProcessSpec("ui", (cli, "ui", "--port", str(port))))
        webserver = Webserver(local.url)
        try:
            wait_until(webserver.is_up, timeout_s=180, what="the UI to answer", supervisor=supervisor)
            wait_until(
                webserver.location_loaded,
                timeout_s=180,
                what="the code location to load",
                supervisor=supervisor,
            )
        except BaseException:
            local.print_logs()
            raise
        yield local
    finally:
        supervisor.stop()
    assert marked_processes(supervisor.marker) == []


def test_backfill_checks_and_health_report_through_the_ui(ui, request):
    from playwright.sync_api import expect, sync_playwright

    url, yesterday = ui.url, ui.yesterday
    first = yesterday - timedelta(days=BACKFILL_DAYS - 1)
    quickstarted = QUICKSTART_DAYS * len(PICKED)
    to_launch = BACKFILL_DAYS * len(PICKED) - quickstarted
    older_end = yesterday - timedelta(days=QUICKSTART_DAYS)
    shots = Shots(SCREENSHOTS_DIR / request.node.name)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        # The webserver's "Join the Dagster community" prompt shows up on some first visits, over any page.
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"),
            lambda: page.get_by_role("button", name="Skip").click(),
        )
        try:
            # Catalog -> the asset, by its key path.
            page.goto(url)
            page.get_by_role("link", name="Catalog").click()
            asset_link = page.locator('a[href="/assets/meta_ads/client_daily_kpis"]').first
            expect(asset_link).to_be_visible()
            shots.take(page, "catalog")
            asset_link.click()
            expect(page).to_have_url(re.compile(r"/assets/meta_ads/client_daily_kpis"))

            # The Partitions tab: clients down one side, dates down the other, the quickstart's days materialized.
            page.get_by_role("tab", name="Partitions").click()
            expect(page.get_by_text(f"Materialized ({QUICKSTART_DAYS * len(CLIENT_IDS)})")).to_be_visible()
            expect(page.get_by_placeholder("Filter by client")).to_be_visible()
            expect(page.get_by_placeholder("Filter by date")).to_be_visible()
            for client_id in CLIENT_IDS:
                expect(page.get_by_text(client_id, exact=True).first).to_be_visible()
            expect(page.get_by_text(yesterday.isoformat(), exact=True).first).to_be_visible()
            shots.take(page, "partitions_grid")

            # Materialize…: 2 clients × 14 days, only the failed and missing ones.
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog")
            expect(
                dialog.get_by_text("Launch runs to materialize meta_ads / client_daily_kpis")
            ).to_be_visible()
            dialog.get_by_text("Select a partition or create one").click()
            for client_id in PICKED:
                # A menu item's name repeats its label (the partition's status dot carries it too).
                page.get_by_role("menuitem", name=client_id).click()
            page.keyboard.press("Escape")
            dates = dialog.get_by_placeholder("ex: 2024-01-01")
            dates.fill(f"[{first.isoformat()}...{yesterday.isoformat()}]")
            dates.press("Tab")
            expect(
                dialog.get_by_text(f"{BACKFILL_DAYS * len(PICKED)} partitions", exact=True)
            ).to_be_visible()
            dialog.get_by_text("Backfill only failed and missing partitions within selection").click()
            expect(dialog.get_by_text(f"Only {to_launch} failed and missing partitions")).to_be_visible()
            shots.take(page, "materialize_dialog")
            dialog.get_by_role("button", name="Launch backfill").click()

            # The backfill page: one run per client, both succeed.
            backfill_id = _toast_id(page, "Created backfill")
            page.locator(f'a[href="/runs/b/{backfill_id}"]').first.click()
            expect(page).to_have_url(re.compile(r"/runs/b/\w+"))
            status = page.get_by_text("Status", exact=True).first.locator("xpath=following-sibling::div[1]")
            expect(status).to_have_text(
                re.compile(r"Succeeded|Failed|Failure|Canceled|Completed"), timeout=RUNS_TIMEOUT_MS
            )
            shots.take(page, "backfill_overview")
            expect(status).to_have_text("Succeeded")
            page.get_by_role("tab", name="Runs").click()
            for client_id in PICKED:
                expect(page.get_by_text(f"kpi/client: {client_id}", exact=True)).to_be_visible()
            expect(page.get_by_text(re.compile(r"^kpi/client: "))).to_have_count(len(PICKED))
            expect(page.get_by_text("Success", exact=True)).to_have_count(len(PICKED))
            shots.take(page, "backfill_runs")

            # The Checks tab: the contract check passed in every run (the quickstart's, one per client, and the
            # backfill's two), and each backfill run's evaluation carries its numbers. The execution history, not
            # the check's overview: two runs finishing together leave the overview's "latest execution" pointing at
            # a materialization the other run's check did not evaluate ("Not evaluated").
            page.get_by_role("link", name="Catalog").click()
            page.locator('a[href="/assets/meta_ads/client_daily_kpis"]').first.click()
            page.get_by_role("tab", name="Checks").click()
            expect(page.get_by_text("rows_meet_contract", exact=True).first).to_be_visible()
            page.get_by_role("tab", name="Execution history").click()
            evaluations = len(CLIENT_IDS) + len(PICKED)
            passed = page.get_by_role("row").filter(has_text="Passed")
            expect(passed).to_have_count(evaluations)
            expect(page.get_by_role("row")).to_have_count(evaluations + 1)  # and the header
            shots.take(page, "contract_check_history")
            ranges = set()
            for newest in range(len(PICKED)):
                passed.nth(newest).get_by_role("button").click()
                metadata = page.get_by_role("dialog")
                for name in ("days", "rows_validated", "run_days", "run_ranges"):
                    expect(metadata.get_by_role("cell", name=name, exact=True)).to_be_visible()
                run_ranges = metadata.get_by_role("row").filter(
                    has=page.get_by_role("cell", name="run_ranges", exact=True)
                )
                ranges.add(run_ranges.get_by_role("cell").nth(1).inner_text().strip())
                shots.take(page, f"contract_check_metadata_{newest + 1}")
                metadata.get_by_role("button", name="Close").click()
                expect(metadata).to_have_count(0)
            assert ranges == {f"{c} {first.isoformat()}..{older_end.isoformat()}" for c in PICKED}

            # The health report asset, materialized from its page, shows its report as a table.
            page.get_by_role("link", name="Catalog").click()
            page.locator('a[href="/assets/platform/health_report"]').first.click()
            expect(page).to_have_url(re.compile(r"/assets/platform/health_report"))
            page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).click()
            run_id = _toast_id(page, "Launched run")
            page.locator(f'a[href^="/runs/{run_id}"]').first.click()
            expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
            expect(run_status).to_be_visible(timeout=RUNS_TIMEOUT_MS)
            shots.take(page, "health_report_run")
            expect(run_status).to_have_text("Success")
            page.get_by_role("link", name="Catalog").click()
            page.locator('a[href="/assets/platform/health_report"]').first.click()
            page.get_by_role("tab", name="Events").click()
            page.get_by_text("[Show Markdown]").first.click()
            table = page.get_by_role("dialog").locator("table").first
            expect(table.locator("th")).to_have_text(["check", "status", "summary"])
            for check in ("yesterday_collection", "missing_days", "asset_checks", "daemon"):
                expect(table.get_by_text(check, exact=True)).to_be_visible()
            shots.take(page, "health_report")
        except BaseException:
            page.screenshot(path=str(shots.folder / "failure.png"), full_page=True)
            print(f"screenshots: {shots.folder}", file=sys.stderr)
            ui.print_logs()
            raise
        finally:
            browser.close()

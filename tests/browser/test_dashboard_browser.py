"""An operator's session in a real headless Chromium against a real `stride serve`, real
`stride worker` processes and PostgreSQL: sign in, trigger a backfill and watch it reach
100% live, retry a dead job from the keyboard, look a user up, cancel a run, sign out.

Every wait is on what the page shows (Playwright's auto-waiting and wait_for_function),
never a sleep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from stride.demo.population import seed_population
from stride.demo.worker_processes import running_workers
from stride.domain.validation import NewEvent
from stride.queue.jobs import NewJob, enqueue
from stride.storage.event_store import append_events
from tests.api.conftest import ApiServer, new_token, running_server, scalar
from tests.conftest import migrated_database

USERS = 3000
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def seeded_database(server_url: str, template_db: str) -> Iterator[str]:
    with migrated_database(server_url, template_db, prefix="stride_browser") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed_population(conn, USERS, seed=7)  # type: ignore[arg-type]
        yield url


@pytest.fixture(scope="module")
def server(seeded_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_server(seeded_database, tmp_path_factory.mktemp("browser")) as api:
        yield api


@pytest.fixture(scope="module")
def operator_token(seeded_database: str) -> str:
    return new_token(seeded_database, operator=True)[1]


@dataclass
class Console:
    """Every console error, warning and uncaught exception the pages produced."""

    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                self.problems.append(f"{message.type}: {message.text} ({page.url})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))


def sign_in(page: Page, base_url: str, token: str) -> None:
    page.goto(f"{base_url}/admin/backfill")
    expect(page).to_have_url(f"{base_url}/admin/signin?next=%2Fadmin%2Fbackfill")
    page.get_by_label("Operator token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/admin/backfill")
    expect(page.get_by_role("heading", name="Backfill", exact=True)).to_be_visible()


def flash(page: Page) -> Any:
    return page.locator("[data-flash]")


@pytest.mark.timeout(600)
def test_operator_session(
    browser: Browser,
    server: ApiServer,
    seeded_database: str,
    operator_token: str,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console()
    console.watch(page)
    base = server.base_url

    # A user token is refused; the operator's is taken.
    _, user_token = new_token(seeded_database)
    page.goto(f"{base}/admin/signin")
    page.get_by_label("Operator token").fill(user_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("[data-signin-error]")).to_contain_text("user token")
    # Chromium logs the refusal's own 403 status as a console error: that one is expected.
    refusal = "error: Failed to load resource: the server responded with a status of 403"
    expected = [p for p in console.problems if p.startswith(refusal) and "/admin/signin" in p]
    assert len(expected) == 1, console.problems
    console.problems.remove(expected[0])
    sign_in(page, base, operator_token)
    expect(page.get_by_text("No backfill has run yet.").first).to_be_visible()

    # Trigger from the form, throttled so the run lasts long enough to watch.
    users = scalar(seeded_database, "SELECT count(*) FROM users")  # the seeded ones and tokens'
    assert users >= USERS
    source = f"browser-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Source label").fill(source)
    page.get_by_label("Max users/s").fill("400")
    page.get_by_role("button", name="Trigger backfill").click()
    expect(flash(page)).to_contain_text("Triggered run")
    expect(flash(page)).to_contain_text(f"{users:,} users snapshotted")
    expect(page.locator("[data-run-state]")).to_have_attribute("data-run-state", "running")
    progress = page.locator("#run-progress")
    expect(progress).to_have_attribute("max", str(users))
    expect(progress).to_have_attribute("value", "0")
    page.evaluate("window.__samePage = true")

    log = (tmp_path / "workers.log").open("wb")
    with running_workers(seeded_database, 2, log=log):
        # Live: the bar moves without a reload; catch it mid-run for the screenshot.
        page.wait_for_function(
            """() => {
                const bar = document.querySelector('#run-progress');
                (window.__seen ||= new Set()).add(bar && bar.value);
                return bar && bar.value >= 0.4 * bar.max && bar.value <= 0.85 * bar.max;
            }""",
            timeout=TIMEOUT_MS,
        )
        expect(page.locator(".chart svg polyline").first).to_be_visible()
        page.screenshot(path=str(artifacts / "backfill-mid-run.png"), full_page=False)
        page.wait_for_function(
            """() => {
                const bar = document.querySelector('#run-progress');
                (window.__seen ||= new Set()).add(bar && bar.value);
                const state = document.querySelector('[data-run-state]');
                return bar && bar.value === bar.max
                    && state && state.dataset.runState === 'complete';
            }""",
            timeout=TIMEOUT_MS,
        )
        assert page.evaluate("window.__samePage") is True  # never reloaded
        seen = page.evaluate("[...window.__seen].filter(v => v !== null)")
        assert 0 in seen and users in seen
        assert [v for v in seen if 0 < v < users], f"no update between 0 and 100%: {seen}"
        expect(page.locator("[data-progress-percent]")).to_have_text("100.0%")
        expect(page.locator(".reports table").first).to_be_visible()
        page.screenshot(path=str(artifacts / "backfill-complete.png"), full_page=True)

        # A job no handler knows goes dead at once (max_retries=0): deterministic.
        with psycopg.connect(seeded_database, autocommit=True) as conn:
            dead_id = enqueue(
                conn,  # type: ignore[arg-type]
                NewJob("browser.unknown_type", {"why": "no handler"}, max_retries=0),
            ).job_id
        page.get_by_role("link", name="Queue").click()
        dead_row = page.locator(f'tr[data-job-id="{dead_id}"]')
        expect(dead_row).to_be_visible()  # appears by a live update or at load
        expect(dead_row).to_contain_text("no handler registered")
        expect(page.locator('[data-stat="dead"]')).to_have_text("1")
        page.screenshot(path=str(artifacts / "queue.png"), full_page=True)
    log.close()

    # Workers stopped: retry the dead job from the keyboard alone.
    retry = dead_row.get_by_role("button", name=f"Retry job {dead_id}")
    page.locator("body").focus()
    for _ in range(200):
        page.keyboard.press("Tab")
        if retry.evaluate("button => document.activeElement === button"):
            break
    else:
        pytest.fail("the Retry button cannot be reached with Tab")
    page.keyboard.press("Enter")
    expect(flash(page)).to_have_text(f"Job {dead_id} is pending again.")
    expect(page.locator(f'tr[data-job-id="{dead_id}"]')).to_have_count(0)
    assert (
        scalar(seeded_database, "SELECT status FROM background_jobs WHERE id = %s", (dead_id,))
        == "pending"
    )

    # Look a user up: projections, latest events, and a pending job (no worker runs now).
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        user_id = conn.execute(
            "SELECT user_id FROM projections ORDER BY user_id LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
        append_events(
            conn,  # type: ignore[arg-type]
            [
                NewEvent(
                    user_id, "profile.updated", datetime.now(UTC), {"training_modality": "running"}
                )
            ],
        )
    page.get_by_role("link", name="Users").click()
    page.get_by_label("User id").fill(str(user_id))
    page.get_by_label("User id").press("Enter")
    expect(page.locator("[data-user-id]")).to_have_text(str(user_id))
    expect(page.locator("article.projection")).to_have_count(2)
    expect(page.locator("article.projection pre").first).to_contain_text('"model_version"')
    expect(page.get_by_role("table").filter(has_text="latest events")).to_contain_text(
        "profile.updated"
    )
    expect(page.locator('[data-region="jobs_region"]')).to_contain_text("projection.update")
    page.screenshot(path=str(artifacts / "user.png"), full_page=False)

    # Cancel a run (it stays pending: no worker runs), after the confirmation page.
    page.get_by_role("link", name="Backfill").click()
    second = f"browser-cancel-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Source label").fill(second)
    page.get_by_role("button", name="Trigger backfill").click()
    expect(page.locator("[data-run-state]")).to_have_attribute("data-run-state", "running")
    page.get_by_role("link", name="Cancel this run…").click()
    expect(page.get_by_role("heading", name=f"Cancel the backfill {second}?")).to_be_visible()
    page.screenshot(path=str(artifacts / "cancel-confirm.png"), full_page=False)
    page.get_by_role("button", name="Yes, cancel this run").click()
    expect(flash(page)).to_contain_text(f"Cancelled 1 pending job of {second}")
    expect(page.locator("[data-run-state]")).to_have_attribute("data-run-state", "cancelled")
    expect(page.locator("#history")).to_contain_text(second)

    # A POST without the CSRF token is refused, with the session cookie and all.
    forged = page.request.post(
        f"{base}/admin/backfill/trigger", form={"source": "forged"}, max_redirects=0
    )
    assert forged.status == 403, forged.text()
    assert (
        scalar(seeded_database, "SELECT count(*) FROM backfill_runs WHERE source = 'forged'") == 0
    )

    # Sign out: the session is gone, pages ask for a token again.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto(f"{base}/admin/queue")
    expect(page).to_have_url(f"{base}/admin/signin?next=%2Fadmin%2Fqueue")

    context.close()
    assert console.problems == []


@pytest.mark.timeout(300)
def test_pages_fit_a_phone(
    browser: Browser, server: ApiServer, operator_token: str, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console()
    console.watch(page)
    sign_in(page, server.base_url, operator_token)
    for path, name in (
        ("/admin/backfill", "phone-backfill.png"),
        ("/admin/queue", "phone-queue.png"),
        ("/admin/users", "phone-users.png"),
    ):
        page.goto(server.base_url + path)
        expect(page.locator("main h1")).to_be_visible()
        # Wide tables scroll inside their own region; the page itself never scrolls sideways.
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
        page.screenshot(path=str(artifacts / name), full_page=True)
    context.close()
    assert console.problems == []

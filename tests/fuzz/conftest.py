"""The fuzz tests' counts, printed in the session's summary: ``make test`` runs with -q, which
hides a passing test's output, and the count of inputs tried is what CI must show."""

from __future__ import annotations

import pytest

FUZZ_LINES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FUZZ_LINES] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(FUZZ_LINES, [])
    if lines:
        terminalreporter.section("fuzzing")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def fuzz_summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines to print in the summary, whether the test passes or fails."""
    return request.config.stash[FUZZ_LINES]

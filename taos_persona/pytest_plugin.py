"""The pytest plugin (entry point ``pytest11``): ``persona``, ``persona_factory``, ``async_persona``.

- ``persona``: a :class:`~taos_persona.sync.SyncPersonaFixture`, released at the
  end of the test. Its name comes from ``@pytest.mark.persona("novice_sarah",
  **options)``, else from the ``persona_name`` fixture (override it in a
  conftest.py), else from the test's own name. ``options`` go to the fixture's
  constructor (``backends={"user": "rest_user"}``, ``concurrency=4``).
- ``persona_factory``: ``persona_factory("alice")`` opens another persona;
  all are released at the end of the test, newest first.
- ``async_persona``: the same persona with ``await``-able methods, for
  pytest-asyncio and anyio (asyncio backend) tests alike; its fixture lives on
  a private loop, so whichever loop runs the test does not matter.

One startup sweep per session (the xdist controller does it; workers never
sweep), ``--persona-registry DIR``, ``--no-persona-sweep``, and a terminal
summary of what was acquired, released and left by every fixture the session's
process released (the plugin's, ``PersonaTestCase``'s and any ``PersonaFixture``
a test opens itself), with the sweep command when anything was left. This module is imported by pytest only, never by
``import taos_persona``.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from .fixture import OUTCOME_LISTENERS
from .outcomes import Outcome, plural
from .registry import default_registry_dir
from .sync import AsyncPersonaBridge, SyncPersonaFixture, _Bridge

__all__ = ["PersonaTally"]

_OUTPUT_KEY = "taos_persona_tally"


@dataclass
class PersonaTally:
    """What this session did with resources; merged from every xdist worker by the controller."""

    acquired: int = 0
    released: int = 0
    left: int = 0
    swept_at_start: int = 0
    swept_at_end: int = 0
    sweep_kept: int = 0
    dead_runs: List[str] = field(default_factory=list)
    left_in: List[str] = field(default_factory=list)
    """Registries (directories or fleet URLs) where a fixture left something, in order."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_outcomes(self, location: str, outcomes: List[Outcome]) -> None:
        """Count one fixture's release (a listener of every fixture: any thread may call it)."""
        left = sum(1 for outcome in outcomes if outcome.kept)
        with self._lock:
            self.acquired += len(outcomes)
            self.released += sum(1 for outcome in outcomes if outcome.result.gone)
            self.left += left
            if left and location not in self.left_in:
                self.left_in.append(location)

    def merge(self, data: Dict[str, Any]) -> None:
        """Add a worker's counts (its ``to_json()``)."""
        for name in ("acquired", "released", "left"):
            setattr(self, name, getattr(self, name) + int(data.get(name, 0)))
        self.left_in.extend(place for place in data.get("left_in", []) if place not in self.left_in)

    def to_json(self) -> Dict[str, Any]:
        return {"acquired": self.acquired, "released": self.released, "left": self.left,
                "left_in": self.left_in}


class _PluginState:
    """Per-session settings and the tally, kept on ``config``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.registry_dir: Optional[str] = config.getoption("persona_registry")
        self.sweep_enabled = not config.getoption("no_persona_sweep")
        self.watchdog: Optional[bool] = True if config.getoption("persona_watchdog") else None
        self.is_worker = hasattr(config, "workerinput")
        self.is_controller = not self.is_worker and config.getoption("dist", "no") not in ("no", None)
        self.tally = PersonaTally()

    def sweep(self) -> Tuple[int, int, List[str]]:
        """Sweep the registry: (released, kept, swept run ids). Never raises: a summary line says why."""
        from .sweeper import sweep_registry

        try:
            report = sweep_registry(self.registry_dir)
        except Exception as exc:  # noqa: BLE001 - a sweep problem must not stop the test session
            sys.stderr.write(f"taos-persona: the sweep of {self.registry_dir or 'the registry'} failed: {exc}\n")
            return 0, 0, []
        return (len(report.released), len(report.kept) + len(report.problems) + len(report.quarantined_runs),
                list(report.swept_runs))

    def open(self, cls: Callable[..., _Bridge], name: str, options: Dict[str, Any]) -> Any:
        options = dict(options)
        options.setdefault("registry_dir", self.registry_dir)
        options["sweep"] = False  # the session swept once at its start
        options.setdefault("watchdog", self.watchdog)  # None: $TAOS_PERSONA_WATCHDOG decides
        persona = cls(name, **options)
        persona._open()
        return persona

    def close(self, persona: _Bridge) -> None:
        persona._close()  # its outcomes reach the tally through OUTCOME_LISTENERS, as every fixture's do


_STATE: Dict[int, _PluginState] = {}  # id(config) -> state; a stash would need pytest >= 7


def _state(config: pytest.Config) -> _PluginState:
    return _STATE[id(config)]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("taos-persona", "taos-persona: personas that leave nothing behind")
    group.addoption("--persona-registry", metavar="DIR", default=None,
                    help="registry directory for this session's personas (default: $TAOS_PERSONA_DIR, "
                         "else .taos/test-fixtures in the project root)")
    group.addoption("--no-persona-sweep", action="store_true", default=False,
                    help="do not sweep what dead runs left, at the session's start or end")
    group.addoption("--persona-watchdog", action="store_true", default=False,
                    help="start a watchdog process that releases this session's personas within seconds "
                         "if pytest is killed (also: TAOS_PERSONA_WATCHDOG=1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "persona(name, **options): the persona the `persona` fixture opens "
                                       "(options go to SyncPersonaFixture)")
    state = _STATE[id(config)] = _PluginState(config)
    OUTCOME_LISTENERS.append(state.tally.add_outcomes)  # every fixture, PersonaTestCase's too


def pytest_unconfigure(config: pytest.Config) -> None:
    state = _STATE.pop(id(config), None)
    if state is not None and state.tally.add_outcomes in OUTCOME_LISTENERS:
        OUTCOME_LISTENERS.remove(state.tally.add_outcomes)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The one startup sweep of the session: here, or in the xdist controller, never in a worker."""
    state = _state(session.config)
    if state.sweep_enabled and not state.is_worker:
        released, kept, runs = state.sweep()
        state.tally.swept_at_start, state.tally.sweep_kept = released, kept
        state.tally.dead_runs = runs


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands its tally to the controller; the controller sweeps what dead workers left."""
    state = _state(session.config)
    if state.is_worker:
        session.config.workeroutput[_OUTPUT_KEY] = state.tally.to_json()  # type: ignore[attr-defined]
    elif state.is_controller and state.sweep_enabled:
        released, kept, _ = state.sweep()
        state.tally.swept_at_end, state.tally.sweep_kept = released, kept


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: a worker finished (or died); add what it reported, if it lived to report."""
    state = _STATE.get(id(node.config))
    output = getattr(node, "workeroutput", None) or {}
    if state is not None and _OUTPUT_KEY in output:
        state.tally.merge(output[_OUTPUT_KEY])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    state = _STATE.get(id(terminalreporter.config))
    if state is None or state.is_worker:
        return
    for line in summary_lines(state.tally, state.registry_dir):
        terminalreporter.write_line(line)


def summary_lines(tally: PersonaTally, registry_dir: Optional[str]) -> List[str]:
    """The terminal summary: nothing at all when the session touched no resource."""
    lines: List[str] = []
    if tally.swept_at_start:
        lines.append(f"startup sweep released {tally.swept_at_start} resource(s) left by earlier sessions "
                     f"(dead runs: {', '.join(tally.dead_runs)})")
    if tally.acquired or tally.swept_at_end:
        lines.append(f"{tally.acquired} resource(s) acquired, {tally.released} released, "
                     f"{tally.left} left this session")
    if tally.swept_at_end:
        lines.append(f"closing sweep released {tally.swept_at_end} resource(s) of processes that died "
                     "this session")
    places = list(tally.left_in)
    swept = os.path.abspath(registry_dir) if registry_dir else default_registry_dir()  # the session sweeps it
    if tally.sweep_kept and swept not in places:
        places.append(swept)
    for place in places[:_PLACES_SHOWN]:
        lines.append(f"resources are left: release them with python -m taos_persona.sweep{_where(place)}")
    if len(places) > _PLACES_SHOWN:
        lines.append(f"... and in {plural(len(places) - _PLACES_SHOWN, 'more registry', 'more registries')}")
    return [f"taos-persona: {line}" for line in lines]


_PLACES_SHOWN = 3


def _where(place: str) -> str:
    """The sweep's option naming a registry: ``--registry URL`` or ``--dir DIR``."""
    from .stores import is_postgres_url

    return f" --registry {place}" if is_postgres_url(place) else f" --dir {place}"


_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")


def name_from_test(test_name: str) -> str:
    """A valid persona name from a test's name: ``test_x[a b]`` -> ``test_x_a_b``."""
    name = _INVALID.sub("_", test_name).strip("_.-").replace("..", "_")
    return (name or "persona")[:64]


def _marked(request: pytest.FixtureRequest, fallback: str) -> Tuple[str, Dict[str, Any]]:
    marker = request.node.get_closest_marker("persona")
    if marker is None:
        return fallback, {}
    options = dict(marker.kwargs)
    name = marker.args[0] if marker.args else options.pop("name", fallback)
    return name, options


@pytest.fixture
def persona_name(request: pytest.FixtureRequest) -> str:
    """The persona's name when no ``persona`` mark gives one: the test's name. Override in a conftest."""
    return name_from_test(request.node.name)


def _held(request: pytest.FixtureRequest, cls: Callable[..., _Bridge], fallback: str) -> Iterator[Any]:
    state = _state(request.config)
    name, options = _marked(request, fallback)
    persona = state.open(cls, name, options)
    try:
        yield persona
    finally:
        state.close(persona)


@pytest.fixture
def persona(request: pytest.FixtureRequest, persona_name: str) -> Iterator[SyncPersonaFixture]:
    """A synchronous persona, released at the end of the test."""
    yield from _held(request, SyncPersonaFixture, persona_name)


@pytest.fixture
def async_persona(request: pytest.FixtureRequest, persona_name: str) -> Iterator[AsyncPersonaBridge]:
    """An async persona (``await async_persona.disposable_email()``), released at the end of the test."""
    yield from _held(request, AsyncPersonaBridge, persona_name)


@pytest.fixture
def persona_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., SyncPersonaFixture]]:
    """``persona_factory("alice", **options)``: more personas in one test, released newest first."""
    state = _state(request.config)
    opened: List[SyncPersonaFixture] = []

    def make(name: str, **options: Any) -> SyncPersonaFixture:
        opened.append(state.open(SyncPersonaFixture, name, options))
        return opened[-1]

    try:
        yield make
    finally:
        _close_all(state, opened)


def _close_all(state: _PluginState, opened: List[SyncPersonaFixture]) -> None:
    """Close newest first; every one is closed even if one fails, and the first failure is raised."""
    failure: Optional[BaseException] = None
    for persona in reversed(opened):
        try:
            state.close(persona)
        except BaseException as exc:  # noqa: BLE001 - the others must still be released
            failure = failure or exc
    if failure is not None:
        raise failure

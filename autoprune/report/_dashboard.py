"""optuna-dashboard on a study's storage, seen through a view that marks infeasible trials the way it reads them.

Optuna 5 stores ``trial.set_constraint(key, value)`` as one system attribute per key, ``constraints:<key>``;
optuna-dashboard 0.21 only reads the older list under ``constraints`` and so draws every trial as feasible.
Rather than write that legacy list into the study too (Optuna reads both formats into ``trial.constraints``, so
each constraint would count twice, and the GP sampler would model it twice), the dashboard is served through a
read-side view: trials it returns carry the legacy list, built from the ``constraints:<key>`` values in key
order. The stored study is left as it is; writes from the dashboard (notes, ...) go to the storage unchanged.
A staged search's screened trials (``fidelity: screen``) carry no stored constraint, so that the sampler learns
from them; the view marks them infeasible, so the dashboard greys them and keeps them off its front.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from autoprune.study import FIDELITY_ATTR, SCREEN

__all__ = ["DashboardServer", "ConstraintsView", "start_dashboard"]

LEGACY_KEY = "constraints"
PREFIX = "constraints:"


def _with_legacy_constraints(trial: FrozenTrial) -> FrozenTrial:
    system_attrs = trial.system_attrs
    if LEGACY_KEY in system_attrs:
        return trial
    keys = sorted(k for k in system_attrs if k.startswith(PREFIX))
    screened = trial.user_attrs.get(FIDELITY_ATTR) == SCREEN
    if not keys and not screened:
        return trial
    view = copy.copy(trial)  # the storage's cached objects stay untouched
    legacy = [float(system_attrs[k]) for k in keys] + ([1.0] if screened else [])
    view._system_attrs = {**system_attrs, LEGACY_KEY: legacy}
    return view


def _forward(name: str) -> Callable[..., Any]:
    def method(self: ConstraintsView, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


# Every abstract storage method forwards to the wrapped storage; the two trial readers are overridden below.
_Forwarding = type(
    "_Forwarding", (BaseStorage,), {name: _forward(name) for name in sorted(BaseStorage.__abstractmethods__)}
)


class ConstraintsView(_Forwarding):  # type: ignore[misc, valid-type]
    """A storage that reads like ``inner``, except that trials also carry the legacy ``constraints`` list."""

    def __init__(self, inner: BaseStorage) -> None:
        self.inner = inner

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return _with_legacy_constraints(self.inner.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        trials = self.inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [_with_legacy_constraints(t) for t in trials]

    def __getattr__(self, name: str) -> Any:  # storage-specific extras (e.g. RDBStorage's engine)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


class DashboardServer:
    """optuna-dashboard bound to ``host:port``; ``port=0`` picks a free port. ``url`` says where it listens."""

    def __init__(self, storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> None:
        from optuna_dashboard import wsgi

        self.storage = ConstraintsView(optuna.storages.RDBStorage(storage_url))
        self._server: WSGIServer = make_server(host, port, wsgi(self.storage), handler_class=_QuietHandler)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dashboard/"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> DashboardServer:
        """Serve from a daemon thread (what tests and notebooks use)."""
        self._thread = threading.Thread(target=self.serve_forever, name="autoprune-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() would wait forever on a loop that never ran
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def start_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> DashboardServer:
    """Bind the dashboard and serve it from a background thread; ``.stop()`` ends it."""
    return DashboardServer(storage_url, host, port).start()

"""The Dask cluster a fit runs on: connect to the scheduler named in ``fit.cluster.address`` and check it first.

A wrong address, a scheduler without workers or a worker with another LightGBM / recgen than this process must
fail in seconds with a message that says what to fix, before the slow local stages, not as a hang or a pickling
error an hour later; every such problem is a :class:`~recgen.errors.ClusterError` (exit code 2).
:func:`watch` runs one cluster call and turns a worker lost mid-call into the same error, so a killed worker
stops the fit cleanly (nothing is written: the fit saves only at its end).
"""

from __future__ import annotations

import contextvars
import functools
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import ClusterSettings
from ..errors import ClusterError, RecgenError

#: distributions whose versions must be the same on the client and every worker (what runs there is their code)
CHECKED = ("lightgbm", "numpy", "sentence-transformers", "dask", "distributed")


def _versions() -> dict[str, str | None]:
    """This interpreter's versions of :data:`CHECKED` and a digest of recgen's code (also run on each worker, in
    its event loop: package metadata only, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in CHECKED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["recgen code"] = _code_digest()
    return out


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """A digest of recgen's source when this process first asked (about when it imported recgen): a worker with
    another checkout, or started before the code changed, runs other code."""
    import hashlib

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def connect(settings: ClusterSettings):
    """A ``distributed.Client`` on ``settings.address`` with at least one worker whose packages match ours."""
    if not settings.address:
        raise ClusterError("no cluster address given (fit.cluster.address / --cluster tcp://host:port)")
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("running a fit on a cluster needs Dask: pip install 'recgen[cluster]'") from None
    address = settings.address
    try:
        client = Client(address, timeout=settings.connect_timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within {settings.connect_timeout:g} s "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); start one with "
                           "`dask scheduler` and pass the address it prints (tcp://host:8786)") from None
    try:
        try:
            client.wait_for_workers(1, timeout=settings.connect_timeout)
        except (TimeoutError, OSError):
            raise ClusterError(f"the Dask scheduler at {address} has no workers after {settings.connect_timeout:g} s;"
                               f" start some with `dask worker {address}`") from None
        check_versions(client, address)
    except BaseException:
        client.close()
        raise
    return client


def check_cluster(settings: ClusterSettings) -> None:
    """Connect, check and disconnect: ``recgen fit`` calls this first, so a bad address fails in seconds."""
    connect(settings).close()


def check_versions(client, address: str) -> None:
    """Refuse a cluster whose scheduler or workers run other versions of :data:`CHECKED` than this process."""
    mine = _versions()
    theirs = {"scheduler": client.run_on_scheduler(_versions), **client.run(_versions)}  # it unpickles tasks too
    bad = [f"{worker}: {name} {versions.get(name)} (here {mine[name]})" for worker, versions in theirs.items()
           for name in mine if versions.get(name) != mine[name]]
    if bad:
        raise ClusterError(f"the Dask cluster at {address} runs other package versions or recgen code than this "
                           "process: " + "; ".join(bad[:6]) + " — install the same recgen environment on the "
                           "scheduler and every worker (and restart them after changing recgen's code)")


def workers(client) -> list[str]:
    """The addresses of the workers connected now (asked of the scheduler, not a cached view)."""
    return sorted(client.nthreads())


def check_workers(client, expected: Sequence[str], what: str) -> None:
    """A ClusterError when a worker of ``expected`` (those the fit started with) has left: the fit stops rather
    than go on with another cluster than the one it was started on."""
    try:
        lost = set(expected) - set(workers(client))
    except (OSError, TimeoutError):
        raise ClusterError(f"lost the Dask scheduler during {what}") from None
    if lost:
        raise ClusterError(f"{len(lost)} Dask worker(s) left the cluster during {what} "
                           f"({', '.join(sorted(lost))}); nothing was saved — restart the workers and run the "
                           "fit again")


def watch(client, call: Callable[[], Any], what: str, expected: Sequence[str] | None = None,
          poll: float = 1.0) -> Any:
    """``call()`` (which runs work on the cluster), stopped with a ClusterError as soon as a worker of
    ``expected`` (default: those there now) leaves: a distributed LightGBM waits for its peers, so a lost worker
    would otherwise hang it."""
    before = list(expected) if expected is not None else workers(client)
    check_workers(client, before, what)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with client.as_current():  # library code that looks up "the" client (lightgbm.dask) finds this one
                result["value"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    context = contextvars.copy_context()  # the caller's progress display reaches the thread
    thread = threading.Thread(target=lambda: context.run(run), name=f"recgen-cluster-{what}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll)
        if not thread.is_alive():
            break
        check_workers(client, before, what)
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, RecgenError):  # bad data etc.: already a clear message
            raise exc
        check_workers(client, before, what)  # a worker lost just before the call failed: say that, not its symptom
        raise ClusterError(f"{what} failed on the Dask cluster: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:300]}") from exc
    return result["value"]

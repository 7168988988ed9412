"""Connecting to Ray: the embedded local instance or a cluster, its token, and the resources a run needs."""

from __future__ import annotations

import os
import socket


from ..errors import DagwireError
from .worker import one_line


# --------------------------------------------------------------------------------------------
# Ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (DagwireError) when nothing listens at a Ray address; Ray itself would retry for minutes."""
    if address in ("auto", "local"):
        return
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise DagwireError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise DagwireError(f"--address {address}: no Ray cluster reachable there "
                           f"({exc.strerror or type(exc).__name__})") from None


def _token_source() -> str:
    """Where Ray takes the authentication token from, in its order: the variable, the file, ~/.ray."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return "~/.ray/auth_token"


def _auth_advice(address: str, token_mode: bool, has_token: bool = True, why: str = "") -> str:
    """One line: why a cluster refused us, and what to set."""
    give = ("RAY_AUTH_TOKEN=<the token its nodes were started with> (or RAY_AUTH_TOKEN_PATH=<a file holding it>; "
            "`ray get-auth-token` on the head node prints it)")
    if not token_mode:
        if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
            return (f"--address {address}: the Ray cluster there requires token authentication, and Ray sends no "
                    "token unless RAY_AUTH_MODE=token; set RAY_AUTH_MODE=token as well")
        return (f"--address {address}: the Ray cluster there requires token authentication; set RAY_AUTH_MODE=token "
                f"and {give}")
    if not has_token:
        return f"--address {address}: RAY_AUTH_MODE=token but no authentication token found{why}; set {give}"
    return f"--address {address}: the Ray cluster there refused the token from {_token_source()}; set {give}"


def _is_auth_error(exc: BaseException) -> bool:
    """Whether Ray failed for want of the right token (somewhere in the exception's chain)."""
    seen = 0
    while exc is not None and seen < 10:
        text = f"{type(exc).__name__} {exc}"
        if "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class _quiet_stderr:
    """Send file descriptor 2 to a scratch file for a while: Ray's C++ core logs there directly."""

    def __enter__(self) -> "_quiet_stderr":
        import sys
        import tempfile

        self.saved = self.scratch = None
        try:
            sys.stderr.flush()
            self.scratch = tempfile.TemporaryFile()
            self.saved = os.dup(2)
            os.dup2(self.scratch.fileno(), 2)
        except (OSError, ValueError):  # no usable stderr: nothing to keep quiet
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        if self.scratch is not None:
            self.scratch.close()


def check_token(address: str) -> None:
    """DagwireError naming what to set when the cluster at `address` requires a token we lack or it refuses.

    Ray itself would retry a refused connection for 20 s, logging each attempt, then report only
    that it could not connect; one request answers here. Anything but an authentication failure
    is left to `ray.init` to report.
    """
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    try:
        from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, GcsClient, get_authentication_mode
    except ImportError:  # another Ray: ray.init reports what goes wrong
        return
    token_mode = get_authentication_mode() == AuthenticationMode.TOKEN
    if token_mode:  # without a token, Ray's C++ core would abort this process at the first request
        try:
            found, why = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True), ""
        except Exception as exc:  # noqa: BLE001 - e.g. RAY_AUTH_TOKEN_PATH names no readable file
            found = False
            why = (f" (RAY_AUTH_TOKEN_PATH {os.environ['RAY_AUTH_TOKEN_PATH']} cannot be read or is empty)"
                   if os.environ.get("RAY_AUTH_TOKEN_PATH") and not os.environ.get("RAY_AUTH_TOKEN") else
                   f" ({one_line(exc).split('. ')[0]})")
        if not found:
            raise DagwireError(_auth_advice(address, token_mode, has_token=False, why=why))
    try:
        with _quiet_stderr():
            GcsClient(address=address)
    except Exception as exc:  # noqa: BLE001 - only an authentication failure is ours to explain
        if _is_auth_error(exc):
            raise DagwireError(_auth_advice(address, token_mode)) from None


def connect_ray(address: str | None = None) -> bool:
    """Use an initialised Ray, else connect to `address`, else start a local instance; True if started here."""
    import logging

    if address:
        check_reachable(address)
    import ray

    if ray.is_initialized():
        return False
    if address:
        check_token(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            # address="local": a new instance even when another Ray runs here (plain init would join it).
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for "cannot start / connect"
        if address and _is_auth_error(exc):
            token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
            raise DagwireError(_auth_advice(address, token_mode, "no authentication token" not in str(exc))) from None
        raise DagwireError(f"cannot {'connect to Ray at ' + address if address else 'start Ray'}: "
                           f"{one_line(exc)}") from None
    return True


def _check_resources(cpus_per_run: int, gpus_per_run: float) -> None:
    import ray

    total = ray.cluster_resources()
    # Ray would wait forever for a task no node can hold.
    if total.get("CPU", 0) < cpus_per_run:
        raise DagwireError(f"--cpus-per-run {cpus_per_run}: the Ray cluster has {total.get('CPU', 0):g} CPUs")
    if gpus_per_run and total.get("GPU", 0) < gpus_per_run:
        raise DagwireError(f"--gpus-per-run {gpus_per_run:g}: the Ray cluster has {total.get('GPU', 0):g} GPUs")




def run_slots(cpus_per_run: int, gpus_per_run: float) -> int:
    """How many runs of this shape the Ray cluster holds at once (at least 1), from its resources now."""
    import ray

    total = ray.cluster_resources()
    slots = int(total.get("CPU", 0) // max(cpus_per_run, 1))
    if gpus_per_run:
        slots = min(slots, int(total.get("GPU", 0) // gpus_per_run))
    return max(slots, 1)

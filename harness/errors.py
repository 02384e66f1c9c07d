"""The one exception the CLI turns into a one-line message and exit code 2, and the faults of the
machine (a full disk, a read-only file, a store that stopped answering) said the same way."""
from __future__ import annotations

import errno
import os


class HarnessError(Exception):
    """Bad input or environment, said for a person: what was wrong, what was expected, how to fix it."""


RESUME = "finished phases are reused and an interrupted generator continues with --resume"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def mask(url: str) -> str:
    """A store or storage URL fit to print or log: its password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def scrub(text: str, urls) -> str:
    """`text` with the password of every URL in `urls` masked, wherever it appears (a driver's message
    may repeat the URL it was given)."""
    from urllib.parse import unquote, urlsplit
    for url in urls:
        try:
            password = urlsplit(url).password if url and "://" in url else None
        except ValueError:
            password = None
        for secret in {password, unquote(password or "")} - {None, ""}:
            text = text.replace(secret, "***")
    return text


def refused(exc: BaseException, uri: str, experiment: str | None = None) -> str | None:
    """An authenticated tracking server's 401 or 403 in one line naming the server and the user (MLflow
    reads both from MLFLOW_TRACKING_USERNAME / _PASSWORD; the password is never part of a message), or
    None when `exc` is not one."""
    import re
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    for e in _chain(exc):
        text = str(e)
        code = re.search(r"error code (40[13])\b", text)
        code = code.group(1) if code else {"UNAUTHENTICATED": "401", "PERMISSION_DENIED": "403"}.get(
            getattr(e, "error_code", None))
        if code == "401" and not user:
            return (f"the MLflow tracking server {mask(uri)} asks for a login: set MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD")
        if code == "401":
            return (f"the MLflow tracking server {mask(uri)} refused user {user!r}: wrong user name or password "
                    "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)")
        if code == "403":
            what = f"experiment {experiment!r}" if experiment else "this experiment"
            who = f"user {user!r}" if user else "an anonymous user"
            return (f"the MLflow tracking server {mask(uri)} denies {who} permission to write to {what}: ask its "
                    "admin for EDIT permission on it, or pick another --experiment")
    return None


def explain(exc: BaseException, writing: str | None = None) -> str | None:
    """A fault of the machine or the store in one line for a person, or None when `exc` is not one
    (a bug: its traceback is worth more than a sentence). `writing` names what was being written
    when the error itself names no file (a write to an open file does not)."""
    uri = mask(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    denied = refused(exc, uri)  # before "stopped answering": a 401 or 403 is an answer
    if denied:
        return denied
    for e in _chain(exc):
        if isinstance(e, HarnessError):
            return str(e)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" while writing {e.filename or writing}" if e.filename or writing else ""
            return f"no space left on the device{where}: free some space and rerun ({RESUME})"
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            what = e.filename or writing or "a file"
            return f"cannot write {what} ({e.strerror}); make it writable or point the harness elsewhere ({RESUME})"
        text = str(e)
        if "readonly database" in text or "read-only database" in text:
            return f"the MLflow tracking store {uri} is read-only; make its file writable or set MLFLOW_TRACKING_URI"
        if any(s in text for s in ("API request to", "Max retries exceeded", "Connection refused",
                                   "Failed to establish a new connection", "Read timed out")) \
                or type(e).__name__ in ("ConnectionError", "ConnectTimeout", "ReadTimeout"):
            return (f"the MLflow tracking store {uri} stopped answering ({_first_line(e)}); its runs of this "
                    f"command stay RUNNING until it is back, then the next command marks them FAILED and "
                    f"{RESUME}")
    return None

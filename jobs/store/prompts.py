"""The Prompt Registry: versions, aliases and their tags, and the lock the gate holds while it
moves ``production``. Everything promptgate does with prompts goes through here."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from jobs.core.errors import UserError


def register(name: str, template: str, commit_message: str, tags: dict[str, str]) -> int:
    """A new version of the prompt with this text; returns its number."""
    import mlflow

    return int(mlflow.genai.register_prompt(name=name, template=template, commit_message=commit_message,
                                            tags=tags).version)


def by_alias(name: str, alias: str) -> Any | None:
    """The version an alias points at; None when the prompt or the alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_prompt_version_by_alias(name, alias)
    except MlflowException:  # MLflow raises a plain MlflowException for a missing alias or prompt
        return None


def production(name: str) -> Any:
    """The version ``production`` points at; bad input when the pipeline never registered one."""
    found = by_alias(name, "production")
    if found is None:
        raise UserError(f"prompt '{name}' has no production alias; run the pipeline first (make run)")
    return found


def set_alias(name: str, alias: str, version: int) -> None:
    import mlflow

    mlflow.genai.set_prompt_alias(name, alias=alias, version=int(version))


def delete_alias(name: str, alias: str) -> None:
    import mlflow

    mlflow.genai.delete_prompt_alias(name, alias=alias)


def version(name: str, number: Any) -> Any:
    from mlflow import MlflowClient

    return MlflowClient().get_prompt_version(name, str(number))


def tag_version(name: str, number: Any, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_prompt_version_tag(name, str(number), key, value)


def delete_version(name: str, number: Any) -> None:
    from mlflow import MlflowClient

    MlflowClient().delete_prompt_version(name, str(number))


def template(uri: str) -> str:
    """The text of a prompt URI (``prompts:/name/3``, ``prompts:/name@production``)."""
    import mlflow

    return mlflow.genai.load_prompt(uri).template


def versions(name: str) -> list[Any]:
    """Every version of a prompt (all pages); empty when the prompt does not exist."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if not client.get_prompt(name):
        return []
    out, token = [], None
    while True:
        page = client.search_prompt_versions(name, max_results=100, page_token=token)
        out += list(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _holder_gone(tags: dict[str, str], stale_s: float) -> bool:
    """The lock's holder was killed: its process is gone from this host, or it is older than stale_s."""
    if time.time() - float(tags.get("acquired_at", "0")) > stale_s:
        return True
    if tags.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(tags.get("pid", "0")), 0)
        return False
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False


@contextmanager
def alias_lock(prompt_name: str, alias: str, timeout_s: float = 120, stale_s: float = 90) -> Iterator[None]:
    """Hold a lock on one alias across processes and machines.

    MLflow has no compare-and-set on aliases. Creating a registered model is atomic in
    its SQL store (the name is unique), so a model named after the alias serves as the
    mutex, tagged with its holder's token. A lock whose holder was killed (its pid is gone on
    this host, or it is older than ``stale_s``; the work under it takes seconds) is broken by
    whoever first creates the model that names that holder's token (``_break``): of two
    breakers exactly one deletes it. A holder deletes the lock only while it holds its token.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = f"promptgate-lock.{prompt_name}.{alias}"
    token = uuid.uuid4().hex
    holder = {"acquired_at": str(time.time()), "host": socket.gethostname(), "pid": str(os.getpid()), "token": token}
    deadline = time.monotonic() + timeout_s
    while not _created(client, name, holder):
        try:
            tags = client.get_registered_model(name).tags
        except MlflowException:
            continue  # released meanwhile
        if _holder_gone(tags, stale_s) and _break(client, name, tags.get("token", ""), stale_s):
            continue
        if time.monotonic() > deadline:
            raise UserError(f"alias '{alias}' of prompt '{prompt_name}' stayed locked for {timeout_s:.0f} s by "
                            f"another gate; retry, or delete the registered model '{name}' if no gate is running")
        time.sleep(0.5)
    try:
        yield
    finally:
        _delete_if_held(client, name, token)


def _break(client: Any, name: str, dead_token: str, stale_s: float) -> bool:
    """Delete the lock ``name`` of the dead holder ``dead_token``, if this caller is the one
    breaker that creates ``<name>.break.<token>`` (atomic, as the lock is). The lock cannot
    change hands meanwhile: only its holder, who is dead, or this breaker deletes it. A
    breaker that died mid-way leaves its model; one older than ``stale_s`` is deleted so the
    next caller can break the lock. True when the caller should try the lock again."""
    from mlflow.exceptions import MlflowException

    breaker = f"{name}.break.{dead_token or 'none'}"
    if not _created(client, breaker, {"acquired_at": str(time.time())}):
        with suppress(MlflowException):
            if time.time() - float(client.get_registered_model(breaker).tags.get("acquired_at", "0")) > stale_s:
                client.delete_registered_model(breaker)
        return False  # another breaker is at it
    try:
        _delete_if_held(client, name, dead_token)
    finally:
        with suppress(MlflowException):
            client.delete_registered_model(breaker)
    return True


def _created(client: Any, name: str, tags: dict[str, str]) -> bool:
    """Create the registered model ``name`` (atomic: its name is unique); False when it exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags=tags)
        return True
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
        return False


def _delete_if_held(client: Any, name: str, token: str) -> None:
    """Delete the lock ``name`` if ``token`` still holds it (a lock broken and taken by another is theirs)."""
    from mlflow.exceptions import MlflowException

    with suppress(MlflowException):  # gone already
        if client.get_registered_model(name).tags.get("token", "") == token:
            client.delete_registered_model(name)

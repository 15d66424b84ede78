"""Credentials written into a location (``s3://KEY:SECRET@bucket/...``) moved to the environment before a command
runs, so that no file the project writes and no line it prints or logs carries them.

pyarrow's S3 filesystem reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (the AWS SDK's default chain) when a
URI names no credentials, so ``s3://bucket/...`` opens the same bucket once they are set, and every record of a run
(``summary.json``, ``experiment.json``, ``predict.json``, checkpoints' ``config.json``, Tune's pickled experiment
with its filesystem) holds the clean root. The CLI applies :func:`into_environment` to each command's config as it
builds it (the ``jobs/`` scripts run the CLI); a library caller may do the same.

The variables reach Ray's workers two ways: a local cluster that this process starts afterwards inherits its
environment; a cluster it joins (``--address``, ``ray job submit``) gets the ones taken from a URI as the job's
runtime environment (:func:`forwarded_environment`, read by ``distributed.cluster.init_ray``). Ray keeps a job's
runtime environment in its own state (the job table the dashboard shows) and its runtime-env agent logs it on each
node, as it records a submitted job's command line: the environment of the nodes (an instance role) is the way to
keep credentials out of Ray too.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from nnunet_ray.config import ConfigError, flag_name
from nnunet_ray.data.storage import USER_PART, display

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"
# The names of the variables this process took from URIs (not the values): what a joined cluster's workers need.
FORWARD_ENV = "NNUNET_RAY_FORWARD_ENV"

_SCHEME_AND_USER = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(" + USER_PART + ")")


def split_credentials(location: str) -> tuple[str, tuple[str, str] | None]:
    """``location`` without the ``KEY:SECRET@`` part of an ``s3://`` URI, and that (key, secret) percent-decoded as
    pyarrow decodes them (``%2F`` is ``/``; an unescaped ``/`` in the secret, which pyarrow refuses, is taken too);
    any other location as it is, with None.

    Raises:
        ValueError: an ``s3://`` user part that is not KEY:SECRET, or a password in a URI of another scheme (only
            S3's are read from the environment); the message shows the location without it.
    """
    match = _SCHEME_AND_USER.match(location)
    if match is None:
        return location, None
    scheme, user = match.group(1), match.group(2)[:-1]
    clean = f"{scheme}://{location[match.end():]}"
    key, has_secret, secret = user.partition(":")
    if scheme.lower() != "s3":
        if has_secret:
            raise ValueError(f"{display(clean)}: only s3:// URIs may carry credentials (KEY:SECRET@); give them "
                             "through the environment")
        return location, None  # e.g. hdfs://user@namenode: a user name, no secret
    if not (key and secret):
        raise ValueError(f"{display(clean)}: credentials in an s3:// URI are written KEY:SECRET@bucket")
    return clean, (unquote(key), unquote(secret))


def into_environment(cfg: T) -> T:
    """``cfg`` (a config dataclass, nested ones included) with the credentials taken out of every location, and
    those credentials set as ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in this process's environment.

    Raises:
        ConfigError: naming the flag: locations carrying different credentials, credentials that differ from
            ``AWS_*`` variables already set (never silently one or the other), or a malformed user part.
    """
    found: dict[str, tuple[str, str]] = {}
    clean: T = _without_credentials(cfg, found)
    if found:
        _export(found)
    return clean


def forwarded_environment() -> dict[str, str]:
    """The variables :func:`into_environment` set in this process (name -> value): empty when none were taken."""
    names = [name for name in os.environ.get(FORWARD_ENV, "").split(",") if name]
    return {name: os.environ[name] for name in names if name in os.environ}


def _without_credentials(cfg: Any, found: dict[str, tuple[str, str]]) -> Any:
    """``cfg`` with every ``str`` / ``tuple[str, ...]`` field cleaned; ``found`` gets flag -> credentials."""
    changes = {}
    for field in dataclasses.fields(cfg):
        value, flag = getattr(cfg, field.name), field.metadata.get("cli", flag_name(field.name))
        if dataclasses.is_dataclass(value):
            clean = _without_credentials(value, found)
        elif isinstance(value, str):
            clean = _take(value, flag, found)
        elif isinstance(value, tuple) and all(isinstance(item, str) for item in value):
            clean = tuple(_take(item, flag, found) for item in value)
        else:
            continue
        if clean != value:
            changes[field.name] = clean
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _take(value: str, flag: str, found: dict[str, tuple[str, str]]) -> str:
    try:
        clean, credentials = split_credentials(value)
    except ValueError as err:
        raise ConfigError(f"{flag}: {err}") from None
    if credentials is not None:
        first = next(iter(found.items()), None)
        if first is not None and first[1] != credentials:
            raise ConfigError(f"{flag}: the credentials in its URI differ from those in {first[0]}'s; a command "
                              "uses one set (give it once, or through the environment)")
        found.setdefault(flag, credentials)
    return clean


def _export(found: dict[str, tuple[str, str]]) -> None:
    """Set the credentials in the environment, refusing ones that differ from variables already set."""
    flag, (key, secret) = next(iter(found.items()))
    wanted = {ACCESS_KEY: key, SECRET_KEY: secret}
    clashing = [name for name, value in wanted.items() if os.environ.get(name) and os.environ[name] != value]
    if os.environ.get(SESSION_TOKEN) and os.environ.get(ACCESS_KEY) != key:  # a token of other credentials
        clashing.append(SESSION_TOKEN)
    if clashing:
        raise ConfigError(f"{flag}: the credentials in its URI differ from {' / '.join(clashing)} already set in the "
                          "environment; give them in one place (the environment, or the URI with those unset)")
    taken = [name for name in wanted if not os.environ.get(name)]
    os.environ.update(wanted)
    forwarded = set(forwarded_environment()) | set(taken)
    if forwarded:
        os.environ[FORWARD_ENV] = ",".join(sorted(forwarded))

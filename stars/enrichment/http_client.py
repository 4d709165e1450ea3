"""JSON POSTs to OpenAI-compatible endpoints, with timeout and bounded retries.

Shared by the HTTP embedding encoder and the chat tagger, so both retry the same
way: on 429, 5xx, timeouts and connection errors, with exponential backoff
(honouring ``Retry-After``), then fail with an error that names the endpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import urllib.parse
from typing import Callable, Mapping, Optional

import requests

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """An endpoint that refused the request or stayed down; the message names its URL."""


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


@dataclasses.dataclass
class JsonEndpoint:
    """POSTs JSON to ``base_url + path``; the API key is read from ``api_key_env``.

    The key is read at request time, never stored, so a pickled encoder (Beam
    ships them to workers) does not carry the secret.
    """
    base_url: str
    api_key_env: Optional[str] = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self):
        self.base_url = self.base_url.rstrip("/")
        self._session = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_session"] = None  # sockets do not pickle
        return state

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointError(f"{self.base_url}: environment variable "
                                    f"{self.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _delay(self, attempt: int, response=None) -> float:
        delay = self.backoff_s * 2 ** attempt
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after:
            try:
                delay = float(retry_after)
            except ValueError:
                pass  # an HTTP date: keep our own backoff
        return min(max(delay, 0.0), self.max_backoff_s)

    def post(self, path: str, payload: Mapping) -> dict:
        """The JSON reply to ``payload``; raises EndpointError when it never comes."""
        url = self.base_url + "/" + path.lstrip("/")
        headers = self._headers()
        if self._session is None:
            self._session = requests.Session()
        problem = ""
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = self._session.post(url, json=payload, headers=headers,
                                              timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise EndpointError(f"POST {url}: reply is not JSON: "
                                            f"{response.text[:200]!r}") from None
                problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if not _retryable(response.status_code):
                    raise EndpointError(f"POST {url} failed with {problem}")
            if attempt < self.max_retries:
                delay = self._delay(attempt, response)
                log.warning("POST %s: %s; retry %d/%d in %.1fs", url, problem,
                            attempt + 1, self.max_retries, delay)
                self.sleep(delay)
        raise EndpointError(f"POST {url}: endpoint unavailable after "
                            f"{self.max_retries + 1} attempts ({problem})")


# Spec options shared by every HTTP-backed encoder or tagger: name -> parser.
ENDPOINT_OPTIONS = {"model": str, "api_key_env": str, "batch_size": int,
                    "timeout": float, "retries": int}


def parse_endpoint_url(url: str, options: Mapping[str, Callable]) -> tuple:
    """``http://host:port/v1?model=M&...`` -> (base URL without query, {option: value}).

    Unknown options are an error rather than passed on, so a typo cannot
    silently fall back to a default.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    values = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in options:
            raise ValueError(f"unknown option {key!r} in {url!r}; known: "
                             f"{', '.join(sorted(options))}")
        try:
            values[key] = options[key](value)
        except ValueError:
            raise ValueError(f"bad value {value!r} for option {key!r} in {url!r}") from None
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return base.rstrip("/"), values

"""A client for the OpenAI-compatible chat-completions API (POST <base_url>/chat/completions), as
vLLM, llama.cpp's server, Ollama, TGI and `transformers serve` speak it. Standard library only
(urllib): one request per call, safe to call from many threads.

- timeouts: `timeout_s` per request (connect and read);
- retries with exponential backoff (backoff_s * 2^attempt, capped, with jitter; a Retry-After
  header is honoured) on 429, 5xx, timeouts and dropped connections only;
- a 401/403 (bad key) or 404 (wrong base_url or model) fails at once with an EndpointError naming
  base_url, model and the key's environment variable; so does a connection refused after the
  retries (nothing listens at base_url);
- a reply that is not JSON, or lacks choices[0].message.content, is a MalformedReply;
- a Budget (max requests, max tokens per run) is checked before each request: when it is spent,
  BudgetExhausted is raised and nothing more is sent;
- `server_identity()`: which server answers (base_url and the model the server itself reports),
  asked once per client; the cache files each reply under it.
The API key is read by the caller from an environment variable and never written anywhere."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
_BODY_EXCERPT = 300


class LLMError(RuntimeError):
    """Base of the client's errors."""


class EndpointError(LLMError):
    """The endpoint cannot serve this run (wrong URL, model or key): the whole run stops."""


class RequestFailed(LLMError):
    """One request failed after its retries (timeouts, 429/5xx): that item is counted as failed."""


class MalformedReply(LLMError):
    """The server answered, but not with what was asked for: counted, never cached."""


class BudgetExhausted(LLMError):
    """The run's request or token budget is spent: nothing more is sent."""


@dataclass
class Reply:
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    attempts: int
    model: str | None = None  # the reply's `model` field: the model that answered, as the server names it


@dataclass(frozen=True)
class ServerIdentity:
    """Which server wrote a reply: base_url and the model id the server reports. Not the requested
    name: llama.cpp's server answers with its one model whatever a request's `model` says."""

    base_url: str
    model: str

    @property
    def label(self) -> str:
        """How metadata shows it, and how synthetic.cached_server names it."""
        return f"{self.model} @ {self.base_url}"


@dataclass
class Budget:
    """Per-run limits; None is unlimited. Requests count every HTTP attempt (retries too); tokens
    are the usage the server reports. With several requests in flight a run can overshoot the
    token limit by at most what those requests use."""

    max_requests: int | None = None
    max_tokens: int | None = None
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    exhausted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_request(self) -> None:
        with self._lock:
            spent = (self.max_requests is not None and self.requests >= self.max_requests) or (
                self.max_tokens is not None and self.prompt_tokens + self.completion_tokens >= self.max_tokens)
            if spent:
                self.exhausted = True
                raise BudgetExhausted(f"budget spent: {self.requests} requests (max {self.max_requests}), "
                                      f"{self.prompt_tokens + self.completion_tokens} tokens (max {self.max_tokens})")
            self.requests += 1

    def add_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def add_retry(self) -> None:
        with self._lock:
            self.retries += 1


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, api_key_env: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 1.0, budget: Budget | None = None,
                 extra_body: dict | None = None) -> None:
        if not base_url or not model:
            raise EndpointError("an LLM endpoint needs base_url and model (preset section `synthetic:`)")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.budget = budget or Budget()
        self.extra_body = dict(extra_body or {})
        self._server: ServerIdentity | None = None
        self._server_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _where(self) -> str:
        return f"base_url {self.base_url!r}, model {self.model!r}"

    def _key_hint(self) -> str:
        if self.api_key_env:
            state = "set" if self._api_key else "not set"
            return f"the key is read from the environment variable {self.api_key_env} ({state})"
        return "no API key is configured (synthetic.api_key_env)"

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _request(self, body: bytes) -> urllib.request.Request:
        return urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")

    def server_identity(self) -> ServerIdentity:
        """base_url and the model this server serves, found once per client. GET <base_url>/models
        names it: the requested model when it is listed (vLLM, Ollama), else the only one listed
        (llama.cpp, TGI). A server whose list does not tell (no such route, an error, several models
        without the requested one) is sent one 1-token completion, and its reply's `model` field
        names it (the requested model when the reply has none); that probe counts in the budget, and
        its errors are those of any request (a bad key, a wrong base_url, nothing listening)."""
        with self._server_lock:
            if self._server is None:
                model = self._listed_model()
                if model is None:
                    model = self.complete([{"role": "user", "content": "Reply with OK."}], max_tokens=1).model or self.model
                self._server = ServerIdentity(self.base_url, model)
            return self._server

    def _listed_model(self) -> str | None:
        """The model GET <base_url>/models names for this client's requests; None when it cannot tell."""
        request = urllib.request.Request(f"{self.base_url}/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                listed = [str(entry["id"]) for entry in json.loads(response.read().decode("utf-8"))["data"]]
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            return None  # not a reason to stop: the probe in server_identity asks the chat route instead
        if self.model in listed:
            return self.model
        return listed[0] if len(listed) == 1 else None

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), MAX_BACKOFF_S)
            except ValueError:
                pass
        return min(self.backoff_s * (2 ** attempt), MAX_BACKOFF_S) * (0.5 + random.random() / 2)

    def complete(self, messages: list[dict], max_tokens: int, temperature: float = 0.0, top_p: float | None = None,
                 seed: int | None = None, json_mode: bool = False) -> Reply:
        payload = {"model": self.model, "messages": messages, "max_tokens": int(max_tokens), "temperature": float(temperature), "stream": False}
        if top_p is not None:
            payload["top_p"] = float(top_p)
        if seed is not None:
            payload["seed"] = int(seed)
        if json_mode:
            payload["response_format"] = {"type": "json_object"}
        payload.update(self.extra_body)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.budget.add_retry()
            self.budget.take_request()
            retry_after = None
            try:
                with urllib.request.urlopen(self._request(body), timeout=self.timeout_s) as response:
                    raw = response.read()
                return self._parse(raw, attempt + 1)
            except urllib.error.HTTPError as error:
                excerpt = error.read()[:_BODY_EXCERPT].decode("utf-8", errors="replace")
                if error.code in (401, 403):
                    raise EndpointError(f"{self._where()}: HTTP {error.code} ({error.reason}): the API key was refused; "
                                        f"{self._key_hint()}. Server said: {excerpt}") from None
                if error.code == 404:
                    raise EndpointError(f"{self._where()}: HTTP 404 at {self.url}: check base_url (it usually ends in /v1) "
                                        f"and that the server serves this model. Server said: {excerpt}") from None
                if error.code not in RETRYABLE_STATUS:
                    raise EndpointError(f"{self._where()}: HTTP {error.code} ({error.reason}), not retried. Server said: {excerpt}") from None
                last_problem = f"HTTP {error.code} ({error.reason})"
                retry_after = error.headers.get("Retry-After") if error.headers else None
            except urllib.error.URLError as error:
                reason = error.reason
                if isinstance(reason, ConnectionRefusedError) or "refused" in str(reason).lower():
                    last_problem = "connection refused"
                elif isinstance(reason, (TimeoutError, socket.timeout)):
                    last_problem = f"no reply within {self.timeout_s:g} s (timeout_s)"
                elif isinstance(reason, socket.gaierror):
                    raise EndpointError(f"{self._where()}: the host of base_url cannot be resolved ({reason})") from None
                else:
                    last_problem = f"connection error ({reason})"
            except (TimeoutError, socket.timeout):
                last_problem = f"no reply within {self.timeout_s:g} s (timeout_s)"
            except (ConnectionError, http.client.HTTPException) as error:
                last_problem = f"connection dropped ({type(error).__name__}: {error})"
            if attempt < self.max_retries:
                time.sleep(self._backoff(attempt, retry_after))
        if last_problem == "connection refused":
            raise EndpointError(f"{self._where()}: connection refused after {self.max_retries + 1} attempts: is the server running?")
        raise RequestFailed(f"{self._where()}: {last_problem}, after {self.max_retries + 1} attempts")

    def _parse(self, raw: bytes, attempts: int) -> Reply:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MalformedReply(f"the reply is not JSON ({error}): {raw[:_BODY_EXCERPT]!r}") from None
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise MalformedReply(f"the reply has no choices[0].message.content: {json.dumps(data)[:_BODY_EXCERPT]}") from None
        if not isinstance(content, str):
            raise MalformedReply(f"choices[0].message.content is {type(content).__name__}, not text")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        self.budget.add_usage(prompt_tokens, completion_tokens)
        model = data.get("model")
        return Reply(content, prompt_tokens, completion_tokens, choice.get("finish_reason"), attempts,
                     model if isinstance(model, str) and model else None)

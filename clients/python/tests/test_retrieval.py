"""RetrievalService through the blocking client: collections, upserts, search,
filters, ratings and recommendations, checked against NumPy on the same vectors."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import numpy as np
import pytest
from helpers import texts

import marquee

GENRES = [["Drama"], ["Horror", "Thriller"], ["Comedy"], ["Horror"]]


def item(i: int, text: str) -> marquee.Item:
    return marquee.Item(
        f"t{i:02d}",
        text,
        {"year": 1980 + i, "genres": GENRES[i % 4], "rating": i / 4, "short": len(text) < 40, "lang": "en"},
    )


@pytest.fixture(scope="module")
def corpus(minilm_reference: Dict[str, Any]) -> List[str]:
    return texts(minilm_reference, 20)


@pytest.fixture(scope="module")
def films(client: marquee.Client, corpus: List[str]) -> Iterator[str]:
    """A cosine collection bound to minilm holding the corpus as t00..t19."""
    info = client.create_collection("films", 384, model="minilm")
    assert (info.name, info.dimension, info.model, info.items) == ("films", 384, "minilm", 0)
    assert info.metric == marquee.Metric.Value("METRIC_COSINE")
    assert info.index.WhichOneof("kind") == "exact"
    # A generator, in messages of 6, 6, 6 and 2 items.
    assert client.upsert("films", (item(i, t) for i, t in enumerate(corpus)), batch_size=6) == len(corpus)
    yield "films"
    client.delete_collection("films")
    with pytest.raises(marquee.NotFound):
        client.get_collection("films")


def test_collections_are_listed(client: marquee.Client, films: str, corpus: List[str]) -> None:
    info = client.get_collection(films)
    assert info.items == len(corpus)
    assert films in [c.name for c in client.list_collections()]
    with pytest.raises(marquee.AlreadyExists):
        client.create_collection(films, 384)
    with pytest.raises(ValueError):
        client.create_collection("bad", 4, metric="manhattan")


def test_search_by_text_vector_and_item(client: marquee.Client, films: str, corpus: List[str]) -> None:
    vectors = client.embed(corpus, model="minilm")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in (0, 7, 13):
        by_text = client.search(films, corpus[i], k=5)
        expected = np.argsort(-(unit @ unit[i]), kind="stable")[:5]
        assert [h.id for h in by_text] == [f"t{j:02d}" for j in expected]
        assert by_text[0].score == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose([h.score for h in by_text], (unit @ unit[i])[expected], atol=1e-5)
        by_vector = client.search(films, vectors[i], k=5)
        assert [h.id for h in by_vector] == [h.id for h in by_text]
        by_item = client.search(films, item_id=f"t{i:02d}", k=4)
        assert [h.id for h in by_item] == [h.id for h in by_text[1:]]
    with pytest.raises(marquee.NotFound):
        client.search(films, item_id="nope")
    with pytest.raises(marquee.InvalidArgument):
        client.search(films, [1.0, 2.0])
    with pytest.raises(ValueError):
        client.search(films)


def test_search_filters_and_payloads(client: marquee.Client, films: str, corpus: List[str]) -> None:
    hits = client.search(
        films,
        corpus[3],
        k=20,
        filter={"genres": marquee.Contains("Horror"), "year": marquee.Range(gte=1983, lt=1995), "lang": "en"},
        with_payload=True,
    )
    expected = {f"t{i:02d}" for i in range(3, 15) if "Horror" in GENRES[i % 4]}
    assert {h.id for h in hits} == expected
    for h in hits:
        i = int(h.id[1:])
        assert h.payload == {
            "year": 1980 + i,
            "genres": GENRES[i % 4],
            "rating": i / 4,
            "short": len(corpus[i]) < 40,
            "lang": "en",
        }
    pairs = client.search(
        films, corpus[0], k=20, filter=[("year", marquee.Range(gt=1990)), ("year", marquee.Range(lte=1992))]
    )
    assert {h.id for h in pairs} == {"t11", "t12"}
    assert all(h.payload == {} for h in pairs)
    assert [h.id for h in client.search(films, corpus[0], k=20, filter={"short": True, "rating": 0.5})] == ["t02"] * (
        len(corpus[2]) < 40
    )
    with pytest.raises(marquee.InvalidArgument):
        client.search(films, corpus[0], filter={"no_such_field": 1})


def test_get_and_delete(client: marquee.Client, corpus: List[str]) -> None:
    client.create_collection("scratch", 384, model="minilm", index=marquee.Hnsw(m=8, ef_construction=50))
    assert client.upsert("scratch", [item(i, t) for i, t in enumerate(corpus[:5])]) == 5
    got = client.get("scratch", ["t01", "nope", "t03"], with_vectors=True)
    assert [i.id for i in got.items] == ["t01", "t03"] and got.missing == ["nope"]
    vectors = client.embed([corpus[1], corpus[3]], model="minilm")
    for stored, vector in zip(got.items, vectors):
        assert stored.vector is not None
        np.testing.assert_allclose(stored.vector, vector / np.linalg.norm(vector), atol=1e-6)
        assert stored.payload["lang"] == "en"
    assert client.get("scratch", ["t01"]).items[0].vector is None
    assert client.delete("scratch", ["t01", "t02", "nope"]) == 2
    assert client.get_collection("scratch").items == 3
    client.delete_collection("scratch")


def test_vector_collections_with_numpy(client: marquee.Client) -> None:
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((50, 8)).astype(np.float32)
    info = client.create_collection("points", 8, metric="l2")
    assert info.metric == marquee.Metric.Value("METRIC_L2")
    client.upsert("points", (marquee.Item(f"p{i:02d}", row) for i, row in enumerate(rows)), batch_size=16)
    query = rng.standard_normal(8).astype(np.float32)
    hits = client.search("points", query, k=5)
    distances = ((rows - query) ** 2).sum(axis=1)
    assert [h.id for h in hits] == [f"p{i:02d}" for i in np.argsort(distances)[:5]]
    np.testing.assert_allclose([h.score for h in hits], -np.sort(distances)[:5], rtol=1e-5)
    client.delete_collection("points")


def test_upsert_errors(client: marquee.Client, corpus: List[str]) -> None:
    client.create_collection("partial", 384, model="minilm")

    def failing() -> Iterator[marquee.Item]:
        for i, t in enumerate(corpus[:4]):
            yield item(i, t)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        client.upsert("partial", failing(), batch_size=2)
    # The messages sent before the failure may be stored; nothing after it is.
    assert client.get_collection("partial").items <= 4
    with pytest.raises(TypeError):
        client.upsert("partial", [("t00", corpus[0])])  # type: ignore[list-item]
    with pytest.raises(marquee.InvalidArgument):
        client.upsert("partial", [marquee.Item("v", [1.0, 2.0])])
    with pytest.raises(marquee.NotFound):
        client.upsert("nope", [item(0, corpus[0])])
    with pytest.raises(ValueError):
        client.upsert("partial", [], batch_size=0)
    assert client.upsert("partial", iter([])) == 0
    assert client.record_ratings("partial", []) == 0
    client.delete_collection("partial")


def test_ratings_and_recommendations(client: marquee.Client, films: str, corpus: List[str]) -> None:
    ratings = [
        marquee.Rating("u1", "t00", 5.0, 100),
        marquee.Rating("u1", "t01", 4.5, 101),
        marquee.Rating("u1", "t02", 1.0, 102),
        marquee.Rating("u2", "t05", 4.0, 100),
        marquee.Rating("u1", "t03", 2.0, 103),
    ]
    assert client.record_ratings(films, ratings, batch_size=2) == len(ratings)
    info = client.get_collection(films)
    assert (info.users, info.ratings) == (2, len(ratings))

    recommended = client.recommend(films, user_id="u1", k=5, with_payload=True)
    vectors = client.embed(corpus, model="minilm")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    profile = unit[[0, 1]].mean(axis=0)
    scores = unit @ profile
    seen = {0, 1, 2, 3}
    expected = [j for j in np.argsort(-scores, kind="stable") if j not in seen][:5]
    assert [h.id for h in recommended] == [f"t{j:02d}" for j in expected]
    np.testing.assert_allclose([h.score for h in recommended], scores[expected] / np.linalg.norm(profile), atol=1e-5)
    assert recommended[0].payload["lang"] == "en"

    inline = client.recommend(films, ratings={"t00": 5.0, "t01": 4.5, "t02": 1.0, "t03": 2.0}, k=5)
    assert [(h.id, round(h.score, 5)) for h in inline] == [(h.id, round(h.score, 5)) for h in recommended]
    with_seen = client.recommend(films, user_id="u1", k=3, exclude_seen=False, min_rating=5.0)
    assert with_seen[0].id == "t00" and with_seen[0].score == pytest.approx(1.0, abs=1e-5)
    filtered = client.recommend(films, user_id="u1", k=20, filter={"genres": marquee.Contains("Comedy")})
    assert {h.id for h in filtered} == {f"t{i:02d}" for i in range(20) if GENRES[i % 4] == ["Comedy"]} - {"t02"}
    with pytest.raises(marquee.NotFound):
        client.recommend(films, user_id="nobody")
    with pytest.raises(marquee.FailedPrecondition):
        client.recommend(films, ratings={"t02": 1.0})
    with pytest.raises(ValueError):
        client.recommend(films)

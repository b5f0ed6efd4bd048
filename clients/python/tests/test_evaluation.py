"""EvaluationService through the blocking client: the server's reports equal metrics
computed here from the same server's rankings."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
from helpers import texts

import marquee

CUTOFFS = (1, 3, 10)


@pytest.fixture(scope="module")
def corpus(minilm_reference: Dict[str, Any]) -> List[str]:
    return texts(minilm_reference, 40)


@pytest.fixture(scope="module")
def shelf(client: marquee.Client, corpus: List[str]) -> Iterator[str]:
    """A collection of the first 20 texts, as d00..d19."""
    client.create_collection("shelf", 384, model="minilm")
    client.upsert("shelf", [marquee.Item(f"d{i:02d}", t) for i, t in enumerate(corpus[:20])])
    yield "shelf"
    client.delete_collection("shelf")


def expected_metrics(ranked: List[List[str]], relevant: List[List[str]]) -> Dict[str, float]:
    """Mean Recall@K, NDCG@K (linear gain, log2 discount), MRR and MRR@K over queries."""
    totals: Dict[str, float] = {}
    for ranking, rel in zip(ranked, relevant):
        ranks = sorted(ranking.index(r) + 1 for r in rel if r in ranking)
        first = ranks[0] if ranks else 0
        values = {"mrr": 1.0 / first if first else 0.0}
        for k in CUTOFFS:
            hits = [r for r in ranks if r <= k]
            dcg = sum(1.0 / math.log2(r + 1) for r in hits)
            ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
            values[f"recall@{k}"] = len(hits) / len(rel)
            values[f"ndcg@{k}"] = dcg / ideal
            values[f"mrr@{k}"] = 1.0 / first if first and first <= k else 0.0
        for name, v in values.items():
            totals[name] = totals.get(name, 0.0) + v
    return {name: v / len(ranked) for name, v in totals.items()}


def test_evaluate_retrieval(client: marquee.Client, shelf: str, corpus: List[str]) -> None:
    rng = np.random.default_rng(3)
    queries = [
        marquee.EvalQuery(f"q{j}", corpus[20 + j], [f"d{i:02d}" for i in rng.choice(20, size=1 + j % 3, replace=False)])
        for j in range(12)
    ]
    # One query by vector.
    vector = client.embed(corpus[35], model="minilm")[0]
    queries.append(marquee.EvalQuery("qv", vector, ["d04", "d05"]))
    progress: List[Tuple[int, int]] = []
    report = client.evaluate_retrieval(
        shelf,
        iter(queries),
        cutoffs=CUTOFFS,
        per_query=True,
        batch_size=5,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert report.queries == len(queries)
    ranked = [[h.id for h in client.search(shelf, q.query, k=20)] for q in queries]
    expected = expected_metrics(ranked, [list(q.relevant) for q in queries])
    assert set(expected) <= set(report.metrics.values)
    for name, value in expected.items():
        assert report.metrics.values[name] == pytest.approx(value, abs=1e-6), name
    first = {p.query_id: p.first_relevant_rank for p in report.per_query}
    for q, ranking in zip(queries, ranked):
        assert first[q.query_id] == min(ranking.index(r) + 1 for r in q.relevant)
    assert progress and progress[-1] == (len(queries), len(queries))

    with pytest.raises(marquee.InvalidArgument):
        client.evaluate_retrieval(shelf, [marquee.EvalQuery("bad", "text", ["no-such-item"])])
    with pytest.raises(marquee.NotFound):
        client.evaluate_retrieval("nope", queries)


def test_evaluate_recommendations(client: marquee.Client, shelf: str) -> None:
    rng = np.random.default_rng(11)
    ratings: List[marquee.Rating] = []
    histories: Dict[str, List[marquee.Rating]] = {}
    for u in range(6):
        items = rng.permutation(20)[:8]
        history = [marquee.Rating(f"u{u}", f"d{i:02d}", 5.0 if n < 6 else 2.0, 1000 + n) for n, i in enumerate(items)]
        histories[f"u{u}"] = history
        ratings.extend(history)
    ratings.extend(marquee.Rating("sparse", f"d{i:02d}", 5.0, 1) for i in range(3))
    # Every item is rated, so the catalog is the whole collection, as recommend ranks it.
    ratings.extend(marquee.Rating("catalog", f"d{i:02d}", 1.0, 1) for i in range(20))
    assert client.record_ratings(shelf, ratings) == len(ratings)

    progress: List[Tuple[int, int]] = []
    report = client.evaluate_recommendations(
        shelf, cutoffs=(1, 5), progress=lambda done, total: progress.append((done, total))
    )
    # u0..u5 have 6 high ratings; "sparse" has 3 and "catalog" none.
    assert (report.queries, report.skipped) == (6, 2)
    hits = {1: 0, 5: 0}
    for history in histories.values():
        held_out = max((r for r in history if r.rating >= 4.0), key=lambda r: (r.timestamp, r.item_id))
        training = {r.item_id: r.rating for r in history if r is not held_out}
        ranking = [h.id for h in client.recommend(shelf, ratings=training, k=20)]
        for k in hits:
            hits[k] += held_out.item_id in ranking[:k]
    for k, n in hits.items():
        assert report.metrics.values[f"recall@{k}"] == pytest.approx(n / 6, abs=1e-9)
        assert 0.0 <= report.baseline.values[f"recall@{k}"] <= 1.0
    assert progress[-1][0] == progress[-1][1]
    with pytest.raises(marquee.NotFound):
        client.evaluate_recommendations("nope")


def test_evaluate_generation(client: marquee.Client) -> None:
    generated = client.generate("Hi", model="tiny", max_new_tokens=8)
    items = [
        marquee.GenerationEvalItem("same", ["the cat sat on the mat"], candidate="the cat sat on the mat"),
        marquee.GenerationEvalItem("other", ["a dog ran in the park", "the dog runs"], candidate="the dog ran"),
        marquee.GenerationEvalItem(
            "generated",
            ["Hello there"],
            generate=marquee.generate_request("Hi", model="tiny", max_new_tokens=8),
        ),
    ]
    progress: List[Tuple[int, int]] = []
    report = client.evaluate_generation(
        items,
        per_item=True,
        bertscore_model="minilm",
        bertscore_layer=6,
        batch_size=2,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert report.items == 3
    per_item = {i.id: i for i in report.per_item}
    same = per_item["same"]
    assert same.bleu.score == pytest.approx(100.0)
    assert same.rouge["rouge1"].fmeasure == pytest.approx(1.0)
    assert same.rouge["rougeL"].fmeasure == pytest.approx(1.0)
    assert same.bertscore.f1 == pytest.approx(1.0, abs=1e-5)
    other = per_item["other"]
    # "the dog ran" against "a dog ran in the park": 3 of 3 unigrams, 3 of 6 reference
    # unigrams; against "the dog runs": 2 of 3 and 2 of 3. rouge-score takes the best F.
    assert other.rouge["rouge1"].precision == pytest.approx(1.0)
    assert other.rouge["rouge1"].recall == pytest.approx(0.5)
    assert 0.0 < other.bertscore.f1 < 1.0
    assert per_item["generated"].candidate == generated.text
    mean_rouge1 = np.mean([i.rouge["rouge1"].fmeasure for i in report.per_item])
    assert report.rouge["rouge1"].fmeasure == pytest.approx(mean_rouge1)
    assert report.bleu.signature.startswith("nrefs:")
    # Progress counts the candidates the server generates.
    assert progress == [(1, 1)]
    with pytest.raises(marquee.InvalidArgument):
        client.evaluate_generation([marquee.GenerationEvalItem("x", [], candidate="no references")])
    with pytest.raises(ValueError):
        client.evaluate_generation([marquee.GenerationEvalItem("x", ["ref"])])

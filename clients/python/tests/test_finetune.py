"""``fine_tune`` fine-tunes a served encoder on queries against a collection's texts and
serves the result, blocking and async, reporting steps and epochs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from conftest import start_server

import marquee

FILMS = [
    ("jaws", "A great white shark terrorises a seaside resort town.", "big fish eats swimmers at the beach"),
    ("alien", "The crew of a space freighter is hunted by a deadly creature.", "monster loose on a spaceship"),
    ("up", "An old man ties balloons to his house and flies away.", "old guy flies his house with balloons"),
    ("heat", "A detective hunts a crew of professional bank robbers.", "cop chases bank robbers"),
    ("speed", "A bomb on a city bus will explode if it slows down.", "bus with a bomb that cannot slow down"),
    ("coco", "A boy who loves music enters the land of the dead.", "child musician visits the afterlife"),
]


def test_fine_tune_serves_the_result(workdir: Path) -> None:
    server = start_server(workdir, "finetune", ["--data-dir", str(workdir / "finetune-data")])
    try:
        queries = [marquee.EvalQuery(i, q, [i]) for i, _, q in FILMS]
        with marquee.Client(server.grpc, timeout=300) as client:
            client.create_collection("films", 384, model="minilm")
            client.upsert("films", [marquee.Item(i, plot) for i, plot, _ in FILMS])
            steps: List[Tuple[int, int]] = []
            epochs: List[int] = []
            result = client.fine_tune(
                "films",
                base_model="minilm",
                output_model="tuned",
                train=queries[:4],
                validation=queries[4:],
                progress=lambda s, t: steps.append((s, t)),
                on_epoch=lambda e: epochs.append(e.epoch),
                epochs=1,
                batch_size=2,
                learning_rate=5e-5,
                threads=1,
            )
            assert (result.model, result.dimension, result.steps, result.best_epoch) == ("tuned", 384, 2, 1)
            assert steps == [(1, 2), (2, 2)] and epochs == [0, 1]
            assert 0 < result.after.values["mrr"] <= 1
            assert Path(result.path).joinpath("marquee_finetune.json").is_file()
            vector = client.embed(["a shark"], model="tuned")[0]
            assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
            with pytest.raises(marquee.InvalidArgument, match="schedule"):
                client.fine_tune("films", base_model="minilm", output_model="x", train=queries, schedule="warp")

        async def unknown_base() -> None:
            async with marquee.AsyncClient(server.grpc, timeout=60) as aclient:
                await aclient.fine_tune("films", base_model="nope", output_model="y", train=queries)

        with pytest.raises(marquee.NotFound, match="nope"):
            asyncio.run(unknown_base())
    finally:
        server.stop()

"""A collection whose log is damaged mid-way: DATA_LOSS naming the file and byte until
``repair_collection`` reports what keeping its readable history drops and, with
``apply``, keeps it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import Server

import marquee


def test_a_damaged_collection_is_data_loss_until_repaired(workdir: Path) -> None:
    directory = workdir / "damage"
    directory.mkdir()
    server = Server([], directory)
    with marquee.Client(server.grpc, timeout=60) as client:
        client.create_collection("hurt", 4)
        for b in range(3):  # three upserts: three log records
            client.upsert("hurt", [marquee.Item(f"i{b}{j}", [1.0, b + 1.0, j + 1.0, 1.0]) for j in range(5)])
    server.stop()
    log = directory / "data" / "collections" / "hurt" / "wal-0000000001.log"
    data = bytearray(log.read_bytes())
    second = 8 + int.from_bytes(data[0:4], "little")
    data[second + 8 + 3] ^= 0x40  # inside the second record: a valid record follows it
    log.write_bytes(bytes(data))

    server = Server([], directory)
    try:
        with marquee.Client(server.grpc, timeout=60) as client:
            with pytest.raises(marquee.DataLoss, match=f"wal-0000000001.log is damaged at byte {second}"):
                client.get_collection("hurt")
            report = client.repair_collection("hurt")
            assert (report.damaged, report.applied, report.offset) == (True, False, second)
            assert (report.records_dropped, report.items_upserted_dropped) == (1, 5)
            assert report.bytes_dropped == len(data) - second
            assert report.actions == [f"cut wal-0000000001.log to {second} bytes"]
            with pytest.raises(marquee.DataLoss):
                client.search("hurt", [1.0, 1.0, 1.0, 1.0])
            assert client.repair_collection("hurt", apply=True).applied
            assert client.get_collection("hurt").items == 5

            async def intact() -> marquee.v1.retrieval_pb2.RepairCollectionResponse:
                async with marquee.AsyncClient(server.grpc, timeout=60) as aclient:
                    return await aclient.repair_collection("hurt")

            assert not asyncio.run(intact()).damaged
            with pytest.raises(marquee.NotFound):
                client.repair_collection("nope")
    finally:
        server.stop()
    assert log.stat().st_size == second

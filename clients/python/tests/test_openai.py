"""The OpenAI-compatible HTTP API through the official ``openai`` package: embeddings
equal gRPC's and sentence-transformers', chat completions (streamed and not) equal the
gRPC generation's tokens, and every error status the API documents, produced once."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import openai
import pytest
from conftest import QWEN_FIXTURES, Server, start_server
from helpers import chat, cosine, texts

import marquee


def api(server: Server, key: str = "unused") -> openai.OpenAI:
    """An OpenAI client of the server's HTTP API, without the SDK's retries."""
    assert server.http, "the server has no HTTP API"
    return openai.OpenAI(base_url=f"http://{server.http}/v1", api_key=key, max_retries=0, timeout=120)


def openai_messages(messages: List[marquee.Message]) -> List[Dict[str, Any]]:
    """Marquee chat messages as OpenAI's: text parts, and images as data: URIs."""
    converted = []
    for m in messages:
        if isinstance(m.content, str):
            converted.append({"role": m.role, "content": m.content})
            continue
        parts: List[Dict[str, Any]] = []
        for p in m.content:
            if isinstance(p, bytes):
                uri = "data:image/png;base64," + base64.b64encode(p).decode()
                parts.append({"type": "image_url", "image_url": {"url": uri}})
            else:
                parts.append({"type": "text", "text": p})
        converted.append({"role": m.role, "content": parts})
    return converted


def token_ids(logprobs: Any) -> List[int]:
    """The token ids of a ``logprobs.content`` list (tokens written ``token_id:ID``)."""
    return [int(t.token.removeprefix("token_id:")) for t in logprobs.content]


def test_embeddings_equal_grpc_and_sentence_transformers(
    server: Server, client: marquee.Client, minilm_reference: Dict[str, Any]
) -> None:
    batch = texts(minilm_reference, 12)
    grpc = client.embed(batch, model="minilm")
    oai = api(server)
    # Unasked, the SDK asks for base64 and decodes it itself; asked, it hands the
    # base64 over; floats must give the same values.
    for encoding in (openai.NOT_GIVEN, "float", "base64"):
        response = oai.embeddings.create(model="minilm", input=batch, encoding_format=encoding)  # type: ignore[arg-type]
        vectors = np.array(
            [
                np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") if encoding == "base64" else d.embedding
                for d in response.data
            ],
            dtype=np.float32,
        )
        assert np.array_equal(vectors, grpc), encoding
        assert [d.index for d in response.data] == list(range(len(batch)))
        assert response.model == "minilm" and response.usage.prompt_tokens > len(batch)
    reference = {item["text"]: item["embedding"] for item in minilm_reference["items"]}
    for text, vector in zip(batch, grpc):
        assert cosine(vector, reference[text]) >= 0.99999, text
    one = oai.embeddings.create(model="minilm", input=batch[0])
    assert np.array_equal(np.array(one.data[0].embedding, dtype=np.float32), grpc[0])
    models = {m.id for m in oai.models.list()}
    assert {"minilm", "tiny"} <= models


def test_chat_completions_equal_the_grpc_generation(
    server: Server, client: marquee.Client, qwen_expected: Dict[str, Any]
) -> None:
    oai = api(server)
    for i in range(len(qwen_expected["chat"])):
        prompt = chat(qwen_expected, "nested", i)
        grpc = client.generate(prompt, model="tiny", max_new_tokens=32)
        assert list(grpc.token_ids) == qwen_expected["nested"]["generations"][i]["greedy"]
        stream = oai.chat.completions.create(
            model="tiny",
            messages=openai_messages(prompt),  # type: ignore[arg-type]
            max_tokens=32,
            temperature=0,
            logprobs=True,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, ids, finish, usage = "", [], None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                if choice.logprobs is not None and choice.logprobs.content:
                    ids += token_ids(choice.logprobs)
                finish = choice.finish_reason or finish
        assert ids == list(grpc.token_ids), f"prompt {i}"
        assert text == grpc.text and finish == "length"
        assert usage is not None and usage.completion_tokens == 32
        assert usage.prompt_tokens == grpc.usage.prompt_tokens
        whole = oai.chat.completions.create(
            model="tiny",
            messages=openai_messages(prompt),  # type: ignore[arg-type]
            max_completion_tokens=32,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        choice = whole.choices[0]
        assert choice.message.content == grpc.text and choice.message.role == "assistant"
        assert choice.logprobs is not None and token_ids(choice.logprobs) == list(grpc.token_ids)
        assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
        assert whole.usage is not None and whole.usage.total_tokens == grpc.usage.prompt_tokens + 32


def test_adapters_are_chosen_by_model_name(
    server: Server, client: marquee.Client, qwen_expected: Dict[str, Any]
) -> None:
    flat = client.load_model("flat-http", str(QWEN_FIXTURES / "tiny-flat"))
    try:
        client.load_adapter("lora-http", str(QWEN_FIXTURES / "lora-a"), model=flat.name)
        prompt = openai_messages(chat(qwen_expected, "flat", 0))
        expected = client.generate(chat(qwen_expected, "flat", 0), model="flat-http", max_new_tokens=16, adapter="lora-http")
        oai = api(server)
        for name in ("flat-http:lora-http", "lora-http"):
            response = oai.chat.completions.create(
                model=name,
                messages=prompt,  # type: ignore[arg-type]
                max_tokens=16,
                temperature=0,
                logprobs=True,
            )
            assert response.model == name
            assert token_ids(response.choices[0].logprobs) == list(expected.token_ids), name
        listed = {m.id: m for m in oai.models.list()}
        assert listed["lora-http"].model_extra["parent"] == "flat-http"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            oai.chat.completions.create(model="flat-http:nope", messages=prompt, max_tokens=1)  # type: ignore[arg-type]
    finally:
        client.unload_model("flat-http")


def raw(server: Server, path: str, body: Dict[str, Any], token: Optional[str] = None) -> "urllib.error.HTTPError":
    """POSTs JSON to the HTTP API and returns the error it answers."""
    request = urllib.request.Request(
        f"http://{server.http}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    return caught.value


def error_type(error: openai.APIStatusError) -> str:
    body = error.body
    assert isinstance(body, dict) and {"message", "type", "param", "code"} <= set(body), body
    return str(body["type"])


def test_authentication_statuses(auth_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as missing:
        api(auth_server, key="wrong").embeddings.create(model="minilm", input="x")
    assert missing.value.status_code == 401 and error_type(missing.value) == "authentication_error"
    assert api(auth_server, key="user-secret").embeddings.create(model="minilm", input="x").data
    forbidden = raw(auth_server, "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/x"}, "user-secret")
    assert forbidden.code == 403
    assert json.load(forbidden)["error"]["type"] == "permission_error"


def test_request_statuses(server: Server) -> None:
    oai = api(server)
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], n=2)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}],
        )
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="nope", input="x")
    assert missing.value.status_code == 404 and error_type(missing.value) == "not_found_error"
    with pytest.raises(openai.APIStatusError) as late:
        oai.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=256,
            extra_body={"ignore_eos": True},
            extra_headers={"X-Request-Timeout": "0.002"},
        )
    assert late.value.status_code == 504 and error_type(late.value) == "timeout_error"


@pytest.fixture()
def limited_server(workdir: Path) -> Iterator[Server]:
    """A server taking one call at a time and bodies up to 64 KiB, with the generator."""
    s = start_server(
        workdir,
        "http-limited",
        ["--model", f"tiny={QWEN_FIXTURES / 'tiny-nested'}"],
        env={"MARQUEE_LIMITS__MAX_CONCURRENT_REQUESTS": "1", "MARQUEE_LIMITS__MAX_MESSAGE_BYTES": "65536"},
    )
    yield s
    s.stop()


def test_overload_size_and_drain_statuses(limited_server: Server) -> None:
    oai = api(limited_server)
    with pytest.raises(openai.APIStatusError) as large:
        oai.embeddings.create(model="minilm", input="x" * 100_000)
    assert large.value.status_code == 413
    # Its body was refused unread, so its connection is not reused for the next call.
    assert large.value.response.headers["connection"] == "close"
    # One stream holds the only place: the next call is refused with a retry hint.
    stream = oai.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=400,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    next(chunks)
    with pytest.raises(openai.RateLimitError) as busy:
        oai.embeddings.create(model="minilm", input="x")
    assert busy.value.status_code == 429 and busy.value.response.headers["retry-after"] == "1"
    # Draining: new calls are refused while the stream runs to its end. The listener
    # closes, so a call gets 503 only when it rides a connection the server has not
    # closed yet; otherwise its connection is refused.
    limited_server.begin_shutdown()
    deadline = time.monotonic() + 10
    while True:
        try:
            oai.models.list()
        except openai.InternalServerError as e:
            assert e.status_code == 503 and error_type(e) == "server_error"
            break
        except openai.APIConnectionError as e:
            assert not isinstance(e, openai.APITimeoutError)
            break
        except openai.RateLimitError:
            pass
        assert time.monotonic() < deadline, "no 503 while draining"
        time.sleep(0.05)
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
    assert finish == "length"
    assert limited_server.wait(30) == 0


def test_the_sdk_streams_concurrently(server: Server) -> None:
    """Several streams at once over the HTTP API each get their whole answer."""
    oai = api(server)
    results: Dict[int, str] = {}

    def run(i: int) -> None:
        stream = oai.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"Film {i}?"}], max_tokens=20, temperature=0, stream=True
        )
        results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [0, 1, 2, 3]
    for i in range(4):
        whole = oai.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"Film {i}?"}], max_tokens=20, temperature=0
        )
        assert results[i] == whole.choices[0].message.content

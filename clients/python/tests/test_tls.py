"""TLS and mutual TLS, with certificates made by the ``openssl`` command at test time."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from conftest import Server, start_server

import marquee

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed ({result.returncode}): {result.stderr}"


def make_pki(directory: Path) -> Dict[str, Path]:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate."""
    directory.mkdir()
    files = {
        name: directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
    }
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *key,
        "-keyout",
        str(files["ca.key"]),
        "-out",
        str(files["ca.pem"]),
        "-days",
        "1",
        "-subj",
        "/CN=marquee test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    leaves: Dict[str, List[str]] = {
        "server": ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
        "client": ["extendedKeyUsage=clientAuth"],
    }
    for name, extensions in leaves.items():
        csr = directory / f"{name}.csr"
        ext = directory / f"{name}.ext"
        openssl(
            "req",
            "-new",
            *key,
            "-keyout",
            str(files[f"{name}.key"]),
            "-out",
            str(csr),
            "-subj",
            f"/CN=marquee test {name}",
        )
        ext.write_text("\n".join(extensions) + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(files["ca.pem"]),
            "-CAkey",
            str(files["ca.key"]),
            "-CAcreateserial",
            "-out",
            str(files[f"{name}.pem"]),
            "-days",
            "1",
            "-extfile",
            str(ext),
        )
    return files


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Dict[str, Path]:
    return make_pki(workdir / "pki")


@pytest.fixture(scope="module")
def mtls_server(workdir: Path, pki: Dict[str, Path]) -> Iterator[Server]:
    """A server speaking only TLS, requiring client certificates signed by the test CA."""
    s = start_server(
        workdir,
        "mtls",
        env={
            "MARQUEE_TLS__CERT": str(pki["server.pem"]),
            "MARQUEE_TLS__KEY": str(pki["server.key"]),
            "MARQUEE_TLS__CLIENT_CA": str(pki["ca.pem"]),
        },
    )
    yield s
    s.stop()


def test_mutual_tls(mtls_server: Server, pki: Dict[str, Path]) -> None:
    port = mtls_server.grpc.rsplit(":", 1)[1]
    by_path = marquee.TLSConfig(ca=pki["ca.pem"], cert=str(pki["client.pem"]), key=pki["client.key"])
    with marquee.Client(f"https://localhost:{port}", tls=by_path, timeout=30) as client:
        assert client.embed("over tls").shape == (1, 384)
    by_bytes = marquee.TLSConfig(
        ca=pki["ca.pem"].read_bytes(),
        cert=pki["client.pem"].read_bytes(),
        key=pki["client.key"].read_bytes(),
        server_name="localhost",
    )
    with marquee.Client(mtls_server.grpc, tls=by_bytes, timeout=30) as client:
        assert [m.name for m in client.list_models()] == ["minilm"]

    async def run() -> None:
        async with marquee.AsyncClient(f"https://localhost:{port}", tls=by_path, timeout=30) as client:
            assert (await client.embed(["over tls"])).shape == (1, 384)

    asyncio.run(run())

    without_certificate = marquee.TLSConfig(ca=pki["ca.pem"])
    with marquee.Client(f"https://localhost:{port}", tls=without_certificate, timeout=10) as client:
        with pytest.raises(marquee.Unavailable):
            client.list_models()
    with marquee.Client(f"http://{mtls_server.grpc}", timeout=10) as client:
        with pytest.raises(marquee.Unavailable):
            client.list_models()


def test_tls_settings_are_checked(pki: Dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="https"):
        marquee.Client("http://127.0.0.1:1", tls=True)
    with pytest.raises(ValueError, match="https"):
        marquee.Client("https://127.0.0.1:1", tls=False)
    with pytest.raises(ValueError, match="key"):
        marquee.Client("https://127.0.0.1:1", tls=marquee.TLSConfig(cert=pki["client.pem"]))
    with pytest.raises(ValueError, match="reading"):
        marquee.Client("https://127.0.0.1:1", tls=marquee.TLSConfig(ca="/no/such/ca.pem"))


def test_the_http_api_over_mutual_tls(mtls_server: Server, pki: Dict[str, Path]) -> None:
    """The HTTP API takes the same certificates: HTTPS with a client certificate works
    through the openai SDK; without one the handshake fails."""
    import ssl

    import openai

    assert mtls_server.http, "the server has no HTTP API"
    port = mtls_server.http.rsplit(":", 1)[1]
    base_url = f"https://localhost:{port}/v1"
    with_certificate = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    with_certificate.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    without_certificate = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    for context, works in ((with_certificate, True), (without_certificate, False)):
        http = openai.DefaultHttpx2Client(verify=context)
        api = openai.OpenAI(base_url=base_url, api_key="unused", http_client=http, max_retries=0)
        if works:
            response = api.embeddings.create(model="minilm", input="over tls", encoding_format="float")
            assert len(response.data[0].embedding) == 384
        else:
            with pytest.raises(openai.APIConnectionError):
                api.embeddings.create(model="minilm", input="no certificate")
        api.close()

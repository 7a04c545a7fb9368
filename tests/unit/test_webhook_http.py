"""The webhook sender's HTTP/1.1 client against real servers on 127.0.0.1 that answer in the shapes
HTTP allows: kept-alive reuse, chunked and close-delimited bodies, 1xx, a server that drops an idle
connection, large answers, garbage, header injection, and TLS verified for the URL's host name
while the connection goes to the checked address."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cms.app.webhooks.http import MAX_DRAIN, ProtocolError, WebhookHttp

Answerer = Callable[[int, bytes], bytes]  # (request number on this connection, request) -> raw answer


class RawServer:
    """Reads one request (headers + Content-Length body) at a time and writes what `answer` says;
    `b""` closes the connection instead."""

    def __init__(self, answer: Answerer, ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                raw = self.answer(n, request)
                n += 1
                if not raw:
                    break
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def client() -> AsyncIterator[WebhookHttp]:
    http = WebhookHttp(per_target=2)
    yield http
    await http.aclose()


async def _post(http: WebhookHttp, port: int, body: bytes = b'{"a":1}', **kw: object) -> tuple[int, bytes]:
    answer = await http.post("http", "127.0.0.1", port, "127.0.0.1", f"127.0.0.1:{port}", "/hook?x=1",
                             [("webhook-id", "msg_1")], body, **kw)  # type: ignore[arg-type]
    return answer.status, answer.body


async def test_keeps_the_connection_alive_and_sends_a_well_formed_request(client: WebhookHttp) -> None:
    async with RawServer(lambda n, req: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as server:
        assert await _post(client, server.port) == (200, b"ok")
        assert await _post(client, server.port, b"second") == (200, b"ok")
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{server.port}\r\n".encode() in first and b"webhook-id: msg_1\r\n" in first
        assert first.endswith(b'content-length: 7\r\n\r\n{"a":1}')


async def test_chunked_answers_with_trailers_and_the_kept_prefix(client: WebhookHttp) -> None:
    body = b"x" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:]))
    raw = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nX-Trailer: 1\r\n\r\n"
    async with RawServer(lambda n, req: raw) as server:
        assert await _post(client, server.port) == (500, b"x" * 1024)
        assert await _post(client, server.port) == (500, b"x" * 1024)
        assert server.connections == 1  # read to its end: reused


async def test_connection_close_and_close_delimited_bodies_open_a_new_connection(client: WebhookHttp) -> None:
    answers = [b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.0 202 Accepted\r\n\r\nuntil the end"]
    async with RawServer(lambda n, req: answers[len(server.requests) - 1] if len(server.requests) <= 2 else b"") as server:
        assert await _post(client, server.port) == (201, b"")
        assert await _post(client, server.port) == (202, b"until the end")
        assert server.connections == 2


async def test_interim_answers_are_skipped(client: WebhookHttp) -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    async with RawServer(lambda n, req: raw) as server:
        assert await _post(client, server.port) == (204, b"")


async def test_an_idle_connection_the_server_dropped_is_retried_once_on_a_new_one(client: WebhookHttp) -> None:
    # The server answers one request per connection and then closes it without saying so.
    async with RawServer(lambda n, req: b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1" if n == 0 else b"") as server:
        assert await _post(client, server.port) == (200, b"1")
        await asyncio.sleep(0.05)
        assert await _post(client, server.port) == (200, b"1")
        assert server.connections == 2


async def test_a_large_answer_is_cut_and_its_connection_dropped(client: WebhookHttp) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_DRAIN + 1) + b"y" * (MAX_DRAIN + 1)
    async with RawServer(lambda n, req: big) as server:
        assert await _post(client, server.port) == (200, b"y" * 1024)
        assert await _post(client, server.port) == (200, b"y" * 1024)
        assert server.connections == 2


@pytest.mark.parametrize("raw", [
    b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
async def test_answers_that_are_not_http_are_protocol_errors(client: WebhookHttp, raw: bytes) -> None:
    async with RawServer(lambda n, req: raw) as server:
        with pytest.raises(ProtocolError):
            await _post(client, server.port)


async def test_header_injection_is_refused_before_anything_is_sent(client: WebhookHttp) -> None:
    async with RawServer(lambda n, req: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
        with pytest.raises(ValueError, match="not a valid header"):
            await client.post("http", "127.0.0.1", server.port, "h", "h", "/", [("x-a", "1\r\nx-b: 2")], b"")
        assert server.requests == []


async def test_a_server_that_closes_without_answering_is_an_error(client: WebhookHttp) -> None:
    async with RawServer(lambda n, req: b"") as server:
        with pytest.raises(ProtocolError, match="without an answer"):
            await _post(client, server.port)


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_tls_is_verified_for_the_url_host_while_connecting_to_the_checked_address(tmp_path: Path) -> None:
    cert_file, key_file = _certificate(tmp_path, "hooks.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    trusting = ssl.create_default_context(cafile=str(cert_file))
    async with RawServer(lambda n, req: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", server_context) as server:
        http = WebhookHttp(ssl_context=trusting)
        try:
            answer = await http.post("https", "127.0.0.1", server.port, "hooks.test", "hooks.test", "/h", [], b"{}")
            assert (answer.status, answer.body) == (200, b"ok")
            assert b"host: hooks.test\r\n" in server.requests[0]
            with pytest.raises(ssl.SSLCertVerificationError):
                await http.post("https", "127.0.0.1", server.port, "other.test", "other.test", "/h", [], b"{}")
        finally:
            await http.aclose()
        untrusting = WebhookHttp()  # the system's roots do not know this certificate
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await untrusting.post("https", "127.0.0.1", server.port, "hooks.test", "hooks.test", "/h", [], b"{}")
        finally:
            await untrusting.aclose()


async def test_a_connection_with_an_extra_answer_is_not_reused(client: WebhookHttp) -> None:
    two = (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    async with RawServer(lambda n, req: two if len(server.requests) == 1
                         else b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n") as server:
        assert await _post(client, server.port) == (500, b"")
        await asyncio.sleep(0.05)
        # The stray 200 is not taken for the next delivery's answer: a new connection is.
        assert await _post(client, server.port) == (201, b"")
        assert server.connections == 2


async def test_a_path_beyond_ascii_goes_out_percent_encoded(client: WebhookHttp) -> None:
    async with RawServer(lambda n, req: b"HTTP/1.1 204 No Content\r\n\r\n") as server:
        answer = await client.post("http", "127.0.0.1", server.port, "h", "h", "/hooks/日本?q=café&x=%41", [], b"")
        assert answer.status == 204
        assert server.requests[0].startswith(b"POST /hooks/%E6%97%A5%E6%9C%AC?q=caf%C3%A9&x=%41 HTTP/1.1\r\n")

"""TLS, mutual TLS and bearer-token auth on both receivers, through the OTel SDK exporters' own
settings (`credentials=` / `certificate_file=` / `headers=`, and OTEL_EXPORTER_OTLP_CERTIFICATE /
OTEL_EXPORTER_OTLP_HEADERS), over a throwaway CA made with the `openssl` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from receiver_fixtures import (
    REPO,
    ServeProcess,
    assert_stored_exactly,
    make_spans,
    running_receiver,
    span_count,
)

from choreoscope.collector import store
from choreoscope.collector.tls_auth import SecurityConfigError, exposure_warning, load_security

TOKEN = "s3cret-token-4711"
SUCCESS, FAILURE = SpanExportResult.SUCCESS, SpanExportResult.FAILURE
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a client
    certificate from another CA, as PEM files in one directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / "openssl.cnf").write_text(OPENSSL_CONFIG)
        self.ca, self.ca_key = self._ca("ca")
        self.server, self.server_key = self._leaf("server", "server", self.ca, self.ca_key)
        self.client, self.client_key = self._leaf("client", "client", self.ca, self.ca_key)
        other_ca, other_key = self._ca("other-ca")
        self.stranger, self.stranger_key = self._leaf("stranger", "client", other_ca, other_key)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.root, check=True, capture_output=True)

    def _ca(self, name: str) -> tuple[str, str]:
        self._openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", "-newkey", "ec",
                      "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                      "-subj", f"/CN=choreoscope test {name}", "-keyout", f"{name}.key", "-out", f"{name}.pem")
        return str(self.root / f"{name}.pem"), str(self.root / f"{name}.key")

    def _leaf(self, name: str, section: str, ca: str, ca_key: str) -> tuple[str, str]:
        self._openssl("req", "-config", "openssl.cnf", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-subj", f"/CN={'localhost' if section == 'server' else name}",
                      "-keyout", f"{name}.key", "-out", f"{name}.csr")
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                      "-days", "2", "-extfile", "openssl.cnf", "-extensions", section, "-out", f"{name}.pem")
        return str(self.root / f"{name}.pem"), str(self.root / f"{name}.key")

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def token_file(tmp_path) -> str:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")  # whitespace around it is not part of the token
    return str(path)


@pytest.fixture(autouse=True)
def no_otlp_env(monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's `verify`, which is where
    # the HTTP exporter puts certificate_file / OTEL_EXPORTER_OTLP_CERTIFICATE: unset them here.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE",
                 "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        monkeypatch.delenv(name, raising=False)


def secured(tmp_path, pki: Pki, token_file: str | None, tls: bool = True, mtls: bool = False):
    security = load_security(pki.server if tls else None, pki.server_key if tls else None,
                             pki.ca if mtls else None, token_file)
    return running_receiver(tmp_path, security=security)


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def grpc_export(rec, spans, token: str | None, tls: bool = True, trust: Pki | None = None,
                client: tuple[str, str] | None = None) -> SpanExportResult:
    kwargs = {}
    if tls:
        kwargs["credentials"] = grpc.ssl_channel_credentials(
            root_certificates=trust.read(trust.ca) if trust else None,
            private_key=trust.read(client[1]) if client else None,
            certificate_chain=trust.read(client[0]) if client else None)
    else:
        kwargs["insecure"] = True
    exporter = GrpcExporter(endpoint=rec.grpc_address, headers=bearer(token), timeout=3, **kwargs)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def http_export(rec, spans, token: str | None, tls: bool = True, trust: Pki | None = None,
                client: tuple[str, str] | None = None) -> SpanExportResult:
    url = rec.http_url if tls else rec.http_url.replace("https://", "http://")
    exporter = HttpExporter(endpoint=url, certificate_file=trust.ca if trust else None,
                            client_certificate_file=client[0] if client else None,
                            client_key_file=client[1] if client else None,
                            headers=bearer(token), timeout=3)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


EXPORTS = {"grpc": grpc_export, "http": http_export}


# -- the matrix: TLS + token ----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize(("case", "token", "tls", "expected"), [
    ("right token", TOKEN, True, SUCCESS),
    ("wrong token", "not-the-token", True, FAILURE),
    ("no token", None, True, FAILURE),
    ("plain text to the TLS port", TOKEN, False, FAILURE),
])
def test_tls_and_token_matrix(tmp_path, pki, token_file, protocol, case, token, tls, expected):
    spans = make_spans(tag=f"-{protocol}-{case}")
    with secured(tmp_path, pki, token_file) as rec:
        assert rec.http_url.startswith("https://")
        result = EXPORTS[protocol](rec, spans, token, tls=tls, trust=pki)
        assert result == expected, case
        if expected == SUCCESS:
            assert span_count(rec.con) == len(spans)
            assert_stored_exactly(rec.con, spans, source=f"otlp-{protocol}")
        else:
            assert span_count(rec.con) == 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_certificate_the_exporter_does_not_trust_fails(tmp_path, pki, token_file, protocol):
    with secured(tmp_path, pki, token_file) as rec:
        assert EXPORTS[protocol](rec, make_spans(), TOKEN, trust=None) == FAILURE  # system roots only
        assert span_count(rec.con) == 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_exporters_configured_by_the_environment(tmp_path, pki, token_file, protocol, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{TOKEN}")
    spans = make_spans(tag=f"-env-{protocol}")
    with secured(tmp_path, pki, token_file) as rec:
        if protocol == "grpc":
            exporter = GrpcExporter(endpoint=f"https://{rec.grpc_address}", timeout=5)
        else:
            exporter = HttpExporter(endpoint=rec.http_url, timeout=5)
        assert exporter.export(spans) == SUCCESS
        exporter.shutdown()
        assert_stored_exactly(rec.con, spans, source=f"otlp-{protocol}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20wrong")
        exporter = GrpcExporter(endpoint=f"https://{rec.grpc_address}", timeout=5) if protocol == "grpc" \
            else HttpExporter(endpoint=rec.http_url, timeout=5)
        assert exporter.export(make_spans(tag="-env-wrong")) == FAILURE
        exporter.shutdown()
        assert span_count(rec.con) == len(spans)


# -- mutual TLS -----------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize(("case", "client", "expected"), [
    ("client certificate from the CA", "client", SUCCESS),
    ("no client certificate", None, FAILURE),
    ("client certificate from another CA", "stranger", FAILURE),
])
def test_mutual_tls_matrix(tmp_path, pki, token_file, protocol, case, client, expected):
    pair = {"client": (pki.client, pki.client_key), "stranger": (pki.stranger, pki.stranger_key)}.get(client)
    spans = make_spans(tag=f"-mtls-{protocol}-{client}")
    with secured(tmp_path, pki, token_file, mtls=True) as rec:
        assert EXPORTS[protocol](rec, spans, TOKEN, trust=pki, client=pair) == expected, case
        assert span_count(rec.con) == (len(spans) if expected == SUCCESS else 0)


def test_mutual_tls_with_the_client_certificate_from_the_environment(tmp_path, pki, token_file, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.client)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.client_key)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {TOKEN}")  # not URL-encoded
    spans = make_spans()
    with secured(tmp_path, pki, token_file, mtls=True) as rec:
        for exporter in (GrpcExporter(endpoint=f"https://{rec.grpc_address}", timeout=5),
                         HttpExporter(endpoint=rec.http_url, timeout=5)):
            assert exporter.export(spans) == SUCCESS
            exporter.shutdown()
        assert span_count(rec.con) == len(spans)  # the second export is stored once


# -- token without TLS (loopback, behind a TLS-terminating proxy) --------------------------------------

@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_token_without_tls(tmp_path, pki, token_file, protocol):
    spans = make_spans()
    with secured(tmp_path, pki, token_file, tls=False) as rec:
        assert rec.http_url.startswith("http://")
        assert EXPORTS[protocol](rec, spans, "wrong", tls=False) == FAILURE
        assert span_count(rec.con) == 0
        assert EXPORTS[protocol](rec, spans, TOKEN, tls=False) == SUCCESS
        assert span_count(rec.con) == len(spans)


# -- what a refused client is told ----------------------------------------------------------------------

@pytest.mark.parametrize(("token", "why"), [
    (None, "missing Authorization header"),
    ("wrong", "does not match"),
])
def test_grpc_refusal_is_unauthenticated_with_a_reason(tmp_path, pki, token_file, token, why):
    body = encode_spans(make_spans()).SerializeToString()
    with secured(tmp_path, pki, token_file) as rec:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.read(pki.ca))
        with grpc.secure_channel(rec.grpc_address, creds) as channel:
            call = channel.unary_unary(EXPORT_METHOD)
            with pytest.raises(grpc.RpcError) as caught:
                call(body, metadata=tuple(bearer(token).items()), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert why in caught.value.details() and "nothing was stored" in caught.value.details()
            # the right token on the same channel works
            call(body, metadata=tuple(bearer(TOKEN).items()), timeout=5)
        assert span_count(rec.con) > 0


@pytest.mark.parametrize(("headers", "challenge"), [
    ({}, 'Bearer realm="choreoscope"'),
    ({"Authorization": "Bearer wrong"}, 'Bearer realm="choreoscope", error="invalid_token"'),
    ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="choreoscope", error="invalid_token"'),
])
def test_http_refusal_is_401_with_a_bearer_challenge(tmp_path, pki, token_file, headers, challenge):
    body = encode_spans(make_spans()).SerializeToString()
    with secured(tmp_path, pki, token_file) as rec:
        response = requests.post(rec.http_url, data=body, verify=pki.ca, timeout=10,
                                 headers={"Content-Type": "application/x-protobuf", **headers})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == challenge
        status = status_pb2.Status.FromString(response.content)
        assert status.code == code_pb2.UNAUTHENTICATED and "nothing was stored" in status.message
        json_response = requests.post(rec.http_url, data=b"{}", verify=pki.ca, timeout=10,
                                      headers={"Content-Type": "application/json", **headers})
        assert json_response.status_code == 401
        assert json_format.Parse(json_response.text, status_pb2.Status()).code == code_pb2.UNAUTHENTICATED
        # other methods are refused before anything else is said
        assert requests.get(rec.http_url, verify=pki.ca, timeout=10, headers=headers).status_code == 401
        assert span_count(rec.con) == 0


def test_plain_http_to_the_tls_port_gets_no_answer(tmp_path, pki, token_file):
    with secured(tmp_path, pki, token_file) as rec, pytest.raises(requests.ConnectionError):
        requests.post(rec.http_url.replace("https://", "http://"), data=b"{}", timeout=5,
                      headers={"Content-Type": "application/json", **bearer(TOKEN)})


# -- the options -----------------------------------------------------------------------------------

def test_option_errors_are_clear(tmp_path, pki):
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(SecurityConfigError, match="is empty"):
        load_security(bearer_token_file=str(empty))
    with pytest.raises(SecurityConfigError, match="cannot read --bearer-token-file"):
        load_security(bearer_token_file=str(tmp_path / "nope"))
    with pytest.raises(SecurityConfigError, match="go together"):
        load_security(tls_cert=pki.server)
    with pytest.raises(SecurityConfigError, match="needs --tls-cert"):
        load_security(tls_client_ca=pki.ca)
    with pytest.raises(SecurityConfigError, match="cannot read --tls-cert"):
        load_security(str(tmp_path / "missing.pem"), pki.server_key)
    with pytest.raises(SecurityConfigError, match="cannot use --tls-cert"):
        load_security(pki.server, pki.client_key)  # not the certificate's key
    with pytest.raises(SecurityConfigError, match="cannot use --tls-cert"):
        load_security(str(empty), pki.server_key)
    with pytest.raises(SecurityConfigError, match="cannot use --tls-client-ca"):
        load_security(pki.server, pki.server_key, str(empty))


def test_exposure_warning_names_the_risk(pki, token_file):
    plain, full = load_security(), load_security(pki.server, pki.server_key, None, token_file)
    assert exposure_warning("127.0.0.1", plain, dashboard=True) is None
    assert exposure_warning("localhost", plain, dashboard=True) is None
    assert exposure_warning("::1", plain, dashboard=True) is None
    assert exposure_warning("0.0.0.0", full, dashboard=True) is None
    warning = exposure_warning("0.0.0.0", plain, dashboard=True)
    assert "plain text" in warning and "anyone who can reach the ports can write spans" in warning
    assert "read the dashboard" in warning
    token_only = exposure_warning("10.1.2.3", load_security(bearer_token_file=token_file), dashboard=False)
    assert "plain text" in token_only and "anyone" not in token_only


def serve_cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "choreoscope.cli", "serve", "--no-dashboard",
                           "--db", str(tmp_path / "cli.duckdb"), "--grpc-port", "0", "--http-port", "0",
                           *args],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_serve_exits_2_on_a_bad_certificate_or_token_file(tmp_path, pki):
    empty = tmp_path / "empty"
    empty.write_text("")
    for args, message in [
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", pki.server_key], "cannot read --tls-cert"),
        (["--tls-cert", pki.server, "--tls-key", pki.client_key], "cannot use --tls-cert"),
        (["--bearer-token-file", str(empty)], "is empty"),
    ]:
        done = serve_cli(tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "cli.duckdb").exists()  # refused before the store is opened


def test_serve_with_tls_and_token_end_to_end(tmp_path, pki, token_file):
    server = ServeProcess(tmp_path / "serve.duckdb", "--tls-cert", pki.server, "--tls-key", pki.server_key,
                          "--bearer-token-file", token_file)
    try:
        assert server.http_url.startswith("https://")
        spans = make_spans()
        exporter = HttpExporter(endpoint=server.http_url, certificate_file=pki.ca, headers=bearer(TOKEN),
                                timeout=5)
        assert exporter.export(spans) == SUCCESS
        exporter.shutdown()
        exporter = GrpcExporter(endpoint=server.grpc_address, headers=bearer("wrong"), timeout=5,
                                credentials=grpc.ssl_channel_credentials(pki.read(pki.ca)))
        assert exporter.export(spans) == FAILURE
        exporter.shutdown()
    finally:
        server.proc.terminate()
        _, err = server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0, err
    assert f"stopped: {len(spans)} spans stored" in err
    assert "warning" not in err


def test_serve_off_loopback_without_tls_and_token_warns(tmp_path):
    server = ServeProcess(tmp_path / "open.duckdb", "--host", "0.0.0.0")
    server.proc.terminate()
    _, err = server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0, err
    assert "warning: listening on 0.0.0.0, not loopback" in err
    assert "plain text" in err and "--tls-cert" in err and "--bearer-token-file" in err


# -- the dashboard asks for the token ------------------------------------------------------------

@pytest.fixture
def empty_store(tmp_path):
    from choreoscope.dashboard.context_registry import DashboardContext, register

    con = store.connect(tmp_path / "dash.duckdb")
    register(DashboardContext(con=con, db_path=str(tmp_path / "dash.duckdb"), read_only=False))
    yield con
    register(None)
    con.close()


def test_dashboard_gate_asks_for_the_token_before_showing_anything(empty_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from choreoscope.dashboard import server

    monkeypatch.setattr(server, "_required_token", TOKEN)
    at = AppTest.from_file(server.GATE_SCRIPT, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.text_input] == ["Token"]
    assert not at.info  # app.py did not run: nothing about the store is shown
    at.text_input[0].input("wrong")
    at.button[0].click()
    at.run()
    assert [e.value for e in at.error] == ["That is not the token."] and not at.info
    at.text_input[0].input(TOKEN)
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.text_input
    assert any("No spans yet" in i.value for i in at.info)  # the app's overview, as without a gate


# -- the offline dashboard: the same TLS and token options -----------------------------------------

def _offline_dashboard(tmp_path, *options: str) -> tuple[subprocess.Popen, str, list[str]]:
    """`choreoscope dashboard` on an empty store, started and read up to its "dashboard on" line:
    (the process, the URL, its stdout lines so far)."""
    import re
    import socket

    db = tmp_path / "offline.duckdb"
    store.connect(db).close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "choreoscope.cli", "dashboard", str(db), "--port", str(port),
                             *options], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if m := re.match(r"dashboard on (\S+)", line):
            return proc, m.group(1), lines
    proc.wait(timeout=30)
    raise AssertionError("".join(lines) + proc.stderr.read())


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    return err


def test_offline_dashboard_off_loopback_serves_https_and_asks_for_the_token(tmp_path, pki, token_file):
    proc, url, lines = _offline_dashboard(tmp_path, "--host", "0.0.0.0", "--tls-cert", pki.server,
                                          "--tls-key", pki.server_key, "--bearer-token-file", token_file)
    try:
        assert url.startswith("https://") and "(asks for the bearer token)" in lines[-1], lines
        port = url.rsplit(":", 1)[1].strip("/")
        health = requests.get(f"https://127.0.0.1:{port}/_stcore/health", verify=pki.ca, timeout=30)
        assert health.status_code == 200 and health.text == "ok"
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP to the TLS port
            requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=10)
    finally:
        err = _stop(proc)
    assert "warning" not in err, err


def test_offline_dashboard_off_loopback_without_tls_and_token_warns(tmp_path):
    proc, _url, lines = _offline_dashboard(tmp_path, "--host", "0.0.0.0")
    err = _stop(proc)
    assert "(asks for the bearer token)" not in "".join(lines)
    assert "warning: listening on 0.0.0.0, not loopback" in err
    assert "anyone who can reach the port can read the dashboard" in err and "--bearer-token-file" in err
    assert "pages (and the token) cross the network in plain text" in err and "--tls-cert" in err


def test_offline_dashboard_on_loopback_does_not_ask_and_bad_options_exit_2(tmp_path, pki, token_file):
    proc, url, lines = _offline_dashboard(tmp_path, "--bearer-token-file", token_file)
    err = _stop(proc)
    assert url.startswith("http://127.0.0.1") and "(asks for the bearer token)" not in lines[-1]
    assert "warning" not in err
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    db = tmp_path / "offline.duckdb"
    for options, message in ((["--bearer-token-file", str(empty)], "is empty"),
                             (["--tls-cert", pki.server], "--tls-cert and --tls-key go together")):
        result = subprocess.run([sys.executable, "-m", "choreoscope.cli", "dashboard", str(db), *options],
                                cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr

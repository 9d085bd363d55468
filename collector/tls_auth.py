"""TLS and bearer-token auth for the receivers, as the Collector's configtls and bearertokenauth do.

`serve --tls-cert FILE --tls-key FILE [--tls-client-ca FILE]` serves both receivers over TLS
(mutual TLS when a client CA is given: a client without a certificate it signed is refused in
the handshake), and `--bearer-token-file FILE` makes every export carry
`Authorization: Bearer <token>` (gRPC UNAUTHENTICATED, HTTP 401 otherwise). Everything is read
and checked once at start, so a bad path or PEM is a clear error (exit 2), not a traceback on
the first request.
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from dataclasses import dataclass

import grpc


class SecurityConfigError(ValueError):
    """The TLS or token options cannot be used (missing file, bad PEM, empty token, ...)."""


@dataclass(frozen=True)
class ServerSecurity:
    """What `--tls-*` and `--bearer-token-file` resolved to. Files are read once, at start."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    client_ca_pem: bytes | None = None
    token: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert_pem is not None

    @property
    def mtls(self) -> bool:
        return self.client_ca_pem is not None

    def describe(self) -> str:
        """E.g. `TLS, client certificates required, bearer token required` (or `plain text, no auth`)."""
        parts = (["TLS"] + (["client certificates required"] if self.mtls else [])) if self.tls \
            else ["plain text"]
        parts.append("bearer token required" if self.token is not None else "no auth")
        return ", ".join(parts)

    # -- auth ------------------------------------------------------------------------------------

    def auth_error(self, authorization: str | None) -> str | None:
        """None if `authorization` (the header's value) carries the token; else why not."""
        if self.token is None:
            return None
        if not authorization:
            return "missing Authorization header; send `Authorization: Bearer <token>`"
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "Authorization header is not `Bearer <token>`"
        if not hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
            return "bearer token does not match --bearer-token-file"
        return None

    # -- TLS -------------------------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.client_ca_pem,
            require_client_auth=self.mtls)

    def ssl_context(self) -> ssl.SSLContext:
        """The server-side context for tornado (and the check that cert and key go together)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise SecurityConfigError(
                f"cannot use --tls-cert {self.cert_file} with --tls-key {self.key_file}: {_reason(exc)} "
                "(both PEM; the key must be the certificate's, unencrypted)") from exc
        if self.mtls:
            try:
                ctx.load_verify_locations(cafile=self.client_ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise SecurityConfigError(
                    f"cannot use --tls-client-ca {self.client_ca_file}: {_reason(exc)} "
                    "(PEM CA certificates expected)") from exc
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read {option} {path}: {exc.strerror or exc}") from exc


def load_security(tls_cert: str | None = None, tls_key: str | None = None, tls_client_ca: str | None = None,
                  bearer_token_file: str | None = None) -> ServerSecurity:
    """Read and check the files behind the options; SecurityConfigError says what is wrong."""
    if bool(tls_cert) != bool(tls_key):
        raise SecurityConfigError("--tls-cert and --tls-key go together: give both or neither")
    if tls_client_ca and not tls_cert:
        raise SecurityConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    token = None
    if bearer_token_file:
        token = _read(bearer_token_file, "--bearer-token-file").decode("utf-8", "replace").strip()
        if not token:
            raise SecurityConfigError(f"--bearer-token-file {bearer_token_file} is empty; put the token in it")
        if any(c.isspace() for c in token):
            raise SecurityConfigError(f"--bearer-token-file {bearer_token_file} holds more than one word; "
                                      "the token is one line without spaces")
    security = ServerSecurity(
        cert_file=tls_cert, key_file=tls_key, client_ca_file=tls_client_ca,
        cert_pem=_read(tls_cert, "--tls-cert") if tls_cert else None,
        key_pem=_read(tls_key, "--tls-key") if tls_key else None,
        client_ca_pem=_read(tls_client_ca, "--tls-client-ca") if tls_client_ca else None,
        token=token,
    )
    if security.tls:
        security.ssl_context()  # raises on a bad PEM or a key that is not the certificate's
    return security


def security_from_args(args) -> ServerSecurity:
    return load_security(getattr(args, "tls_cert", None), getattr(args, "tls_key", None),
                         getattr(args, "tls_client_ca", None), getattr(args, "bearer_token_file", None))


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, "" or "0.0.0.0": reachable from elsewhere


def exposure_warning(host: str, security: ServerSecurity, dashboard: bool, receiver: bool = True) -> str | None:
    """The warning to print when binding off loopback without TLS and a token (None otherwise).
    `receiver` False: the offline dashboard alone (it serves pages, it takes no spans)."""
    if is_loopback(host):
        return None
    if receiver:
        in_clear = "spans (and any token) cross the network in plain text and can be read or altered"
        open_to = ("anyone who can reach the ports can write spans into the store"
                   + (" and read the dashboard" if dashboard else ""))
    else:
        in_clear = "the pages (and the token) cross the network in plain text"
        open_to = "anyone who can reach the port can read the dashboard: the store's services, traces and findings"
    risks = []
    if not security.tls:
        risks.append(f"without TLS, {in_clear} (--tls-cert/--tls-key)")
    if security.token is None:
        risks.append(f"without a token, {open_to} (--bearer-token-file)")
    if not risks:
        return None
    return f"warning: listening on {host}, not loopback: " + "; ".join(risks) + "."

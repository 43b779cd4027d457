"""TLS towards a server that serves it (``lockstep serve --tls-cert``): the CA the server's
certificate is checked against, and the certificate this client presents when the server asks for
one (``--tls-client-ca``). ``lockstep certs --out DIR`` makes a private CA and certificates to try
it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import grpc


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise OSError(e.errno, f"cannot read the {what} {path}: {e.strerror}") from None


@dataclass(frozen=True)
class Tls:
    """How a client connects over TLS (without it: plain TCP).

    Args:
        ca_file: the CA certificates (PEM) trusted for the server's certificate, and only them.
        cert_file: the client certificate chain (PEM) presented to a server that asks for one.
        key_file: the private key (PEM) of ``cert_file``.
        server_name: check the server's certificate for this name instead of the host connected to.
    """

    ca_file: str
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    server_name: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise TypeError("give both cert_file and key_file, or neither")

    @staticmethod
    def from_env() -> "Optional[Tls]":
        """``$LOCKSTEP_TLS_CA``, ``$LOCKSTEP_TLS_CERT`` and ``$LOCKSTEP_TLS_KEY``, as the
        ``lockstep`` command reads them (``None`` when ``$LOCKSTEP_TLS_CA`` is unset)."""
        ca = os.environ.get("LOCKSTEP_TLS_CA")
        if not ca:
            return None
        return Tls(ca, os.environ.get("LOCKSTEP_TLS_CERT") or None, os.environ.get("LOCKSTEP_TLS_KEY") or None)

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials, the files read now."""
        ca = _read(self.ca_file, "CA certificate file")
        cert = _read(self.cert_file, "client certificate file") if self.cert_file else None
        key = _read(self.key_file, "client key file") if self.key_file else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> List[Tuple[str, Any]]:
        """The channel options TLS needs besides its credentials."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(address: str, options: List[Tuple[str, Any]], tls: "Optional[Tls]",
                 interceptors: Optional[List[Any]] = None) -> grpc.aio.Channel:
    """A channel to ``address``: over TLS when ``tls`` is given, else plain TCP."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.credentials(), options=options + tls.channel_options(),
                                   interceptors=interceptors)

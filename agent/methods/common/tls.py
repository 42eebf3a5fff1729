"""TLS for the HTTP-based methods (``http``, ``responsiveness``): the client context and
how a TLS failure becomes an error result.

Certificates are always verified (there is no switch to turn it off): against the system
store, or only against ``ca_file`` when the test sets one (the province's or the
project's CA), and the server's name (SNI, the URL's host) must match the certificate.
A certificate that fails is the error code ``protocol`` with OpenSSL's reason, e.g.
``TLS certificate of 10.0.0.2 not accepted: IP address mismatch, certificate is not valid
for '10.0.0.2'``.
"""

from __future__ import annotations

import ssl

from agent.methods.common.guard import MeasureError, os_error


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context (TLS 1.2+, HTTP/1.1 by ALPN); raises MeasureError naming
    ``ca_file`` when it cannot be loaded."""
    try:
        # With cafile, only that bundle is trusted (create_default_context loads the
        # system store only when no CA is given): a probe pinned to the province's CA
        # accepts no other.
        ctx = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise MeasureError("protocol", f"ca_file {ca_file} does not exist; set ca_file to "
                                       "the measurement server's CA bundle (PEM)") from None
    except OSError as exc:
        raise MeasureError("protocol", f"ca_file {ca_file} cannot be read: "
                                       f"{exc.strerror}") from None
    except ssl.SSLError as exc:
        raise MeasureError("protocol", f"ca_file {ca_file} is not a PEM CA bundle: "
                                       f"{exc.reason or exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_error(exc: BaseException, host: str, what: str) -> MeasureError:
    """Map a failure of a TLS connection set-up (``what``, e.g. "download connection") to
    a MeasureError: certificate or handshake problems are ``protocol``, a handshake that
    took too long ``timeout``, socket errors as :func:`os_error`."""
    if isinstance(exc, MeasureError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return MeasureError("protocol", f"TLS certificate of {host} not accepted: {reason} "
                                        "(is ca_file the CA that signed the server's "
                                        "certificate, and the URL's host in it?)")
    if isinstance(exc, ssl.SSLError):
        return MeasureError("protocol", f"TLS handshake with {host} failed ({what}): "
                                        f"{exc.reason or exc} (does the port speak TLS?)")
    if isinstance(exc, TimeoutError):
        return MeasureError("timeout", f"TLS handshake with {host} timed out ({what})")
    if isinstance(exc, EOFError):
        return MeasureError("protocol", f"{host} closed the connection during the TLS "
                                        f"handshake ({what})")
    if isinstance(exc, OSError):
        if exc.errno is None:
            return MeasureError("protocol", f"{host} closed the connection during the TLS "
                                            f"handshake ({what}): {exc}")
        return os_error(exc, f"{what} to {host}")
    return MeasureError("protocol", f"TLS set-up with {host} failed ({what}): "
                                    f"{type(exc).__name__}: {exc}")

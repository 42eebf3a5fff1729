"""The provincial measurement server: an nginx serving what the throughput methods need.

* ``/download/blob.bin`` - the ``http`` method's download object (GET it repeatedly);
* ``/upload`` - the ``http`` method's upload sink (POST, body discarded);
* ``/speedtest-config.php`` - a fixed Speedtest configuration (for the speedtest-cli CLI
  comparison through ``http_proxy``);
* ``/speedtest/latency.txt``, ``/speedtest/random{N}x{N}.jpg``, ``/speedtest/upload.php`` -
  the Speedtest legacy HTTP layout that speedtest-cli talks to.

The nginx config comes from ``deploy/ansible/roles/netmon_server/templates/nginx.conf.j2``
rendered with plain Jinja2, so the Ansible role and this module produce the same file.

With ``tls=`` (files from :func:`make_pki`: a throwaway CA generated here with the
``cryptography`` package, never downloaded) the same paths are served over TLS too.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devstack import services
from netmon.fsutil import atomic_writer

TEMPLATE = (Path(__file__).resolve().parent.parent / "deploy" / "ansible" / "roles" /
            "netmon_server" / "templates" / "nginx.conf.j2")
DOWNLOAD_PATH = "/download/blob.bin"
UPLOAD_PATH = "/upload"
SPEEDTEST_DIR = "speedtest"
#: Image sizes of the Speedtest legacy layout (``random{N}x{N}.jpg``).
SPEEDTEST_SIZES = (350, 500, 750, 1000, 1500, 2000, 2500, 3000, 3500, 4000)
LATENCY_TEXT = b"test=test\n"


def speedtest_image_bytes(size: int) -> int:
    """Byte size of ``random{size}x{size}.jpg`` (about what speedtest.net's files weigh)."""
    return size * size * 2


def _write_random(path: Path, nbytes: int, sparse: bool) -> None:
    if path.exists() and path.stat().st_size == nbytes:
        return
    # Atomic: a run interrupted half way leaves no short file that looks finished.
    with atomic_writer(path, mode=0o644) as out:  # served by nginx
        if sparse:
            out.truncate(nbytes)
        else:
            # Random bytes so no compressing proxy on the path can inflate the figures.
            block = os.urandom(1 << 20)
            left = nbytes
            while left > 0:
                n = min(left, len(block))
                out.write(block[:n])
                left -= n


def prepare_webroot(webroot: Path, blob_bytes: int = 256 << 20, sparse: bool = False,
                    speedtest_length_s: int = 10) -> Path:
    """Create (idempotently) the files nginx serves under ``webroot``; return it.

    ``sparse=True`` makes zero-filled sparse files (instant, no disk use) for tests; the
    default writes incompressible data. ``speedtest_length_s`` is the test length in the
    bundled ``speedtest-config.php`` (used only by the speedtest-cli comparison).
    """
    webroot.mkdir(parents=True, exist_ok=True)
    (webroot / "download").mkdir(exist_ok=True)
    _write_random(webroot / DOWNLOAD_PATH.lstrip("/"), blob_bytes, sparse)
    st = webroot / SPEEDTEST_DIR
    st.mkdir(exist_ok=True)
    (st / "latency.txt").write_bytes(LATENCY_TEXT)
    # GET answers with the file; a POST is answered by nginx.conf after reading the body.
    (st / "upload.php").write_bytes(b"size=0\n")
    for size in SPEEDTEST_SIZES:
        _write_random(st / f"random{size}x{size}.jpg", speedtest_image_bytes(size), sparse)
    (webroot / "index.txt").write_text("hatinh-netmon measurement server\n")
    (webroot / "speedtest-config.php").write_text(speedtest_config_xml(speedtest_length_s))
    return webroot


def speedtest_config_xml(length_s: int = 10) -> str:
    """A minimal speedtest-config.php (the shape speedtest.net serves), so that the
    unmodified speedtest-cli command-line tool can be pointed at this server through
    ``http_proxy`` for comparisons, with no request to speedtest.net."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<settings>\n'
        '<client ip="127.0.0.1" lat="18.34" lon="105.9" isp="local" isprating="3.7" '
        'rating="0" ispdlavg="0" ispulavg="0" loggedin="0" country="VN"/>\n'
        '<server-config threadcount="4" ignoreids="" notonmap="" forcepingid="" '
        'preferredserverid=""/>\n'
        f'<download testlength="{length_s}" initialtest="250K" mintestsize="250K" '
        'threadsperurl="4"/>\n'
        f'<upload testlength="{length_s}" ratio="5" initialtest="0" mintestsize="32K" '
        'threads="2" maxchunksize="512K" maxchunkcount="50" threadsperurl="4"/>\n'
        '</settings>\n')


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_pki(directory: Path, names: Sequence[str], days: int = 7,
             ca_name: str = "hatinh-netmon test CA") -> TlsFiles:
    """Generate a CA and a server certificate for ``names`` (host names and/or IP
    addresses, as subjectAltNames) under ``directory``; return the file paths.

    For tests and the local stack only: the keys are unencrypted and the CA lives next to
    them. A deployed server gets its certificate from the project's or the province's PKI.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(subject(ca_name)).issuer_name(subject(ca_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(subject(names[0] if names else "server"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with atomic_writer(files.key, mode=0o600) as out:  # never readable by others
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    return files


def render_nginx_conf(listen: Sequence[str], webroot: Path, pid_file: Path, temp_dir: Path,
                      error_log: Path, access_log: Path | str = "off",
                      worker_processes: int | str = "auto", user: str | None = None,
                      tls_listen: Sequence[str] = (), tls: TlsFiles | None = None,
                      template: Path = TEMPLATE) -> str:
    """The nginx.conf text from the shared template (plain Jinja2); ``tls_listen`` specs
    serve the same paths over TLS with ``tls``'s certificate. ``template``: another
    revision's copy of it (benchmarks' ``--baseline``)."""
    if tls_listen and tls is None:
        raise ValueError("tls_listen needs tls= (certificate and key files)")
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return env.get_template(template.name).render(
        listen=list(listen), webroot=str(webroot), pid_file=str(pid_file),
        temp_dir=str(temp_dir), error_log=str(error_log), access_log=str(access_log),
        worker_processes=worker_processes, user=user, tls_listen=list(tls_listen),
        tls_certificate=str(tls.cert) if tls else "", tls_certificate_key=str(tls.key) if tls
        else "")


def start(workdir: Path, host: str = "127.0.0.1", port: int | None = None,
          netns: str | None = None, webroot: Path | None = None,
          extra_listen: Sequence[str] = (), sparse: bool = False,
          blob_bytes: int = 256 << 20, speedtest_length_s: int = 10,
          tls: TlsFiles | None = None, tls_port: int | None = None,
          tls_extra_listen: Sequence[str] = (), template: Path = TEMPLATE
          ) -> services.Service:
    """Prepare a web root and start nginx serving it on host:port (inside ``netns`` if set),
    and over TLS on host:tls_port too when ``tls`` is given; the config from ``template``
    (default: the role's, see :func:`render_nginx_conf`).

    ``Service.extra`` holds ``webroot`` and ``base_url`` (and ``tls_url`` with TLS).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = services.free_port(host) if netns is None else 8080
    webroot = prepare_webroot(webroot or workdir / "www", blob_bytes=blob_bytes, sparse=sparse,
                              speedtest_length_s=speedtest_length_s)
    temp = workdir / "tmp"
    temp.mkdir(exist_ok=True)
    hostspec = f"[{host}]" if ":" in host else host
    tls_listen: list[str] = []
    if tls is not None:
        if tls_port is None:
            tls_port = services.free_port(host) if netns is None else 8443
        tls_listen = [f"{hostspec}:{tls_port}", *tls_extra_listen]
    conf = render_nginx_conf(
        [f"{hostspec}:{port}", *extra_listen], webroot, workdir / "nginx.pid", temp,
        workdir / "error.log", "off", worker_processes=1,
        # As root, workers would drop to "nobody", which cannot read a private work dir.
        user="root" if os.geteuid() == 0 else None, tls_listen=tls_listen, tls=tls,
        template=template)
    svc = services.start_nginx(workdir, conf, port, host, netns=netns)
    svc.extra.update(webroot=webroot, base_url=f"http://{hostspec}:{port}")
    if tls is not None:
        svc.extra.update(tls_url=f"https://{hostspec}:{tls_port}", tls_ca=tls.ca)
    return svc

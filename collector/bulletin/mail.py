"""Mail the final edition to the leadership: the PDF attached, a short Vietnamese summary.

SMTP with TLS only (STARTTLS or implicit TLS), the server's certificate verified; the
password comes from ``bulletin.mail.password_file``, which must be 0600 (nobody but its
owner reads it). Configured in ``[bulletin.mail]`` (docs/operations.md).
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import stat
import unicodedata
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from collector.bulletin.compute import ACCESS_ORDER
from collector.bulletin.editions import EditionResult
from collector.bulletin.i18n import fmt_int, fmt_num, fmt_pct, month_label
from collector.config import BulletinMailSettings
from netmon.errors import EXIT_INPUT, NetmonError
from netmon.settings import SecretFileError, read_secret

ACCESS_VI = {"fixed": "Băng rộng cố định", "mobile": "Băng rộng di động"}
RATING_VI = {"meets": "đạt mục tiêu", "below": "chưa đạt mục tiêu",
             "insufficient": "chưa đủ dữ liệu để đánh giá", "no_data": "không có dữ liệu"}


class MailError(NetmonError, RuntimeError):
    """The mail could not be delivered (server down, refused, TLS failure): exit code 1."""


class MailConfigError(MailError):
    """The mail settings cannot work (password file readable by others, unreadable):
    exit code 2."""

    exit_code = EXIT_INPUT


def summary_text(res: EditionResult, province: str, public_url: str = "") -> str:
    """The Vietnamese body: the headline figures against the targets, what changed."""
    month = month_label(int(res.month[:4]), int(res.month[5:7]), "vi")
    lines = ["Kính gửi lãnh đạo,", "",
             f"Bản tin tốc độ băng rộng tỉnh {province}, tháng {month} "
             f"(bản chính thức) được gửi kèm dưới dạng PDF.", "",
             "Số liệu chính (trung vị tốc độ tải xuống toàn tỉnh):"]
    for acc in ACCESS_ORDER:
        f = res.figures[acc]
        lines.append(f"- {ACCESS_VI[acc]}: {fmt_num(f.median, 'vi')} Mb/s "
                     f"(mục tiêu {fmt_num(f.target, 'vi', 0)} Mb/s): "
                     f"{RATING_VI.get(f.rating, RATING_VI['no_data'])}; "
                     f"{fmt_int(f.tests, 'vi')} phép đo.")
    lines.append("")
    lines.append("Xã/phường đạt mục tiêu:")
    for acc in ACCESS_ORDER:
        f = res.figures[acc]
        lines.append(f"- {ACCESS_VI[acc]}: {f.communes_meeting}/{f.communes_rated} "
                     f"({fmt_pct(f.share_meeting, 'vi')}).")
    if res.change is not None:
        lines += ["", f"{fmt_int(res.change.late_results, 'vi')} kết quả đến sau bản tạm "
                  "tính; " + ("các số liệu chính không thay đổi." if not res.change.changes
                              else f"{len(res.change.changes)} số liệu chính đã thay đổi "
                              "(xem trang đầu của bản tin).")]
    if public_url:
        lines += ["", f"Lưu trữ các bản tin: {public_url.rstrip('/')}/"]
    lines += ["", "Hệ thống đo kiểm băng rộng hatinh-netmon (thư tự động)."]
    return unicodedata.normalize("NFC", "\n".join(lines) + "\n")


def build_message(settings: BulletinMailSettings, res: EditionResult, province: str,
                  public_url: str = "") -> EmailMessage:
    """The message: summary in the body, the edition's PDF attached."""
    pdf = res.files.get("pdf")
    if pdf is None:
        raise MailError(f"the {res.edition} edition of {res.month} has no PDF to attach")
    try:
        data = pdf.read_bytes()
    except OSError as exc:
        raise MailError(f"{pdf}: cannot read the PDF ({exc.strerror})") from None
    msg = EmailMessage()
    month = month_label(int(res.month[:4]), int(res.month[5:7]), "vi")
    msg["Subject"] = unicodedata.normalize(
        "NFC", f"Bản tin tốc độ băng rộng tỉnh {province}, tháng {month} (bản chính thức)")
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.sender.rsplit("@", 1)[-1])
    msg.set_content(summary_text(res, province, public_url), charset="utf-8")
    msg.add_attachment(data, maintype="application", subtype="pdf", filename=pdf.name)
    return msg


def check(settings: BulletinMailSettings) -> None:
    """Fail early (before an edition is made) on settings that cannot work: raises
    :class:`MailConfigError` for an unreadable or too widely readable password file."""
    _password(settings)


def _password(settings: BulletinMailSettings) -> str | None:
    path = settings.password_file
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise MailConfigError(f"bulletin.mail.password_file: {path}: "
                              f"{exc.strerror or exc}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise MailConfigError(f"bulletin.mail.password_file: {path} is mode "
                              f"{stat.S_IMODE(mode):04o}; it must be 0600 (chmod 600)")
    try:
        return read_secret(path, "bulletin.mail.password_file")
    except SecretFileError as exc:
        raise MailConfigError(str(exc)) from None


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH PLAIN in UTF-8 (RFC 4616): smtplib's own login encodes ASCII only, and a
    Vietnamese password must work."""
    smtp.ehlo_or_helo_if_needed()
    mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
    if "PLAIN" not in mechanisms:
        smtp.login(user, password)  # the server's other mechanisms (ASCII credentials)
        return
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    code, resp = smtp.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, resp)


def send(settings: BulletinMailSettings, msg: EmailMessage) -> None:
    """Deliver ``msg`` to every recipient over TLS; raises :class:`MailError`."""
    password = _password(settings)
    ctx = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file
                                     else None)
    where = f"{settings.host}:{settings.port}"
    try:
        smtp: smtplib.SMTP
        if settings.tls == "tls":
            smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_s,
                                    context=ctx)
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with smtp:
            if settings.tls == "starttls":
                smtp.starttls(context=ctx)
            if settings.username:
                _login(smtp, settings.username, password or "")
            refused = smtp.send_message(msg, from_addr=settings.sender,
                                        to_addrs=settings.recipients)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP server {where} refused the login of "
                        f"{settings.username!r} ({exc.smtp_code})") from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(f"SMTP server {where} does not offer STARTTLS "
                        "(bulletin.mail.tls)") from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise MailError(f"mail to {where} failed: {exc}") from None
    if refused:
        raise MailError(f"SMTP server {where} refused: {', '.join(sorted(refused))}")

"""Bulletin strings in Vietnamese (default) and English, and number formatting.

Vietnamese writes numbers with a decimal comma and a dot between thousands (71,2 Mb/s;
1.234 phép đo). Every string is NFC-normalised on the way out, so Vietnamese diacritics
are single code points in HTML, PDF and CSV alike.
"""

from __future__ import annotations

import unicodedata

# Re-exported: the area's modules import the language type from their own table.
from netmon.i18n import LANGS as LANGS
from netmon.i18n import Lang as Lang
from netmon.i18n import Texts

_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")

#: key -> (vi, en)
STRINGS: dict[str, tuple[str, str]] = {
    "title": ("Bản tin tốc độ băng rộng", "Broadband speed bulletin"),
    "headline": ("Bản tin tốc độ băng rộng tỉnh {province}, tháng {month}",
                 "Broadband speed bulletin, {province} province, {month}"),
    "period": ("Kỳ đo: từ {start} đến hết {end} (giờ Việt Nam, {tz})",
               "Period: {start} to {end} inclusive (local time, {tz})"),
    "generated": ("Lập lúc {at} (UTC)", "Generated {at} UTC"),
    "no_data": ("Không có dữ liệu đo tốc độ nào trong tháng này. Bản tin không có số liệu để "
                "đánh giá.",
                "No speed measurements were recorded in this month. The bulletin has no "
                "figures to rate."),
    "summary": ("Tóm tắt", "Summary"),
    "fixed": ("Băng rộng cố định", "Fixed broadband"),
    "mobile": ("Băng rộng di động", "Mobile broadband"),
    "fixed_short": ("Cố định", "Fixed"),
    "mobile_short": ("Di động", "Mobile"),
    "median_download": ("Tốc độ tải xuống trung vị", "Median download speed"),
    "median_upload": ("Tải lên trung vị", "Median upload"),
    "target": ("Mục tiêu", "Target"),
    "target_of": ("mục tiêu {target}", "target {target}"),
    "vs_prev": ("so với tháng trước", "vs previous month"),
    "no_prev": ("chưa có số liệu tháng trước", "no figure for the previous month"),
    "share_at_target": ("Tỷ lệ phép đo đạt mục tiêu", "Share of tests at or above target"),
    "c8080": ("Tốc độ ổn định 80/80", "80/80 consistent speed"),
    "meets": ("Đạt", "Meets target"),
    "below": ("Chưa đạt", "Below target"),
    "insufficient": ("Chưa đủ dữ liệu", "Insufficient data"),
    "no_data_short": ("Không có dữ liệu", "No data"),
    "no_target": ("Không có mục tiêu", "No target"),
    "key_facts": ("Số liệu chính", "Key facts"),
    "fact_tests": ("{valid} phép đo tốc độ hợp lệ từ {probes} điểm đo tại {communes} xã/phường "
                   "({failed} phép đo lỗi và {cross} phép đo bị nhiễu lưu lượng khác đã được "
                   "đếm và loại ra).",
                   "{valid} valid speed tests from {probes} probes in {communes} communes "
                   "({failed} failed tests and {cross} tests disturbed by other traffic were "
                   "counted and left out)."),
    "fact_below": ("{access}: {meets}/{rated} xã/phường được đánh giá đạt mục tiêu, {below} "
                   "dưới mục tiêu; {insufficient} xã/phường chưa đủ dữ liệu để đánh giá (dưới "
                   "{min_tests} phép đo hoặc {min_probe_days} ngày-điểm đo); {no_probe} "
                   "xã/phường không có điểm đo.",
                   "{access}: {meets} of {rated} rated communes meet the target, {below} are "
                   "below it; not rated for too few tests (under {min_tests} tests or "
                   "{min_probe_days} probe-days): {insufficient}; no measurement point: "
                   "{no_probe}."),
    "fact_availability": ("Điểm đo hoạt động: {share} số phép đo dự kiến đã về.",
                          "Probe availability: {share} of the expected tests arrived."),
    "charts": ("Biểu đồ", "Charts"),
    "chart_distribution": ("Phân bố tốc độ tải xuống theo loại truy nhập",
                           "Distribution of download speeds by access type"),
    "chart_districts": ("Trước sắp xếp: tốc độ tải xuống trung vị theo huyện cũ",
                        "Before the reorganisation: median download speed by former district"),
    "chart_trend": ("Xu hướng 12 tháng (trung vị toàn tỉnh)",
                    "12-month trend (province median)"),
    "axis_speed": ("Tốc độ tải xuống (Mb/s)", "Download speed (Mb/s)"),
    "axis_share": ("Tỷ lệ phép đo", "Share of tests"),
    "axis_month": ("Tháng", "Month"),
    "legend_median": ("Trung vị", "Median"),
    "legend_target": ("Mục tiêu", "Target"),
    "legend_insufficient": ("Chưa đủ dữ liệu", "Insufficient data"),
    "by_unit": ("Theo xã/phường ({n} đơn vị hành chính cấp xã)",
                "By commune and ward ({n} commune-level units)"),
    "unit_note": ("Mỗi bảng xếp từ kém nhất: dưới mục tiêu (chậm nhất trước), đạt mục tiêu, "
                  "chưa đủ dữ liệu, không có dữ liệu, không có điểm đo.",
                  "Each table is worst first: below target (slowest first), meeting the "
                  "target, insufficient data, no data, no measurement point."),
    "no_probe": ("Không có điểm đo", "No measurement point"),
    "by_district_legacy": ("Trước sắp xếp đơn vị hành chính: theo huyện/thị xã/thành phố cũ "
                           "(trước {date})",
                           "Before the reorganisation: by former district (before {date})"),
    "by_commune_legacy": ("Phụ lục, trước sắp xếp đơn vị hành chính: theo xã/phường/thị trấn "
                          "cũ (trước {date})",
                          "Annex, before the reorganisation: by former commune (before "
                          "{date})"),
    "legacy_note": ("Số liệu theo địa giới trước ngày {date} (khi còn cấp huyện), để đối chiếu "
                    "với các báo cáo cũ. Bảng theo xã/phường ở trên đã quy đổi sang đơn vị "
                    "hành chính hiện nay.",
                    "Figures on the map before {date} (when districts still existed), for "
                    "comparison with earlier reports. The commune/ward tables above are on "
                    "today's map."),
    "unit_trend": ("Xu hướng 12 tháng theo xã/phường (trung vị tải xuống, Mb/s)",
                   "12-month trend by commune/ward (median download, Mb/s)"),
    "unit_trend_note": ("Các tháng trước khi sắp xếp được tính vào đơn vị hiện nay chứa điểm "
                        "đo. Ô trống: dưới {min_tests} phép đo trong tháng.",
                        "Months before the reorganisation count towards today's unit that "
                        "holds the probe. Blank: under {min_tests} tests in the month."),
    "mean_beside": ("Trung bình cộng (tham khảo)", "Mean (for reference)"),
    "ref_title": ("Trung vị tải xuống: đối chiếu i-Speed", "Median download: i-Speed reference"),
    "ref_source": ("Nguồn", "Source"),
    "ref_own": ("Điểm đo của tỉnh {province} (bản tin này)",
                "{province} probes (this bulletin)"),
    "ref_national": ("i-Speed (VNNIC): toàn quốc", "i-Speed (VNNIC): national"),
    "ref_province": ("i-Speed (VNNIC): tỉnh {province}", "i-Speed (VNNIC): {province} province"),
    "probe_vs_ispeed": ("Cách đọc: mỗi điểm đo đo đường truyền của một cơ quan công (UBND xã, "
                        "trường học, trạm y tế) tới máy chủ đo của hệ thống, theo lịch, khi "
                        "đường truyền rảnh. i-Speed (VNNIC) tổng hợp các phép đo do chính người "
                        "dùng tự thực hiện tới các máy chủ trong nước, trên thiết bị và gói "
                        "cước của họ. Hai nguồn cùng lấy trung vị nhưng đo những đối tượng khác "
                        "nhau, nên dùng để đối chiếu, không thay thế nhau.",
                        "How to read this: a probe measures the line of one public office "
                        "(commune People's Committee, school, health station) to the system's "
                        "measurement server, on a schedule, when the line is idle. i-Speed "
                        "(VNNIC) aggregates the tests users run themselves to servers in "
                        "Vietnam, on their own devices and plans. Both rate by the median, but "
                        "they measure different things: read them side by side, not as "
                        "substitutes."),
    "h_district_old": ("Huyện/TX/TP cũ", "Former district"),
    "h_commune_old": ("Xã/phường/TT cũ", "Former commune"),
    "by_isp": ("Theo nhà mạng và loại truy nhập", "By ISP and access type"),
    "by_period": ("Giờ cao điểm ({start}:00–{end}:00) và ngoài giờ cao điểm",
                  "Peak hours ({start}:00–{end}:00) and off-peak"),
    "peak": ("Cao điểm", "Peak"),
    "off_peak": ("Ngoài cao điểm", "Off-peak"),
    "latency": ("Độ trễ, biến động trễ, mất gói và độ trễ khi tải nặng",
                "Latency, jitter, loss and loaded latency"),
    "availability": ("Mức độ hoạt động của điểm đo", "Probe availability"),
    "ipv6_reach": ("Sẵn sàng IPv6 và kết nối mạng truyền số liệu chuyên dùng (TSLCD) theo xã",
                   "IPv6 readiness and reachability over the government data network (TSLCD) "
                   "by commune"),
    "below_list": ("Các xã/phường dưới mục tiêu", "Communes below target"),
    "none_below": ("Không có xã/phường nào được đánh giá dưới mục tiêu.",
                   "No rated commune is below target."),
    "methodology": ("Phương pháp", "Methodology"),
    "province_row": ("Toàn tỉnh", "Province"),
    "unknown": ("(chưa rõ)", "(unknown)"),
    # table headers
    "h_district": ("Huyện/TX/TP", "District"),
    "h_commune": ("Xã/phường", "Commune"),
    "h_isp": ("Nhà mạng", "ISP"),
    "h_access": ("Truy nhập", "Access"),
    "h_period": ("Khung giờ", "Period"),
    "h_tests": ("Số phép đo", "Tests"),
    "h_failed": ("Lỗi", "Failed"),
    "h_cross": ("Bị nhiễu", "Busy line"),
    "h_probes": ("Điểm đo", "Probes"),
    "h_median": ("Trung vị", "Median"),
    "h_mean": ("Trung bình", "Mean"),
    "h_p10": ("P10", "P10"),
    "h_p90": ("P90", "P90"),
    "h_share": ("% đạt MT", "% at target"),
    "h_8080": ("80/80", "80/80"),
    "h_upload": ("Tải lên (TV)", "Upload (median)"),
    "h_rating": ("Đánh giá", "Rating"),
    "h_rtt": ("Độ trễ TV (ms)", "Median RTT (ms)"),
    "h_rtt90": ("Độ trễ P90 (ms)", "P90 RTT (ms)"),
    "h_jitter": ("Biến động trễ (ms)", "Jitter (ms)"),
    "h_loss": ("Mất gói (%)", "Loss (%)"),
    "h_idle": ("Trễ khi rỗi (ms)", "Idle RTT (ms)"),
    "h_loaded": ("Trễ khi tải nặng (ms)", "Loaded RTT (ms)"),
    "h_lines": ("Đường truyền", "Links"),
    "h_arrived": ("Đã về", "Arrived"),
    "h_expected": ("Dự kiến", "Expected"),
    "h_availability": ("Tỷ lệ", "Share"),
    "h_ipv6": ("IPv6 sẵn sàng", "IPv6 ready"),
    "h_reach": ("Kết nối TSLCD", "TSLCD reachable"),
    "h_reach_rtt": ("Trễ TSLCD (ms)", "TSLCD RTT (ms)"),
    "speed_note": ("Tốc độ tính bằng Mb/s. Đánh giá theo trung vị (như i-Speed của VNNIC); "
                   "trung bình cộng chỉ để tham khảo. Trung vị, P10, P90 và 80/80 tính trên "
                   "từng phép đo. Nhóm có dưới {min_tests} phép đo hợp lệ hoặc dưới "
                   "{min_probe_days} ngày-điểm đo được ghi \"chưa đủ dữ liệu\" và không xếp "
                   "hạng.",
                   "Speeds in Mb/s. Rated by the median (as VNNIC's i-Speed does); the mean is "
                   "for reference only. Median, P10, P90 and 80/80 are over individual tests. "
                   "A group with fewer than {min_tests} valid tests or fewer than "
                   "{min_probe_days} probe-days is shown as \"insufficient data\" and not "
                   "rated."),
    "meth_what": ("Đo gì: tốc độ tải xuống và tải lên (Mb/s, megabit mỗi giây dữ liệu hữu "
                  "ích), độ trễ, biến động trễ, tỷ lệ mất gói, độ trễ khi đường truyền tải "
                  "nặng, khả năng dùng IPv6 và kết nối tới mạng truyền số liệu chuyên dùng. "
                  "Các điểm đo (máy tính Raspberry Pi) đặt tại trụ sở UBND xã, trường học, "
                  "trạm y tế đo tự động, mỗi đường truyền (cáp quang, di động) đo riêng.",
                  "What: download and upload speed (Mb/s of useful data), latency, jitter, "
                  "packet loss, latency under load, IPv6 readiness and reachability of the "
                  "government data network. Probes (Raspberry Pi computers) at commune "
                  "offices, schools and health stations test automatically, each link (fibre, "
                  "mobile) separately."),
    "meth_how": ("Cách đo: iperf3, máy chủ Speedtest và tải HTTP tới máy chủ đo đã cấu hình; "
                 "ping ICMP/TCP/DNS/HTTP cho độ trễ. Tháng tính theo giờ Việt Nam.",
                 "How: iperf3, Speedtest servers and HTTP downloads from configured test "
                 "servers; ICMP/TCP/DNS/HTTP probes for latency. Months are in Vietnam time."),
    "meth_stats": ("Thống kê: trung vị và phân vị (P10, P90) tính trên từng phép đo, không "
                   "lấy trung bình của các trung bình; phân vị nội suy tuyến tính. Tốc độ ổn "
                   "định 80/80 (theo FCC Measuring Broadband America): mỗi đường truyền lấy "
                   "tốc độ đạt được trong 80% số lần đo, rồi lấy mức mà 80% số đường truyền "
                   "đạt được. Đánh giá \"đạt\" khi trung vị tải xuống từ mục tiêu trở lên "
                   "(di động {mobile}, cố định {fixed} theo Kế hoạch 568/KH-UBND).",
                   "Statistics: medians and percentiles (P10, P90) over individual tests, "
                   "never averages of averages; percentiles by linear interpolation. 80/80 "
                   "consistent speed (after the FCC's Measuring Broadband America): each link's "
                   "speed reached in 80% of its tests, then the level that 80% of links reach. "
                   "A group \"meets target\" when its median download is at or above the "
                   "target (mobile {mobile}, fixed {fixed}, plan 568/KH-UBND)."),
    "meth_excl": ("Loại trừ: {failed} phép đo lỗi (không kết nối được, hết thời gian…) được "
                  "đếm riêng, không tính vào tốc độ; {cross} phép đo bị gắn cờ \"nhiễu lưu "
                  "lượng\" (đường truyền đang bận với lưu lượng khác khi đo) bị loại ra để "
                  "không nhầm đường truyền bận với mạng chậm. Nhóm dưới {min_tests} phép đo "
                  "hợp lệ không được xếp hạng.",
                  "Exclusions: {failed} failed tests (unreachable, timed out…) are counted "
                  "separately and not averaged in; {cross} tests flagged \"cross-traffic\" (the "
                  "line was busy with other traffic) are left out so a busy line is not taken "
                  "for a slow network. Groups with fewer than {min_tests} valid tests are not "
                  "rated."),
    "meth_device": ("Giới hạn của thiết bị đo: {limited} phép đo tốc độ hợp lệ đạt trần của "
                    "chính điểm đo (cổng mạng của Raspberry Pi, modem USB) hoặc làm bão hoà "
                    "CPU của nó; các phép đo này vẫn được tính nhưng không thể xác nhận gói "
                    "cước cao hơn trần của thiết bị. Phép đo HTTP dùng TLS (https, có kiểm tra "
                    "chứng chỉ) như Speedtest, i-Speed và ndt7, để nhà mạng không thể xử lý "
                    "lưu lượng đo khác với lưu lượng của người dùng.",
                    "Probe limits: {limited} valid speed tests reached the probe's own "
                    "ceiling (the Raspberry Pi's network port, a USB modem) or saturated its "
                    "CPU; they are counted but cannot verify a plan above the device's "
                    "ceiling. HTTP tests run over TLS (https, certificate verified) like "
                    "Speedtest, i-Speed and ndt7, so an ISP cannot treat test traffic "
                    "differently from its users' traffic."),
    "meth_avail": ("Mức độ hoạt động: số phép đo đã về chia cho số phép đo theo lịch của "
                   "từng đường truyền (điểm đo tự báo số lần đo mỗi ngày; đường truyền chưa "
                   "từng báo: {per_day} phép đo tốc độ mỗi ngày), từ ngày đường truyền bắt "
                   "đầu gửi kết quả trong tháng.",
                   "Availability: tests that arrived divided by those each link's schedule "
                   "plans (the probe reports its runs per day; a link that never reported: "
                   "{per_day} speed tests a day), from the day the link first reported in "
                   "the month."),
}


#: ``t(key, lang="vi", **values)``: the string in ``lang``, formatted, NFC (netmon.i18n).
t = Texts(STRINGS, "bulletin string")


def fmt_num(value: float | None, lang: Lang, decimals: int = 1) -> str:
    """``71,2`` (vi) / ``71.2`` (en), with thousands separators; an en dash when None."""
    if value is None:
        return "–"
    text = f"{value:,.{decimals}f}"
    if lang == "vi":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def fmt_int(value: int | float | None, lang: Lang) -> str:
    """Whole number with thousands separators (``1.234`` vi, ``1,234`` en)."""
    return fmt_num(None if value is None else float(value), lang, 0)


def fmt_pct(share: float | None, lang: Lang, decimals: int = 1) -> str:
    """A 0-1 share as a percentage (``85,3%`` vi)."""
    return "–" if share is None else fmt_num(share * 100.0, lang, decimals) + "%"


def fmt_mbps(value: float | None, lang: Lang) -> str:
    """``71,2 Mb/s``."""
    return "–" if value is None else f"{fmt_num(value, lang)} Mb/s"


def fmt_change(pct: float | None, lang: Lang) -> str:
    """``+4,2%`` / ``−3,1%`` (true minus sign)."""
    if pct is None:
        return "–"
    sign = "+" if pct >= 0 else "−"
    return f"{sign}{fmt_num(abs(pct), lang)}%"


def month_label(year: int, month: int, lang: Lang) -> str:
    """``10/2026`` (vi) / ``October 2026`` (en)."""
    return f"{month:02d}/{year}" if lang == "vi" else f"{_MONTHS_EN[month - 1]} {year}"


def short_month(label: str, lang: Lang) -> str:
    """``2026-10`` -> ``10/26`` (vi) / ``Oct 26`` (en), for chart axes."""
    y, m = int(label[:4]), int(label[5:7])
    return f"{m:02d}/{y % 100:02d}" if lang == "vi" else f"{_MONTHS_EN[m - 1][:3]} {y % 100:02d}"


def date_label(year: int, month: int, day: int, lang: Lang) -> str:
    """``01/10/2026`` (vi) / ``1 October 2026`` (en)."""
    if lang == "vi":
        return f"{day:02d}/{month:02d}/{year}"
    return f"{day} {_MONTHS_EN[month - 1]} {year}"


# Vietnamese alphabetical order: a ă â b c d đ e ê g h i k l m n o ô ơ p q r s t u ư v x y;
# the letter marks (breve, circumflex, horn, the bar of đ) make distinct letters, the tone
# marks only break ties. Code-point order would put "Đức Thọ" after "Vũ Quang".
_LETTER_MARKS = {"\u0306": 1, "\u0302": 2, "\u031b": 3}  # breve, circumflex, horn
_TONE_MARKS = {"\u0300": 1, "\u0309": 2, "\u0303": 3, "\u0301": 4, "\u0323": 5}


def sort_key(text: str) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...], str]:
    """A key that sorts Vietnamese names in dictionary order."""
    primary: list[tuple[str, int]] = []
    tones: list[int] = []
    for ch in unicodedata.normalize("NFD", text.casefold()):
        if ch in _LETTER_MARKS and primary:
            base, _ = primary[-1]
            primary[-1] = (base, _LETTER_MARKS[ch])
        elif ch in _TONE_MARKS:
            tones.append(_TONE_MARKS[ch])
        elif ch in ("đ", "ð"):  # ð (Icelandic eth) is a common look-alike typed for đ
            primary.append(("d", 9))
        elif unicodedata.category(ch) != "Mn":
            primary.append((ch, 0))
            tones.append(0)
    return tuple(primary), tuple(tones), text

"""Dashboard texts in Vietnamese (default) and English, from one table.

Each entry is ``key: (vi, en)``. Texts may hold ``{placeholders}`` filled by
:func:`t` (targets, hours), so numbers in titles always come from configuration.
"""

from __future__ import annotations

# Re-exported: the area's modules import the language type from their own table.
from netmon.i18n import LANGS as LANGS
from netmon.i18n import Lang as Lang
from netmon.i18n import Texts

TEXTS: dict[str, tuple[str, str]] = {
    # dashboards
    "dash.overview": ("Tổng quan tỉnh: tốc độ so với mục tiêu",
                      "Province overview: speed against the targets"),
    "dash.overview.desc": (
        "Trung vị tốc độ tải xuống/tải lên theo loại truy cập so với mục tiêu Kế hoạch "
        "568/KH-UBND ({mobile} Mb/s di động, {fixed} Mb/s cố định năm 2025; {fixed2030} Mb/s "
        "cố định năm 2030), tỷ lệ phép đo đạt mục tiêu, xu hướng và giờ cao điểm.",
        "Median download/upload by access type against the targets of plan 568/KH-UBND "
        "({mobile} Mb/s mobile, {fixed} Mb/s fixed for 2025; {fixed2030} Mb/s fixed for 2030), "
        "share of tests meeting the target, trend and peak hours."),
    "dash.where": ("Theo địa bàn: xã, phường, nhà mạng", "Where: communes, wards, ISPs"),
    "dash.where.desc": (
        "Bảng xã/phường (theo mã đơn vị hành chính hiện hành) xếp từ kém nhất, bản đồ điểm đo "
        "tô màu theo mục tiêu, so sánh nhà mạng theo loại truy cập; bảng theo huyện cũ chỉ "
        "cho các tháng trước sắp xếp đơn vị hành chính.",
        "Commune and ward tables (by current official unit code) worst first, a map of probes "
        "coloured against the target, ISPs compared by access type; old-district tables for "
        "the months before the reorganisation only."),
    "dash.quality": ("Chất lượng mạng: trễ, rung pha, mất gói, IPv6, TSLCD",
                     "Network quality: latency, jitter, loss, IPv6, TSLCD"),
    "dash.quality.desc": (
        "Độ trễ, rung pha, tỷ lệ mất gói, độ trễ khi tải; mức sẵn sàng IPv6 và khả năng kết "
        "nối mạng truyền số liệu chuyên dùng (TSLCD) theo xã.",
        "Latency, jitter, packet loss, latency under load; IPv6 readiness and reachability "
        "of the government's private data network (TSLCD) per commune."),
    "dash.probes": ("Tình trạng điểm đo", "Probe health"),
    "dash.probes.desc": (
        "Điểm đo trực tuyến/ngoại tuyến, lần cuối gửi kết quả, hàng đợi, dung lượng dữ liệu "
        "đã dùng, đồng bộ đồng hồ và danh sách điểm đo im lặng.",
        "Probes online/offline, last seen, spool depth, data budget used, clock sync and "
        "the list of silent probes."),
    # variables
    "var.commune": ("Xã/phường", "Commune/ward"),
    "var.isp": ("Nhà mạng", "ISP"),
    "var.access": ("Loại truy cập", "Access type"),
    "var.probe": ("Điểm đo", "Probe"),
    # access types
    "access.mobile": ("di động", "mobile"),
    "access.fixed": ("cố định", "fixed"),
    # rows
    "row.targets": ("Mục tiêu", "Targets"),
    "row.trend": ("Xu hướng", "Trend"),
    "row.areas": ("Xã và phường", "Communes and wards"),
    "row.legacy": ("Trước sắp xếp (trước {date}): theo huyện cũ",
                   "Before the reorganisation (before {date}): by old district"),
    "row.map": ("Bản đồ và nhà mạng", "Map and ISPs"),
    "row.latency": ("Độ trễ và mất gói", "Latency and loss"),
    "row.readiness": ("IPv6 và TSLCD", "IPv6 and TSLCD"),
    "row.limits": ("Giới hạn của thiết bị đo và sóng di động",
                   "Probe limits and mobile radio"),
    "row.fleet": ("Đội điểm đo", "Fleet"),
    # overview panels
    "p.median_dl": ("Trung vị tải xuống – {access}", "Median download – {access}"),
    "p.median_dl.desc": (
        "Trung vị tốc độ tải xuống của các phép đo thông lượng thành công. Đỏ: dưới mục tiêu "
        "{target} Mb/s; xanh lá: đạt; xanh dương: đạt mục tiêu 2030 ({target2030} Mb/s).",
        "Median download of successful throughput tests. Red: below the {target} Mb/s "
        "target; green: met; blue: meets the 2030 target ({target2030} Mb/s)."),
    "p.median_dl.desc_mobile": (
        "Trung vị tốc độ tải xuống của các phép đo thông lượng thành công. Đỏ: dưới mục tiêu "
        "{target} Mb/s; xanh lá: đạt.",
        "Median download of successful throughput tests. Red: below the {target} Mb/s "
        "target; green: met."),
    "p.median_ul": ("Trung vị tải lên theo loại truy cập", "Median upload by access type"),
    "p.median_ul.desc": ("Kế hoạch không đặt mục tiêu tải lên; hiển thị để tham khảo.",
                         "The plan sets no upload target; shown for reference."),
    "note.rollup": (
        "Khoảng thời gian dưới {raw_days} ngày: tính trên từng phép đo. Dài hơn: trung vị "
        "(và phân vị 10) của các trung vị theo giờ của từng đường truyền (từ {daily_days} "
        "ngày: theo ngày), là số gần đúng, không phải trung vị của các phép đo; số phép đo "
        "thì chính xác. Số liệu chính xác: bản tin hằng tháng.",
        "Ranges under {raw_days} days: from every test. Longer ones: the median (and 10th "
        "percentile) of each line's hourly medians (from {daily_days} days: daily ones), an "
        "approximation, not the median of the tests; test counts stay exact. Exact figures: "
        "the monthly bulletin."),
    "note.rollup_median": (
        "Khoảng thời gian dưới {raw_days} ngày: trung vị của từng phép đo. Dài hơn: trung vị "
        "các trung vị theo giờ của từng đường truyền (từ {daily_days} ngày: theo ngày), là "
        "số gần đúng.",
        "Ranges under {raw_days} days: the median of the tests. Longer ones: the median of "
        "each line's hourly medians (from {daily_days} days: daily ones), an approximation."),
    "note.rollup_map": (
        "Khoảng thời gian từ {raw_days} ngày: trung vị các trung vị theo ngày của điểm đo "
        "(gần đúng); số phép đo thì chính xác.",
        "Ranges of {raw_days} days and more: the median of the probe's daily medians (an "
        "approximation); test counts stay exact."),
    "p.share": ("Tỷ lệ phép đo đạt {target} Mb/s – {access}",
                "Tests meeting {target} Mb/s – {access}"),
    "p.share.desc": ("Phần trăm phép đo tải xuống thành công đạt hoặc vượt mục tiêu.",
                     "Percent of successful download tests at or above the target."),
    "p.trend": ("Trung vị tải xuống theo thời gian", "Median download over time"),
    "p.trend.desc": (
        "Đường ngưỡng: {mobile} Mb/s (di động), {fixed} Mb/s (cố định), {fixed2030} Mb/s (2030).",
        "Threshold lines: {mobile} Mb/s (mobile), {fixed} Mb/s (fixed), {fixed2030} Mb/s (2030)."),
    "p.peak": ("Giờ cao điểm {start}:00–{end}:00 – {access}",
               "Peak hours {start}:00–{end}:00 – {access}"),
    "p.peak.desc": (
        "Trung vị tải xuống của các phép đo bắt đầu từ {start}:00 đến trước {end}:00 giờ Việt "
        "Nam (trường local_hour).",
        "Median download of tests started from {start}:00 to before {end}:00 Vietnam time "
        "(field local_hour)."),
    "p.peak.novalue": ("chưa có dữ liệu local_hour", "no local_hour data yet"),
    # where
    "p.districts_legacy": ("Huyện cũ, trước {date} – {access}",
                           "Old districts, before {date} – {access}"),
    "p.legacy.desc": (
        "Chỉ các phép đo trước {date} (cấp huyện không còn từ ngày đó), theo huyện cũ của "
        "điểm đo; trung vị, phân vị 10, số phép đo, tỷ lệ đạt {target} Mb/s.",
        "Only tests before {date} (the district level ended that day), by the probe's old "
        "district; median, 10th percentile, tests, share meeting {target} Mb/s."),
    "p.communes": ("Xã/phường – {access} (kém nhất trước)",
                   "Communes/wards – {access} (worst first)"),
    "p.areas.desc": (
        "Trung vị, phân vị 10 và số phép đo tải xuống; tỷ lệ đạt mục tiêu {target} Mb/s.",
        "Median, 10th percentile and number of download tests; share meeting {target} Mb/s."),
    "p.map": ("Bản đồ điểm đo theo trung vị tải xuống", "Probes by median download"),
    "p.map.desc": (
        "Mỗi điểm là một điểm đo; màu theo mục tiêu của loại truy cập ({mobile} Mb/s di động, "
        "{fixed} Mb/s cố định).",
        "One marker per probe; coloured against its access type's target ({mobile} Mb/s "
        "mobile, {fixed} Mb/s fixed)."),
    "layer.mobile": ("Di động", "Mobile"),
    "layer.fixed": ("Cố định", "Fixed"),
    "p.isp": ("Nhà mạng – {access}", "ISPs – {access}"),
    "p.isp.desc": ("Trung vị tải xuống theo nhà mạng, so với mục tiêu {target} Mb/s.",
                   "Median download per ISP against the {target} Mb/s target."),
    # quality
    "p.rtt": ("Độ trễ (trung vị RTT)", "Latency (median RTT)"),
    "p.jitter": ("Rung pha (trung vị)", "Jitter (median)"),
    "p.loss": ("Mất gói (trung bình)", "Packet loss (mean)"),
    "p.loss.desc": ("Cảnh báo khi vượt {loss}% trong 15 phút.",
                    "Alerts above {loss}% for 15 minutes."),
    "p.loaded": ("Độ trễ khi có tải và khi rảnh", "Latency under load and idle"),
    "p.loaded.desc": ("Chênh lệch lớn là dấu hiệu bộ đệm quá lớn (bufferbloat).",
                      "A large gap means oversized buffers (bufferbloat)."),
    "p.device_limited": ("Phép đo bị giới hạn bởi thiết bị đo",
                         "Tests limited by the probe"),
    "p.device_limited.desc": (
        "Số phép đo tốc độ đạt trần của thiết bị đo (cổng mạng, modem) hoặc CPU bão hoà: "
        "tốc độ thực của đường truyền có thể cao hơn.",
        "Speed tests that reached the probe's own ceiling (network port, modem) or a "
        "saturated CPU: the line may be faster than measured."),
    "p.radio_rsrp": ("Tốc độ tải xuống di động theo RSRP",
                     "Mobile download against RSRP"),
    "p.radio_sinr": ("Tốc độ tải xuống di động theo SINR",
                     "Mobile download against SINR"),
    "p.radio.desc": ("Mỗi điểm là một phép đo (modem qua ModemManager): tốc độ thấp khi sóng "
                     "tốt là dấu hiệu trạm phát quá tải.",
                     "One point per test (modem via ModemManager): slow results on a good "
                     "signal point to a congested cell."),
    "note.rollup_radio": (
        "Khoảng thời gian từ {raw_days} ngày: mỗi điểm là một đường truyền trong một ngày "
        "(trung vị mức sóng và trung vị tốc độ tải xuống của các phép đo đó; khoảng dài hơn "
        "30 ngày: trung vị các giá trị ngày trong mỗi khoảng, tối đa 30 điểm mỗi đường "
        "truyền).",
        "Ranges of {raw_days} days and more: one point per line and day (the median level "
        "and the median download of that day's tests; ranges over 30 days: the median of "
        "the daily values in each interval, at most 30 points per line)."),
    "col.limited": ("Bị giới hạn", "Limited"),
    "col.access": ("Loại truy nhập", "Access"),
    "p.ipv6": ("Mức sẵn sàng IPv6 theo xã/phường", "IPv6 readiness per commune/ward"),
    "p.ipv6.desc": ("Phần trăm phép thử có kết nối IPv6 tới đích (ipv6_reachable).",
                    "Percent of tests that reached the target over IPv6 (ipv6_reachable)."),
    "p.tslcd": ("Kết nối TSLCD theo xã/phường", "TSLCD reachability per commune/ward"),
    "p.tslcd.desc": ("Phần trăm phép thử đến các điểm TSLCD có phản hồi (reachable).",
                     "Percent of tests to TSLCD endpoints that got an answer (reachable)."),
    # probes
    "p.online": ("Trực tuyến", "Online"),
    "p.offline": ("Ngoại tuyến", "Offline"),
    "p.silent_count": ("Mất liên lạc", "Not reporting"),
    "p.unsynced": ("Đồng hồ chưa đồng bộ", "Clock not synced"),
    "p.probe_table": ("Trạng thái điểm đo", "Probe status"),
    "p.last_seen": ("Lần cuối có kết quả", "Last result"),
    "p.last_seen.desc": (
        "Thời điểm bắt đầu của kết quả mới nhất mỗi điểm đo đã gửi, kể cả khi đã im lặng "
        "nhiều tháng. Không phụ thuộc khoảng thời gian đã chọn.",
        "When each probe's latest result started, even for a probe silent for months. "
        "Independent of the time picker."),
    "p.silent": ("Điểm đo mất liên lạc (im lặng 30 phút hoặc ngoại tuyến)",
                 "Probes not reporting (silent 30 minutes or offline)"),
    "p.silent.desc": (
        "Mọi điểm đo có trong danh mục điểm đo mà không có kết quả trong 30 phút gần nhất "
        "hoặc trạng thái cuối là ngoại tuyến (offline); vẫn hiện dù im lặng nhiều tuần, đến "
        "khi điểm đo được xoá khỏi danh mục. Không phụ thuộc khoảng thời gian đã chọn.",
        "Every probe in the site registry with no result in the last 30 minutes or whose "
        "last status is offline; listed even when silent for weeks, until it is removed "
        "from the registry. Independent of the time picker."),
    "p.spool": ("Độ sâu hàng đợi", "Spool depth"),
    "p.budget": ("Dung lượng dữ liệu đã dùng", "Data budget used"),
    "p.budget.desc": (
        "Mức dùng cuối cùng mà trạng thái của điểm đo báo trong ngày cuối của khoảng thời "
        "gian (tính theo ngày: từ đầu ngày chứa thời điểm bắt đầu).",
        "The last usage the probe's statuses reported on the range's last day (read per "
        "day: from the start of the day holding the range's start)."),
    "map.online": ("trực tuyến", "online"),
    "map.offline": ("ngoại tuyến", "offline"),
    "map.synced": ("đã đồng bộ", "synced"),
    "map.unsynced": ("chưa đồng bộ", "not synced"),
    # table columns
    "col.median": ("Trung vị (Mb/s)", "Median (Mb/s)"),
    "col.p10": ("Phân vị 10 (Mb/s)", "10th percentile (Mb/s)"),
    "col.tests": ("Số phép đo", "Tests"),
    "col.share": ("Đạt mục tiêu (%)", "Meeting target (%)"),
    "col.pct_ok": ("Thành công (%)", "Passed (%)"),
    "col.commune_code": ("Mã", "Code"),
    "col.commune": ("Xã/phường", "Commune/ward"),
    "col.district": ("Huyện cũ", "Old district"),
    # alerts
    "alert.silent": ("Điểm đo mất liên lạc (im lặng hơn 30 phút hoặc ngoại tuyến)",
                     "Probe not reporting (silent for 30 minutes or offline)"),
    "alert.commune": ("Xã dưới mục tiêu {target} Mb/s ({access}) trong 24 giờ",
                      "Commune below the {target} Mb/s target ({access}) over 24 hours"),
    "alert.loss": ("Mất gói trên {loss}%", "Packet loss above {loss}%"),
    "alert.old_agent": ("Điểm đo chạy phiên bản khác {version} quá {after}",
                        "Probe runs another version than {version} for more than {after}"),
    "alert.spool": ("Hàng đợi điểm đo tăng liên tục", "Probe spool keeps growing"),
    "alert.bulletin": ("Bản tin tháng không phát hành được",
                       "Monthly bulletin edition failed"),
}


#: ``t(key, lang="vi", **values)``: the text in ``lang`` with placeholders filled, NFC;
#: KeyError names a missing key (netmon.i18n).
t = Texts(TEXTS, "dashboard text")

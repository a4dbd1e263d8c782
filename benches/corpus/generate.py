#!/usr/bin/env python3
"""Generates the User-Agent and referrer corpora used by benchmarks and the e2e test.

    python3 benches/corpus/generate.py          # rewrites the two TSVs beside this file

Output (tab-separated, first line is the header, UTF-8, '\n' line ends):
  user_agents.tsv   weight <TAB> user_agent
  referrers.tsv     weight <TAB> referrer      (an empty referrer is a direct visit)

Weights are integers proportional to how often the string shows up in traffic; they
add up to about 1,000,000. The strings come from templates of real browsers (version
ranges current in late 2024 / 2025, real OS versions and device models), so the mix
looks like a real site's: a handful of current Chrome and Safari strings carry most
hits, a long tail of older versions, devices and in-app browsers follow, and bots,
monitors and HTTP libraries make up about 7%. The generator is deterministic (fixed
seed): rerunning it reproduces the committed files byte for byte.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
RNG = random.Random(20250101)
TOTAL_WEIGHT = 1_000_000


def decay(n: int, ratio: float) -> list[float]:
    """Shares for n versions, newest first, each `ratio` times the previous."""
    raw = [ratio**i for i in range(n)]
    s = sum(raw)
    return [r / s for r in raw]


# --- User-Agents -------------------------------------------------------------------

CHROME_MAJORS = list(range(133, 108, -1))  # newest first
FIREFOX_MAJORS = list(range(134, 114, -1))
SAFARI_VERSIONS = ["18.2", "18.1.1", "18.1", "18.0.1", "18.0", "17.6", "17.5", "17.4.1",
                   "17.4", "17.3.1", "17.2.1", "17.1", "17.0", "16.6", "16.5", "16.4",
                   "16.3", "16.1", "15.6.1", "15.6", "14.1.2"]
IOS_VERSIONS = ["18_2", "18_1_1", "18_1", "18_0_1", "18_0", "17_7_2", "17_7", "17_6_1",
                "17_6", "17_5_1", "17_5", "17_4_1", "17_4", "17_3_1", "17_2_1", "17_1_2",
                "17_0_3", "16_7_10", "16_7_8", "16_7_2", "16_6_1", "16_6", "16_5",
                "16_3_1", "16_1_2", "15_8_3", "15_7_9", "15_6_1", "14_8_1", "12_5_7"]
ANDROID_VERSIONS = ["15", "14", "13", "12", "11", "10", "9", "8.1.0"]
ANDROID_MODELS = [
    "SM-S928B", "SM-S926B", "SM-S921B", "SM-S918B", "SM-S916B", "SM-S911B", "SM-S908E",
    "SM-S901B", "SM-A556B", "SM-A546B", "SM-A536B", "SM-A526B", "SM-A525F", "SM-A515F",
    "SM-A346B", "SM-A336B", "SM-A256B", "SM-A236B", "SM-A155F", "SM-A145R", "SM-A135F",
    "SM-A057G", "SM-G991B", "SM-G996B", "SM-G998B", "SM-G781B", "SM-G973F", "SM-N986B",
    "SM-F946B", "SM-F731B", "SM-M336B", "SM-M546B", "Pixel 9 Pro", "Pixel 9", "Pixel 8 Pro",
    "Pixel 8", "Pixel 8a", "Pixel 7 Pro", "Pixel 7", "Pixel 7a", "Pixel 6", "Pixel 6a",
    "Pixel 5", "2201117TY", "2201117TG", "23021RAA2Y", "23106RN0DA", "2312DRA50G",
    "23090RA98G", "M2101K6G", "M2003J15SC", "22101316UG", "CPH2581", "CPH2451", "CPH2269",
    "CPH2015", "RMX3630", "RMX3771", "RMX2193", "V2207", "V2111", "motorola edge 40",
    "moto g84 5G", "moto g54 5G", "moto g(30)", "moto g power (2022)", "Nokia G21",
    "Nokia X20", "ONEPLUS A6013", "CPH2449", "NE2213", "LE2123", "IN2023", "KB2003",
    "HD1913", "ELS-NX9", "VOG-L29", "MAR-LX1A", "JNY-LX1", "TECNO KI5q", "Infinix X6833B",
    "itel A662L", "SO-51C", "XQ-DQ72", "XQ-CT54", "A142", "FP4", "Lenovo TB-X606F",
]
ANDROID_TABLETS = ["SM-X710", "SM-X910", "SM-X810", "SM-X700", "SM-X200", "SM-X205",
                   "SM-T870", "SM-T505", "SM-T220", "Pixel Tablet", "Lenovo TB-J616F",
                   "Lenovo TB-X306F", "2307BRPDCG", "22081283G", "TB350FU", "KFTRWI",
                   "KFMAWI", "KFRAWI"]
MAC_FIREFOX = ["10.15", "14.7", "13.6", "12.7"]
WINDOWS_NT = [("10.0", 0.93), ("6.1", 0.04), ("6.3", 0.02), ("6.2", 0.01)]
EDGE_BUILDS = {133: ["3065.59", "3065.51"], 132: ["2957.140", "2957.127", "2957.115"],
               131: ["2903.112", "2903.99", "2903.86", "2903.70", "2903.51"],
               130: ["2849.80", "2849.68", "2849.56", "2849.46"],
               129: ["2792.89", "2792.79", "2792.65", "2792.52"],
               128: ["2739.79", "2739.67", "2739.54", "2739.42"],
               127: ["2651.105", "2651.98", "2651.86", "2651.74"],
               126: ["2592.113", "2592.102", "2592.87"], 125: ["2535.92", "2535.85"],
               124: ["2478.109", "2478.97", "2478.80"], 123: ["2420.97", "2420.81"],
               122: ["2365.92", "2365.80"], 121: ["2277.128", "2277.112"],
               120: ["2210.144", "2210.133", "2210.121"], 119: ["2151.97"],
               118: ["2088.76"], 117: ["2045.60"], 116: ["1938.81"], 115: ["1901.203"],
               114: ["1823.82"], 109: ["1518.140"]}


def chrome_full(major: int) -> str:
    """A plausible full Chrome version for `major` (used where UA reduction is absent)."""
    build = 6778 + (major - 131) * 56 + RNG.choice([0, 0, 1])
    return f"{major}.0.{build}.{RNG.choice([33, 39, 69, 81, 85, 104, 108, 135, 139, 200, 204, 260])}"


def user_agents() -> dict[str, float]:
    out: dict[str, float] = {}

    def add(ua: str, share: float) -> None:
        out[ua] = out.get(ua, 0.0) + share

    # Desktop Chrome (reduced UA: only the major varies) ~ 29%.
    for major, share in zip(CHROME_MAJORS, decay(len(CHROME_MAJORS), 0.55)):
        for nt, nt_share in WINDOWS_NT:
            add(f"Mozilla/5.0 (Windows NT {nt}; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{major}.0.0.0 Safari/537.36", 0.19 * share * nt_share)
        add("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{major}.0.0.0 Safari/537.36", 0.065 * share)
        add(f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{major}.0.0.0 Safari/537.36", 0.02 * share)
        add(f"Mozilla/5.0 (X11; CrOS x86_64 {14541 + (major - 109) * 120}.0.0) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36", 0.008 * share)
        # Chrome for Android, reduced UA ~ 20%.
        add(f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{major}.0.0.0 Mobile Safari/537.36", 0.20 * share)
        add(f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{major}.0.0.0 Safari/537.36", 0.01 * share)

    # Android UAs that still carry model and full version (webviews, older builds) ~ 4%.
    for model in ANDROID_MODELS:
        for _ in range(3):
            major = RNG.choice(CHROME_MAJORS[:12])
            av = RNG.choice(ANDROID_VERSIONS[:6])
            add(f"Mozilla/5.0 (Linux; Android {av}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{chrome_full(major)} Mobile Safari/537.36", 0.04 / (3 * len(ANDROID_MODELS)))
    # Android webviews (in-app browsers) ~ 2.5%.
    for model in ANDROID_MODELS[:50]:
        av = RNG.choice(ANDROID_VERSIONS[:5])
        build = RNG.choice(["UP1A.231005.007", "AP2A.240905.003", "TP1A.220624.014",
                            "SP1A.210812.016", "RKQ1.211119.001", "UKQ1.230924.001"])
        full = chrome_full(RNG.choice(CHROME_MAJORS[:6]))
        base = (f"Mozilla/5.0 (Linux; Android {av}; {model} Build/{build}; wv) AppleWebKit/537.36 "
                f"(KHTML, like Gecko) Version/4.0 Chrome/{full} Mobile Safari/537.36")
        add(base, 0.008 / 50)
        fbav = f"{RNG.randint(470, 495)}.0.0.{RNG.randint(10, 70)}.{RNG.randint(10, 120)}"
        add(f"{base} [FB_IAB/FB4A;FBAV/{fbav};]", 0.01 / 50)
        ig = f"{RNG.randint(340, 362)}.0.0.{RNG.randint(10, 50)}.{RNG.randint(50, 130)}"
        add(f"{base} Instagram {ig} Android ({RNG.randint(30, 35)}/{av}; 420dpi; 1080x2400; "
            f"samsung; {model}; {model.lower().replace(' ', '')}; qcom; en_US; {RNG.randint(600000000, 699999999)})",
            0.007 / 50)
    # Android tablets ~ 1.5%.
    for model in ANDROID_TABLETS:
        for major in CHROME_MAJORS[:5]:
            av = RNG.choice(ANDROID_VERSIONS[:5])
            if model.startswith("KF"):
                add(f"Mozilla/5.0 (Linux; Android 9; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Silk/{major}.{RNG.randint(1, 5)}.{RNG.randint(1, 9)} like Chrome/{chrome_full(major)} Safari/537.36",
                    0.015 / (5 * len(ANDROID_TABLETS)))
            else:
                add(f"Mozilla/5.0 (Linux; Android {av}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{major}.0.0.0 Safari/537.36", 0.015 / (5 * len(ANDROID_TABLETS)))
    # Samsung Internet ~ 3%.
    samsung_versions = ["27.0", "26.0", "25.0", "24.0", "23.0", "22.0", "21.0", "20.0"]
    for sv, share in zip(samsung_versions, decay(len(samsung_versions), 0.6)):
        chrome_major = {"27.0": 125, "26.0": 122, "25.0": 121, "24.0": 117, "23.0": 115,
                        "22.0": 111, "21.0": 110, "20.0": 106}[sv]
        add(f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"SamsungBrowser/{sv} Chrome/{chrome_major}.0.0.0 Mobile Safari/537.36", 0.02 * share)
        for model in RNG.sample([m for m in ANDROID_MODELS if m.startswith("SM-")], 8):
            add(f"Mozilla/5.0 (Linux; Android {RNG.choice(ANDROID_VERSIONS[:4])}; SAMSUNG {model}) "
                f"AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/{sv} Chrome/{chrome_major}.0.0.0 "
                "Mobile Safari/537.36", 0.01 * share / 8)

    # iPhone Safari ~ 21%, iPad ~ 3%.
    for ios, share in zip(IOS_VERSIONS, decay(len(IOS_VERSIONS), 0.78)):
        parts = ios.split("_")
        safari = ".".join(parts[:3]) if len(parts) == 3 and parts[0] in ("17", "18") else ".".join(parts[:2])
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{safari} Mobile/15E148 Safari/604.1", 0.21 * share)
        add(f"Mozilla/5.0 (iPad; CPU OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{safari} Mobile/15E148 Safari/604.1", 0.03 * share)
        # Chrome, Firefox, Edge, Google app, DuckDuckGo on iOS ~ 5%.
        for major in CHROME_MAJORS[:4]:
            add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) CriOS/{chrome_full(major)} Mobile/15E148 Safari/604.1",
                0.025 * share / 4)
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) FxiOS/{RNG.choice(FIREFOX_MAJORS[:5])}.{RNG.randint(0, 2)} "
            "Mobile/15E148 Safari/605.1.15", 0.005 * share)
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) GSA/{RNG.randint(330, 345)}.0.{RNG.randint(600000000, 699999999)} "
            "Mobile/15E148 Safari/604.1", 0.012 * share)
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{safari} EdgiOS/{RNG.choice([131, 130, 129])}.{RNG.choice(EDGE_BUILDS[131])} "
            "Mobile/15E148 Safari/605.1.15", 0.003 * share)
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{safari} Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
            0.002 * share)
        # In-app: plain WKWebView, Facebook, Instagram, LinkedIn ~ 4%.
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148", 0.01 * share)
        for _ in range(3):
            device = RNG.choice(["iPhone14,5", "iPhone14,2", "iPhone15,2", "iPhone15,3",
                                 "iPhone15,4", "iPhone16,1", "iPhone16,2", "iPhone17,1",
                                 "iPhone13,2", "iPhone12,1"])
            fbav = f"{RNG.randint(470, 495)}.0.0.{RNG.randint(10, 70)}.{RNG.randint(10, 120)}"
            osv = ".".join(parts)
            add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/{fbav};FBBV/{RNG.randint(600000000, 699999999)};"
                f"FBDV/{device};FBMD/iPhone;FBSN/iOS;FBSV/{osv};FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;"
                f"FBRV/{RNG.randint(600000000, 699999999)}]", 0.012 * share / 3)
            ig = f"{RNG.randint(340, 362)}.0.0.{RNG.randint(10, 50)}.{RNG.randint(50, 130)}"
            add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Mobile/15E148 Instagram {ig} ({device}; iOS {ios}; en_US; en; "
                f"scale=3.00; 1179x2556; {RNG.randint(600000000, 699999999)})", 0.01 * share / 3)
        add(f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Mobile/15E148 LinkedInApp/9.{RNG.randint(28, 31)}.{RNG.randint(1000, 9999)}",
            0.002 * share)

    # macOS Safari ~ 6%.
    for sv, share in zip(SAFARI_VERSIONS, decay(len(SAFARI_VERSIONS), 0.7)):
        mac = "10_15_7" if not sv.startswith(("14.", "15.")) else "10_15_6"
        add(f"Mozilla/5.0 (Macintosh; Intel Mac OS X {mac}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{sv} Safari/605.1.15", 0.06 * share)

    # Firefox ~ 6%.
    for major, share in zip(FIREFOX_MAJORS, decay(len(FIREFOX_MAJORS), 0.6)):
        add(f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{major}.0) Gecko/20100101 Firefox/{major}.0",
            0.03 * share)
        for mac in MAC_FIREFOX:
            add(f"Mozilla/5.0 (Macintosh; Intel Mac OS X {mac}; rv:{major}.0) Gecko/20100101 "
                f"Firefox/{major}.0", 0.008 * share / len(MAC_FIREFOX))
        add(f"Mozilla/5.0 (X11; Linux x86_64; rv:{major}.0) Gecko/20100101 Firefox/{major}.0",
            0.008 * share)
        add(f"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{major}.0) Gecko/20100101 Firefox/{major}.0",
            0.005 * share)
        add(f"Mozilla/5.0 (Android {RNG.choice(ANDROID_VERSIONS[:4])}; Mobile; rv:{major}.0) "
            f"Gecko/{major}.0 Firefox/{major}.0", 0.006 * share)
    for esr in (115, 128):
        add(f"Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:{esr}.0) Gecko/20100101 Firefox/{esr}.0", 0.001)

    # Edge ~ 6%.
    majors = sorted(EDGE_BUILDS, reverse=True)
    for major, share in zip(majors, decay(len(majors), 0.55)):
        builds = EDGE_BUILDS[major]
        for build in builds:
            add(f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{major}.0.0.0 Safari/537.36 Edg/{major}.0.{build}", 0.052 * share / len(builds))
            add(f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{major}.0.0.0 Safari/537.36 Edg/{major}.0.{build}", 0.005 * share / len(builds))
            add(f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{major}.0.0.0 Mobile Safari/537.36 EdgA/{major}.0.{build}", 0.003 * share / len(builds))

    # Opera, Yandex, Vivaldi, MIUI, UC ~ 2.5%.
    for i, opr in enumerate(range(116, 100, -1)):
        share = decay(16, 0.6)[i]
        add(f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{opr + 15}.0.0.0 Safari/537.36 OPR/{opr}.0.0.0", 0.01 * share)
        add(f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{opr + 15}.0.0.0 Safari/537.36 OPR/{opr}.0.0.0", 0.002 * share)
        add(f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{opr + 14}.0.0.0 Mobile Safari/537.36 OPR/{opr - 30}.{RNG.randint(0, 5)}.{RNG.randint(1000, 9999)}.{RNG.randint(10000, 99999)}",
            0.003 * share)
    for i, ya in enumerate(["24.12.0.0", "24.10.0.0", "24.7.0.0", "24.6.0.0", "24.4.0.0", "24.1.0.0", "23.11.0.0"]):
        add(f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{130 - i * 2}.0.0.0 YaBrowser/{ya} Safari/537.36", 0.004 * decay(7, 0.6)[i])
    for i, viv in enumerate(["7.0.3495.27", "6.9.3447.54", "6.8.3381.55", "6.7.3329.41", "6.5.3206.63"]):
        add(f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{131 - i * 2}.0.0.0 Safari/537.36 Vivaldi/{viv}", 0.002 * decay(5, 0.6)[i])
    for model in ["2201122C", "22081212C", "23013RK75C", "2211133C", "M2012K11AC"]:
        add(f"Mozilla/5.0 (Linux; U; Android 13; zh-cn; {model} Build/TKQ1.220807.001) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Version/4.0 Chrome/{chrome_full(RNG.choice([100, 109, 112]))} Mobile Safari/537.36 "
            f"XiaoMi/MiuiBrowser/{RNG.choice(['17.8.30', '18.2.150', '14.36.0'])}", 0.0008)
        add(f"Mozilla/5.0 (Linux; U; Android 12; en-US; {model} Build/SKQ1.211006.001) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Version/4.0 Chrome/{chrome_full(RNG.choice([100, 109, 123]))} UCBrowser/13.{RNG.randint(4, 7)}.0.{RNG.randint(1000, 1400)} "
            "Mobile Safari/537.36", 0.0008)

    # Legacy and other platforms ~ 0.5%.
    add("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", 0.0008)
    add("Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko", 0.0004)
    add("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36", 0.0005)
    add("Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/87.0.4280.88 Safari/537.36 WebAppManager", 0.0003)
    add("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.0 Safari/605.1.15", 0.0002)
    add("Mozilla/5.0 (X11; FreeBSD amd64; rv:133.0) Gecko/20100101 Firefox/133.0", 0.0001)

    # Bots, monitors, headless browsers and HTTP libraries ~ 7%.
    bots = [
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
         "+http://www.google.com/bot.html) Chrome/{c} Safari/537.36", 0.008),
        ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/{c} Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 0.008),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 0.002),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
         "+http://www.bing.com/bingbot.htm) Chrome/{c} Safari/537.36", 0.006),
        ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", 0.004),
        ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", 0.003),
        ("Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)", 0.001),
        ("Mozilla/5.0 (compatible; DotBot/1.2; +https://opensiteexplorer.org/dotbot; help@moz.com)", 0.001),
        ("Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
         "(compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)", 0.001),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", 0.003),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot", 0.001),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", 0.002),
        ("CCBot/2.0 (https://commoncrawl.org/faq/)", 0.001),
        ("Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
         "(compatible; Bytespider; spider-feedback@bytedance.com)", 0.002),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
         "+https://perplexity.ai/perplexitybot)", 0.001),
        ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", 0.001),
        ("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", 0.0005),
        ("Mozilla/5.0 (compatible; Applebot/0.1; +http://www.apple.com/go/applebot)", 0.0005),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", 0.002),
        ("meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)", 0.001),
        ("Twitterbot/1.0", 0.0005),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", 0.0005),
        ("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", 0.0003),
        ("TelegramBot (like TwitterBot)", 0.0003),
        ("WhatsApp/2.23.20.0", 0.0003),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "HeadlessChrome/{m}.0.0.0 Safari/537.36", 0.004),
        ("Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/{m}.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse", 0.001),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/{m}.0.0.0 Safari/537.36 Chrome-Lighthouse", 0.0005),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1", 0.0003),
        ("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", 0.002),
        ("Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", 0.0005),
        ("Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:54.0) Gecko/20100101 Firefox/54.0 Safari/537.36 (StatusCake)", 0.0003),
        ("Site24x7", 0.0002),
        ("Datadog/Synthetics", 0.0002),
        ("curl/{curl}", 0.002),
        ("Wget/1.21.{w}", 0.0005),
        ("python-requests/2.{pr}.{p2}", 0.002),
        ("Python-urllib/3.{py}", 0.0005),
        ("python-httpx/0.{hx}.0", 0.0003),
        ("aiohttp/3.{ah}.{p2}", 0.0003),
        ("Go-http-client/{go}", 0.002),
        ("okhttp/4.{ok}.0", 0.0005),
        ("Java/{java}", 0.0003),
        ("Apache-HttpClient/4.5.{ahc} (Java/{java})", 0.0003),
        ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", 0.0003),
        ("axios/1.{ax}.{p2}", 0.0005),
        ("libwww-perl/6.{lw}", 0.0002),
        ("Scrapy/2.{sc}.0 (+https://scrapy.org)", 0.0002),
        ("", 0.003),
    ]
    for template, share in bots:
        variants = 1 if "{" not in template else 6
        for _ in range(variants):
            ua = template.format(
                c=chrome_full(RNG.choice(CHROME_MAJORS[:4])), m=RNG.choice(CHROME_MAJORS[:6]),
                curl=RNG.choice(["8.5.0", "8.7.1", "8.9.1", "8.10.1", "8.11.0", "7.81.0", "7.88.1"]),
                w=RNG.randint(1, 4), pr=RNG.randint(28, 32), p2=RNG.randint(0, 9),
                py=RNG.randint(8, 13), hx=RNG.randint(24, 28), ah=RNG.randint(8, 11),
                go=RNG.choice(["1.1", "2.0"]), ok=RNG.randint(9, 12),
                java=RNG.choice(["1.8.0_392", "11.0.21", "17.0.9", "21.0.1"]), ahc=RNG.randint(10, 14),
                ax=RNG.randint(4, 7), lw=RNG.randint(60, 78), sc=RNG.randint(8, 11))
            add(ua, share / variants)
    return out


# --- Referrers ---------------------------------------------------------------------

WORDS = ["alpha", "apex", "atlas", "bay", "bright", "byte", "cedar", "cloud", "code", "coral",
         "craft", "daily", "data", "delta", "dev", "echo", "field", "flow", "forge", "frame",
         "garden", "grid", "harbor", "hub", "iron", "journal", "kit", "lab", "lake", "leaf",
         "light", "line", "logic", "maple", "mesa", "mint", "node", "north", "notes", "nova",
         "oak", "orbit", "pixel", "pine", "point", "press", "pulse", "quill", "river", "rocket",
         "root", "sage", "scale", "signal", "slate", "solar", "spark", "stack", "stone", "studio",
         "summit", "tide", "trail", "vector", "wave", "wire", "works", "yard", "zen"]
TLDS = ["com", "com", "com", "net", "org", "io", "dev", "co", "de", "fr", "nl", "co.uk", "se",
        "ch", "es", "it", "ca", "com.au", "blog", "app", "xyz", "me"]
SLUG_WORDS = ["how", "to", "build", "fast", "rust", "web", "analytics", "privacy", "guide",
              "best", "tools", "2024", "2025", "review", "vs", "alternative", "open", "source",
              "self", "hosted", "setup", "tutorial", "tips", "why", "we", "moved", "from",
              "google", "cookie", "free", "gdpr", "compliant", "dashboard", "metrics", "news",
              "weekly", "roundup", "links", "list", "startup", "saas", "growth", "seo"]
GOOGLE_DOMAINS = ["com", "de", "co.uk", "fr", "es", "it", "nl", "ca", "com.au", "co.in",
                  "com.br", "pl", "se", "ch", "at", "be", "dk", "fi", "no", "pt", "ie",
                  "co.jp", "com.mx", "com.tr", "ru", "cz", "gr", "hu", "ro", "co.za",
                  "com.ar", "cl", "co.kr", "com.sg", "co.nz", "com.hk", "co.id", "com.ua"]


def slug(n: int) -> str:
    return "-".join(RNG.choice(SLUG_WORDS) for _ in range(n))


def referrers() -> dict[str, float]:
    out: dict[str, float] = {}

    def add(r: str, share: float) -> None:
        out[r] = out.get(r, 0.0) + share

    add("", 0.42)  # direct: no referrer at all
    # Search ~ 33%. Engines send only the origin under the default referrer policy.
    for tld, share in zip(GOOGLE_DOMAINS, decay(len(GOOGLE_DOMAINS), 0.8)):
        add(f"https://www.google.{tld}/", 0.27 * share)
    add("https://www.google.com/search?q=privacy+friendly+analytics", 0.001)
    add("android-app://com.google.android.googlequicksearchbox/", 0.004)
    add("android-app://com.google.android.gm/", 0.001)
    for engine, share in [("https://www.bing.com/", 0.025), ("https://duckduckgo.com/", 0.015),
                          ("https://search.yahoo.com/", 0.004), ("https://www.ecosia.org/", 0.004),
                          ("https://yandex.ru/", 0.003), ("https://search.brave.com/", 0.003),
                          ("https://www.qwant.com/", 0.001), ("https://www.startpage.com/", 0.001),
                          ("https://kagi.com/", 0.001), ("https://www.baidu.com/", 0.0005),
                          ("https://cn.bing.com/", 0.001), ("https://uk.search.yahoo.com/", 0.0005),
                          ("https://search.naver.com/", 0.0003), ("https://www.so.com/", 0.0002)]:
        add(engine, share)
    # Social and communities ~ 10%.
    for _ in range(120):
        add(f"https://t.co/{''.join(RNG.choice('ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789') for _ in range(10))}",
            0.012 / 120)
    for host, share in [("https://l.facebook.com/", 0.012), ("https://m.facebook.com/", 0.005),
                        ("https://www.facebook.com/", 0.006), ("https://lm.facebook.com/", 0.002),
                        ("https://l.instagram.com/", 0.005), ("https://www.linkedin.com/", 0.006),
                        ("https://x.com/", 0.003), ("https://bsky.app/", 0.002),
                        ("https://www.threads.net/", 0.001), ("https://www.youtube.com/", 0.003),
                        ("https://m.youtube.com/", 0.001), ("https://www.pinterest.com/", 0.001),
                        ("https://www.tiktok.com/", 0.001), ("https://lnkd.in/", 0.001)]:
        add(host, share)
    for _ in range(60):
        add(f"https://www.reddit.com/r/{RNG.choice(['rust', 'selfhosted', 'webdev', 'privacy', 'programming', 'startups', 'SaaS', 'degoogle', 'homelab', 'opensource'])}/comments/"
            f"{''.join(RNG.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(7))}/{slug(RNG.randint(3, 7)).replace('-', '_')}/",
            0.012 / 60)
    for _ in range(40):
        add(f"https://news.ycombinator.com/item?id={RNG.randint(38000000, 42500000)}", 0.008 / 40)
    add("https://news.ycombinator.com/", 0.004)
    for instance in ["mastodon.social", "fosstodon.org", "hachyderm.io", "infosec.exchange", "mas.to",
                     "chaos.social", "mstdn.social", "techhub.social"]:
        add(f"https://{instance}/", 0.0015)
    for _ in range(30):
        add(f"https://github.com/{RNG.choice(WORDS)}{RNG.choice(WORDS)}/{RNG.choice(WORDS)}-{RNG.choice(WORDS)}", 0.006 / 30)
    add("https://github.com/", 0.002)
    # Email and AI assistants ~ 2.5%.
    for host, share in [("https://mail.google.com/", 0.006), ("https://outlook.live.com/", 0.003),
                        ("https://outlook.office.com/", 0.002), ("https://mail.yahoo.com/", 0.001),
                        ("https://chatgpt.com/", 0.006), ("https://www.perplexity.ai/", 0.002),
                        ("https://gemini.google.com/", 0.001), ("https://claude.ai/", 0.001),
                        ("https://copilot.microsoft.com/", 0.0005)]:
        add(host, share)
    # Long tail of blogs, newsletters, docs and aggregators ~ 11%.
    hosts = set()
    while len(hosts) < 420:
        sub = RNG.choice(["", "", "", "www.", "blog.", "docs.", "news."])
        hosts.add(f"{sub}{RNG.choice(WORDS)}{RNG.choice(WORDS)}.{RNG.choice(TLDS)}")
    hosts = sorted(hosts)
    RNG.shuffle(hosts)
    zipf = [1 / (i + 1) ** 0.9 for i in range(len(hosts))]
    total = sum(zipf)
    for host, z in zip(hosts, zipf):
        share = 0.11 * z / total
        pages = RNG.choice([1, 1, 2, 3])
        for _ in range(pages):
            kind = RNG.random()
            if kind < 0.45:
                path = f"/{RNG.choice(['blog', 'posts', 'articles', 'p'])}/{slug(RNG.randint(3, 8))}/"
            elif kind < 0.7:
                path = f"/{RNG.randint(2019, 2025)}/{RNG.randint(1, 12):02d}/{slug(RNG.randint(2, 6))}"
            elif kind < 0.85:
                path = f"/{slug(RNG.randint(1, 4))}"
            else:
                path = "/"
            scheme = "http" if RNG.random() < 0.03 else "https"
            add(f"{scheme}://{host}{path}", share / pages)
    return out


def write(path: Path, header: str, weights: dict[str, float]) -> None:
    scale = TOTAL_WEIGHT / sum(weights.values())
    rows = sorted(((max(1, round(share * scale)), text) for text, share in weights.items()),
                  key=lambda r: (-r[0], r[1]))
    for weight, text in rows:
        assert "\t" not in text and "\n" not in text, text
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for weight, text in rows:
            f.write(f"{weight}\t{text}\n")
    print(f"{path.name}: {len(rows)} rows, total weight {sum(w for w, _ in rows)}")


def main() -> None:
    uas = user_agents()
    refs = referrers()
    assert len(uas) >= 1000, len(uas)
    assert len(refs) >= 1000, len(refs)
    write(HERE / "user_agents.tsv", "weight\tuser_agent", uas)
    write(HERE / "referrers.tsv", "weight\treferrer", refs)


if __name__ == "__main__":
    main()

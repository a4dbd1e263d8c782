"""Turns the labelled corpora into JSON lines for benches/accuracy/main.rs.

ua.jsonl: one object per labelled User-Agent of Matomo's device-detector fixtures:
  {"file", "ua", "bot": bool, "bot_category", "client_type", "browser", "browser_version",
   "browser_family", "os", "os_version", "os_family", "device", "headers"}
  headers: lower-case names; the client hints as a browser sends them (`sec-ch-ua`,
  `sec-ch-ua-mobile`, `sec-ch-ua-platform`), also where a fixture gives them as
  `navigator.userAgentData` (`brands`, `mobile`, `platform`) instead
referers.jsonl: one object per host of Snowplow's referer database:
  {"medium", "name", "host"}
"""
import json
import pathlib
import sys

import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def s(v):
    return "" if v is None else str(v)


def sf_string(v):
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def headers(item):
    h = item.get("headers") or {}
    out = {k.lower(): s(v) for k, v in h.items() if not isinstance(v, (list, dict))}
    # YAML took the quotes off `Sec-CH-UA-Platform: "Android"`; the header has them.
    platform = out.get("sec-ch-ua-platform")
    if platform and not platform.startswith('"'):
        out["sec-ch-ua-platform"] = sf_string(platform)
    # Some fixtures give the hints as navigator.userAgentData, not as headers.
    brands = h.get("brands")
    if isinstance(brands, list) and "sec-ch-ua" not in out:
        out["sec-ch-ua"] = ", ".join(
            f"{sf_string(b.get('brand', ''))};v={sf_string(b.get('version', ''))}"
            for b in brands
            if isinstance(b, dict)
        )
    if isinstance(h.get("mobile"), bool) and "sec-ch-ua-mobile" not in out:
        out["sec-ch-ua-mobile"] = "?1" if h["mobile"] else "?0"
    if isinstance(h.get("platform"), str) and "sec-ch-ua-platform" not in out:
        out["sec-ch-ua-platform"] = sf_string(h["platform"])
    return out


def fixtures(root: pathlib.Path, out):
    n = 0
    for path in sorted(root.glob("*.yml")):
        docs = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or []
        for item in docs:
            if not isinstance(item, dict) or "user_agent" not in item:
                continue
            bot = item.get("bot")
            client = item.get("client") or {}
            os_ = item.get("os") or {}
            device = item.get("device") or {}
            row = {
                "file": path.name,
                "ua": s(item["user_agent"]),
                "bot": bot is not None,
                "bot_category": s((bot or {}).get("category")) if isinstance(bot, dict) else "",
                "client_type": s(client.get("type")) if isinstance(client, dict) else "",
                "browser": s(client.get("name")) if isinstance(client, dict) else "",
                "browser_version": s(client.get("version")) if isinstance(client, dict) else "",
                "browser_family": s(item.get("browser_family")),
                "os": s(os_.get("name")) if isinstance(os_, dict) else "",
                "os_version": s(os_.get("version")) if isinstance(os_, dict) else "",
                "os_family": s(item.get("os_family")),
                "device": s(device.get("type")) if isinstance(device, dict) else "",
                "headers": headers(item),
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def referers(path: pathlib.Path, out):
    n = 0
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    for medium, providers in data.items():
        for name, spec in (providers or {}).items():
            for host in (spec or {}).get("domains") or []:
                out.write(json.dumps({"medium": medium, "name": name, "host": host}) + "\n")
                n += 1
    return n


def main():
    fixtures_dir, referers_yml, out_dir = map(pathlib.Path, sys.argv[1:4])
    with open(out_dir / "ua.jsonl", "w", encoding="utf-8") as f:
        print(f"user agents: {fixtures(fixtures_dir, f)}", file=sys.stderr)
    with open(out_dir / "referers.jsonl", "w", encoding="utf-8") as f:
        print(f"referer hosts: {referers(referers_yml, f)}", file=sys.stderr)


if __name__ == "__main__":
    main()

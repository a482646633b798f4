#!/usr/bin/env python3
"""One-off harvest of real MCP servers' tools/list answers (the benign side of the corpus).

For each candidate package (npm or PyPI, chosen from the registries' package lists by name and
summary, most downloaded first), install it into a scratch directory with the ordinary client,
then run it once over stdio inside an empty network namespace (`unshare -rn`: no network, not
even loopback), send initialize + tools/list, and keep the tools. Every step is bounded in time.
Output: one JSON file per server under corpus/harvest/servers/, with package name and version.

Usage: harvest.py CANDIDATES.tsv OUTDIR [--workers N] [--deadline-min M]
CANDIDATES.tsv: registry<TAB>package<TAB>version per line.
"""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

INSTALL_TIMEOUT = 180
RUN_TIMEOUT = 25
DUMMY_ENV = {
    k: "dummy-value-for-listing"
    for k in [
        "API_KEY", "API_TOKEN", "ACCESS_TOKEN", "AUTH_TOKEN", "TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
        "GITHUB_TOKEN", "GITHUB_PERSONAL_ACCESS_TOKEN", "GITLAB_PERSONAL_ACCESS_TOKEN", "SLACK_BOT_TOKEN",
        "SLACK_TEAM_ID", "BRAVE_API_KEY", "TAVILY_API_KEY", "FIRECRAWL_API_KEY", "NOTION_TOKEN",
        "NOTION_API_KEY", "STRIPE_SECRET_KEY", "SUPABASE_ACCESS_TOKEN", "CIRCLECI_TOKEN", "DD_API_KEY",
        "DD_APP_KEY", "DATADOG_API_KEY", "HUBSPOT_ACCESS_TOKEN", "PRIVATE_APP_ACCESS_TOKEN", "SHORTCUT_API_TOKEN",
        "APIFY_TOKEN", "JIRA_API_TOKEN", "ATLASSIAN_API_TOKEN", "LINEAR_API_KEY", "SENTRY_AUTH_TOKEN",
        "GOOGLE_MAPS_API_KEY", "EXA_API_KEY", "PERPLEXITY_API_KEY", "SERPER_API_KEY", "TWILIO_AUTH_TOKEN",
        "MINIMAX_API_KEY", "ZAI_API_KEY", "Z_AI_API_KEY", "MORPH_API_KEY", "CONTEXT7_API_KEY",
        "PAGERDUTY_USER_API_KEY", "ROOTLY_API_TOKEN", "GRAFANA_API_KEY", "QDRANT_API_KEY", "OPENROUTER_API_KEY",
    ]
}
DUMMY_ENV.update({
    "JIRA_URL": "http://127.0.0.1:9", "CONFLUENCE_URL": "http://127.0.0.1:9", "GRAFANA_URL": "http://127.0.0.1:9",
    "QDRANT_URL": "http://127.0.0.1:9", "COLLECTION_NAME": "c", "DATABASE_URL": "postgresql://u:p@127.0.0.1:9/db",
    "REDIS_URL": "redis://127.0.0.1:9", "SLACK_TEAM_ID": "T000", "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIDUMMY", "AWS_SECRET_ACCESS_KEY": "dummy", "JIRA_USERNAME": "u", "JIRA_EMAIL": "u@example.org",
    "NO_COLOR": "1", "npm_config_offline": "true", "PYTHONUNBUFFERED": "1",
})


def rpc(proc, msg):
    proc.stdin.write((json.dumps(msg) + "\n").encode())
    proc.stdin.flush()


def read_answer(proc, want_id, deadline):
    buf = b""
    while time.time() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if not r:
            if proc.poll() is not None:
                return None
            continue
        chunk = os.read(proc.stdout.fileno(), 1 << 20)
        if not chunk:
            return None
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if isinstance(m, dict) and m.get("id") == want_id:
                return m
            if isinstance(m, dict) and "method" in m and "id" in m:  # a server request: refuse
                rpc(proc, {"jsonrpc": "2.0", "id": m["id"], "error": {"code": -32601, "message": "no"}})
    return None


def list_tools(cmd, cwd, env):
    """Runs cmd in an empty network namespace; returns (tools, server_info) or (None, why)."""
    full = ["unshare", "-rn", "timeout", "-k", "3", str(RUN_TIMEOUT)] + cmd
    try:
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except OSError as e:
        return None, str(e)
    deadline = time.time() + RUN_TIMEOUT
    try:
        rpc(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "corpus-harvest", "version": "1"}}})
        init = read_answer(proc, 1, deadline)
        if not init or "result" not in init:
            return None, "no initialize answer"
        rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools, cursor, n = [], None, 2
        for _ in range(20):
            params = {"cursor": cursor} if cursor else {}
            rpc(proc, {"jsonrpc": "2.0", "id": n, "method": "tools/list", "params": params})
            ans = read_answer(proc, n, deadline)
            n += 1
            if not ans or "result" not in ans:
                return (tools or None), "no tools/list answer"
            tools += ans["result"].get("tools", [])
            cursor = ans["result"].get("nextCursor")
            if not cursor:
                break
        return tools, init["result"].get("serverInfo")
    except (BrokenPipeError, OSError) as e:
        return None, str(e)
    finally:
        try:
            proc.kill()
        except OSError:
            pass
        proc.wait()


def npm_commands(d, pkg):
    pj = os.path.join(d, "node_modules", pkg, "package.json")
    meta = json.load(open(pj))
    b = meta.get("bin")
    if isinstance(b, str):
        bins = [b]
    elif isinstance(b, dict):
        bins = sorted(b.values(), key=lambda v: ("mcp" not in v and "server" not in v, v))
    else:
        bins = [meta.get("main") or "index.js"]
    base = os.path.join(d, "node_modules", pkg)
    return meta.get("version"), [["node", os.path.join(base, x)] for x in bins[:2]]


def py_commands(d, pkg, before):
    bindir = os.path.join(d, "v", "bin")
    new = sorted(set(os.listdir(bindir)) - before)
    norm = pkg.lower().replace("_", "-")
    new.sort(key=lambda s: (s.lower() != norm, "mcp" not in s.lower(), s))
    out = subprocess.run([os.path.join(bindir, "python"), "-c",
                          f"import importlib.metadata as m; print(m.version('{pkg}'))"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or None, [[os.path.join(bindir, s)] for s in new[:2]]


def harvest(reg, pkg, ver, outdir, work):
    safe = (reg + "__" + pkg.replace("/", "__").replace("@", "")).lower()
    out = os.path.join(outdir, safe + ".json")
    if os.path.exists(out):
        return pkg, "done before"
    d = tempfile.mkdtemp(dir=work)
    env = dict(os.environ, HOME=d, **DUMMY_ENV)
    install_env = dict(os.environ)
    try:
        if reg == "npm":
            r = subprocess.run(["npm", "install", "--prefix", d, "--no-audit", "--no-fund", "--ignore-scripts",
                                "--omit=dev", "--loglevel=error", f"{pkg}@{ver}"],
                               capture_output=True, timeout=INSTALL_TIMEOUT, env=install_env)
            if r.returncode:
                return pkg, "install failed"
            version, cmds = npm_commands(d, pkg)
        else:
            subprocess.run([sys.executable, "-m", "venv", os.path.join(d, "v")], check=True, timeout=60)
            before = set(os.listdir(os.path.join(d, "v", "bin")))
            r = subprocess.run([os.path.join(d, "v", "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                                f"{pkg}=={ver}"], capture_output=True, timeout=INSTALL_TIMEOUT, env=install_env)
            if r.returncode:
                return pkg, "install failed"
            version, cmds = py_commands(d, pkg, before)
        work_dir = os.path.join(d, "data")
        os.makedirs(work_dir, exist_ok=True)
        why = "no command"
        for cmd in cmds:
            for extra in ([], [work_dir], ["stdio"]):
                tools, info = list_tools(cmd + extra, work_dir, env)
                if tools:
                    json.dump({"registry": reg, "package": pkg, "version": version or ver,
                               "server_info": info, "args": ["<dir>" if a == work_dir else a for a in extra],
                               "tools": tools}, open(out, "w"), indent=1, ensure_ascii=False, sort_keys=True)
                    return pkg, f"{len(tools)} tools"
                why = info
        return pkg, f"no tools ({why})"
    except subprocess.TimeoutExpired:
        return pkg, "timeout"
    except Exception as e:  # a broken package must not stop the harvest
        return pkg, f"error: {e}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    cands, outdir = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 2
    deadline = time.time() + 60 * float(sys.argv[sys.argv.index("--deadline-min") + 1]) \
        if "--deadline-min" in sys.argv else float("inf")
    os.makedirs(outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="harvest-")
    rows = [l.rstrip("\n").split("\t") for l in open(cands) if l.strip() and not l.startswith("#")]

    def job(row):
        if time.time() > deadline:
            return row[1], "skipped (deadline)"
        return harvest(row[0], row[1], row[2], outdir, work)

    with ThreadPoolExecutor(workers) as ex:
        for pkg, status in ex.map(job, rows):
            print(f"{pkg}\t{status}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

// An agent built on the official TypeScript SDK (`Client` + `StreamableHTTPClientTransport`):
// connects to URL, lists the tools, then makes a bounded run of mixed tool calls and prints one
// JSON line per event on stdout, for tests/integration/test_failover_agents.py and
// testbed/bench_session_failover.py to judge:
//   {"event":"connected","session":ID,"tools":[...]}
//   {"event":"call","i":N,"tool":T,"outcome":"ok"|"is_error"|"exception","text":...,
//    "served_by":CLUSTER,"at":UNIX_S,"sid_before":ID,"sid_after":ID,"wire_sids":[...],"ms":...}
//   {"event":"transport_error","message":...}   (the transport's own errors, e.g. its GET stream)
//   {"event":"reconnected","session":ID}         (only with --reconnect, after an exception)
//   {"event":"done","calls":N}
// Usage: node ts_agent.mjs URL [--calls N] [--seconds S] [--pause-ms MS] [--seed N] [--host H]
//        [--reconnect] [--timeout-ms MS] [--tool NAME] [--wait-go]
// --tool calls only that tool of the mix; --wait-go waits, once connected, for a line "go" on
// stdin before the first call (a test changes the servers between the two).
// The run ends after --calls calls or --seconds seconds, whichever comes first; a line on stdin
// saying "stop" ends it early.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

// The SDK is pinned in testbed/package.json (installed by `make setup`).
const require = createRequire(new URL('../../testbed/package.json', import.meta.url));
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');

function parseArgs(argv) {
  const opts = { url: argv[0], calls: 100, seconds: 60, pauseMs: 20, seed: 1, host: undefined, reconnect: false,
                 timeoutMs: 15000, tool: undefined, waitGo: false };
  for (let i = 1; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => argv[++i];
    if (flag === '--calls') opts.calls = Number(value());
    else if (flag === '--seconds') opts.seconds = Number(value());
    else if (flag === '--pause-ms') opts.pauseMs = Number(value());
    else if (flag === '--seed') opts.seed = Number(value());
    else if (flag === '--host') opts.host = value();
    else if (flag === '--reconnect') opts.reconnect = true;
    else if (flag === '--timeout-ms') opts.timeoutMs = Number(value());
    else if (flag === '--tool') opts.tool = value();
    else if (flag === '--wait-go') opts.waitGo = true;
    else throw new Error(`unknown argument ${flag}`);
  }
  if (!opts.url) throw new Error('usage: node ts_agent.mjs URL [options]');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// A small deterministic generator, so a run's call mix is reproducible from its seed.
function rng(seed) {
  let s = (Math.imul(seed, 2654435761) ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

// Read-only tools (the server declares them readOnlyHint/idempotentHint) and the one unsafe tool.
const MIX = [
  ['echo', 3, i => ({ text: `ts ${i}` })],
  ['whoami', 2, () => ({})],
  ['add', 1, i => ({ a: i, b: 1 })],
  ['increment', 2, () => ({})],
];
const WEIGHT = MIX.reduce((n, [, w]) => n + w, 0);

function pick(random) {
  if (opts.tool) return MIX.find(([name]) => name === opts.tool) ?? [opts.tool, 1, () => ({})];
  let r = random() * WEIGHT;
  for (const entry of MIX) {
    r -= entry[1];
    if (r < 0) return entry;
  }
  return MIX[MIX.length - 1];
}

// What the wire carried: the session ids the agent sent and was sent back, and which cluster
// answered each POST (the sidecar's x-mcp-warden-served-by). Calls are sequential, so the
// POSTs since the last call started belong to that call.
const wire = { sids: new Set(), servedBy: null };

async function observingFetch(url, init) {
  const method = (init?.method ?? 'GET').toUpperCase();
  const sent = new Headers(init?.headers ?? {}).get('mcp-session-id');
  if (sent) wire.sids.add(sent);
  const res = await fetch(url, init);
  const back = res.headers.get('mcp-session-id');
  if (back) wire.sids.add(back);
  if (method === 'POST') wire.servedBy = res.headers.get('x-mcp-warden-served-by');
  return res;
}

async function connect() {
  const headers = opts.host ? { Host: opts.host } : undefined;
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
    fetch: observingFetch,
    requestInit: headers ? { headers } : undefined,
  });
  const client = new Client({ name: 'mcp-warden-ts-agent', version: '1.0.0' });
  transport.onerror = err => emit({ event: 'transport_error', message: String(err?.message ?? err) });
  await client.connect(transport, { timeout: opts.timeoutMs });
  // connect() installs its own onerror wrapper: keep reporting through it.
  const inner = transport.onerror;
  transport.onerror = err => {
    emit({ event: 'transport_error', message: String(err?.message ?? err) });
    inner?.(err);
  };
  const listed = await client.listTools(undefined, { timeout: opts.timeoutMs });
  return { client, transport, tools: listed.tools.map(t => t.name) };
}

function textOf(result) {
  const first = Array.isArray(result?.content) ? result.content[0] : undefined;
  return first && typeof first.text === 'string' ? first.text : null;
}

async function main() {
  let stopped = false;
  let go;
  const going = new Promise(resolve => { go = resolve; });
  createInterface({ input: process.stdin }).on('line', line => {
    if (line.trim() === 'stop') stopped = true;
    if (line.trim() === 'go') go();
  });
  let { client, transport, tools } = await connect();
  emit({ event: 'connected', session: transport.sessionId ?? null, tools });
  if (opts.waitGo) await going;
  const random = rng(opts.seed);
  const deadline = Date.now() + opts.seconds * 1000;
  let i = 0;
  for (; i < opts.calls && Date.now() < deadline && !stopped; i++) {
    const [tool, , args] = pick(random);
    const sidBefore = transport.sessionId ?? null;
    wire.sids.clear();
    wire.servedBy = null;
    const started = Date.now();
    const line = { event: 'call', i, tool, at: started / 1000, sid_before: sidBefore };
    let failedHard = false;
    try {
      const result = await client.callTool({ name: tool, arguments: args(i) }, undefined, { timeout: opts.timeoutMs });
      line.outcome = result.isError ? 'is_error' : 'ok';
      line.text = textOf(result);
    } catch (err) {
      line.outcome = 'exception';
      line.text = `${err?.constructor?.name ?? 'Error'}: ${err?.message ?? err}`;
      failedHard = true;
    }
    line.ms = Date.now() - started;
    line.served_by = wire.servedBy;
    line.sid_after = transport.sessionId ?? null;
    line.wire_sids = [...wire.sids];
    emit(line);
    if (failedHard && opts.reconnect) {
      // What a robust agent does when its session is broken: start over with a new session.
      await client.close().catch(() => {});
      try {
        ({ client, transport } = await connect());
        emit({ event: 'reconnected', session: transport.sessionId ?? null });
      } catch (err) {
        emit({ event: 'transport_error', message: `reconnect: ${err?.message ?? err}` });
      }
    }
    if (opts.pauseMs > 0) await new Promise(r => setTimeout(r, opts.pauseMs));
  }
  emit({ event: 'done', calls: i });
  // Ending the session (DELETE) is not part of what is measured: bound it.
  await Promise.race([transport.terminateSession().catch(() => {}), new Promise(r => setTimeout(r, 2000))]);
  await Promise.race([client.close().catch(() => {}), new Promise(r => setTimeout(r, 2000))]);
  process.exit(0);
}

main().catch(err => {
  emit({ event: 'fatal', message: String(err?.stack ?? err) });
  process.exit(1);
});

// The trust dashboard. Calls the aggregator's API with the bearer token the user pastes (kept in
// this tab's sessionStorage only), refreshes the scores with their ETag every few seconds, and
// writes every server-provided string through textContent (never parsed as HTML).
'use strict';

(() => {
  const REFRESH_MS = 3000;
  const TOKEN_KEY = 'mcp-warden-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STATE_ORDER = { quarantined: 0, degraded: 1, trusted: 2 };

  let token = null;
  let etag = null;
  let scores = [];
  let version = null;
  let selected = null;
  let timer = null;
  let running = false;
  let again = false;

  const $ = (id) => document.getElementById(id);

  // An element with attributes; string children become text nodes (Node.append never parses).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const fixed = (v, n = 3) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(n) : '–');
  const when = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleString() : '–');
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

  function setStatus(text, error) {
    const s = $('status');
    s.textContent = text;
    s.className = error ? 'error' : 'muted';
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body, ifNoneMatch) {
    const headers = { Authorization: `Bearer ${token}` };
    if (ifNoneMatch) headers['If-None-Match'] = ifNoneMatch;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 304) return { status: 304 };
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!r.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${r.status}`;
      throw new ApiError(r.status, msg);
    }
    return { status: r.status, etag: r.headers.get('ETag'), data };
  }

  // ---------------------------------------------------------------------------------------
  // Server list

  function stateBadge(state) {
    return el('span', { class: `state ${STATE_ORDER[state] === undefined ? '' : state}` }, state);
  }

  function scoreCell(v) {
    const fill = el('span');
    fill.style.width = `${Math.max(0, Math.min(1, Number(v) || 0)) * 100}%`;
    return el('td', { class: 'num' }, el('span', { class: 'bar' }, fill), fixed(v));
  }

  function renderServers() {
    const counts = { trusted: 0, degraded: 0, quarantined: 0 };
    for (const s of scores) if (s.state in counts) counts[s.state] += 1;
    for (const k of Object.keys(counts)) $(`count-${k}`).textContent = String(counts[k]);
    $('version').textContent = version === null ? '–' : String(version);

    const sorted = [...scores].sort(
      (a, b) => (STATE_ORDER[a.state] ?? 3) - (STATE_ORDER[b.state] ?? 3) || (a.server < b.server ? -1 : 1),
    );
    const rows = sorted.map((s) => {
      const b = s.breakdown || {};
      const tr = el(
        'tr',
        { class: s.server === selected ? 'selected' : '' },
        el('td', { class: 'name' }, s.server),
        el('td', null, stateBadge(s.state)),
        scoreCell(s.score),
        el('td', { class: 'num' }, fixed(b.performance)),
        el('td', { class: 'num' }, fixed(b.security)),
        el('td', { class: 'num' }, fixed(b.reputation)),
        el('td', { class: 'why' }, s.quarantine_reason || b.explanation || ''),
      );
      tr.dataset.server = s.server;
      tr.dataset.state = s.state;
      tr.addEventListener('click', () => select(s.server));
      return tr;
    });
    $('servers').tBodies[0].replaceChildren(...rows);
    $('empty').hidden = scores.length > 0;
    if (!selected && sorted.length) select(sorted[0].server, true);
  }

  function select(name, quiet) {
    if (selected !== name) {
      selected = name;
      $('action-result').textContent = '';
      $('approve-result').textContent = '';
      history.replaceState(null, '', `#${encodeURIComponent(name)}`);
    }
    for (const tr of $('servers').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.server === name);
    if (!quiet) refresh();
  }

  // ---------------------------------------------------------------------------------------
  // One server

  function plot(d) {
    const W = 640, H = 220, L = 40, R = 14, T = 10, B = 26;
    const pts = (d.history || []).map((h) => ({ t: h.at_ms, s: h.score, st: h.state }));
    pts.push({ t: d.generated_at_ms, s: d.score, st: d.state });
    const t1 = Math.max(...pts.map((p) => p.t));
    const t0 = Math.min(Math.min(...pts.map((p) => p.t)), t1 - 10000);
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (s) => T + (1 - Math.max(0, Math.min(1, s))) * (H - T - B);
    const g = $('plot');
    const parts = [];
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      parts.push(svg('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, v.toFixed(2)));
    }
    for (const [t, anchor] of [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]) {
      parts.push(svg('text', { class: 'axis', x: x(t), y: H - 8, 'text-anchor': anchor }, clock(t)));
    }
    const path = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.s).toFixed(1)}`).join(' ');
    parts.push(svg('path', { class: 'line', d: path }));
    for (const p of pts) {
      const dot = svg('circle', { class: `dot ${p.st}`, cx: x(p.t).toFixed(1), cy: y(p.s).toFixed(1), r: 3 });
      dot.append(svg('title', {}, `${clock(p.t)}  ${fixed(p.s)}  ${p.st}`));
      parts.push(dot);
    }
    g.replaceChildren(...parts);
  }

  function facts(d) {
    const b = d.breakdown || {};
    const t = d.traffic || {};
    const r = d.ratings || {};
    const rows = [
      ['Performance', `${fixed(b.performance)} (${fixed(b.successes, 1)} ok / ${fixed(b.failures, 1)} failed, decayed)`],
      ['Security', `${fixed(b.security)} (penalty ${fixed(b.security_penalty)})`],
      ['Reputation', `${fixed(b.reputation)} (${r.count ?? 0} ratings, weight ${fixed(b.rating_weight, 2)})`],
      ['Calls reported', `${t.success ?? 0} ok, ${t.failures ?? 0} failed, ${t.slow ?? 0} slow`],
      ['Mean latency', t.latency_mean_ms === undefined ? '–' : `${fixed(t.latency_mean_ms, 1)} ms`],
      ['Last report', when(t.last_report_ms)],
      ['First seen', when(d.first_seen_ms)],
      ['Auto quarantine', d.auto_quarantine_armed ? 'armed' : 'disarmed (released by an operator)'],
    ];
    $('facts').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
  }

  function signalRows(tbody, items, textKey, byKey) {
    const rows = items.map((e) =>
      el(
        'tr',
        null,
        el('td', null, when(e.last_ms)),
        el('td', { class: `sev-${e.severity}` }, e.severity),
        el('td', { class: 'mono' }, e.rule),
        el('td', { class: 'mono' }, e.tool || ''),
        el('td', null, e[textKey] || ''),
        el('td', { class: 'num' }, e.reports),
        el('td', null, e[byKey]),
      ),
    );
    if (!rows.length) rows.push(el('tr', null, el('td', { colspan: '7', class: 'muted' }, 'none')));
    tbody.replaceChildren(...rows);
  }

  // Held tool changes of the selected server, each with its Approve button.
  function heldRows(server, items) {
    const rows = items.map((h) => {
      const button = el('button', { type: 'button', class: 'approve' }, 'Approve');
      button.dataset.fingerprint = h.fingerprint;
      button.addEventListener('click', () => approve(server, h.fingerprint, button));
      const why = typeof h.why === 'string' ? h.why.replace(/^.*\): /, '') : '';
      return el(
        'tr',
        null,
        el('td', null, when(h.last_ms)),
        el('td', { class: 'mono' }, h.tool || ''),
        el('td', { class: 'mono' }, h.fingerprint),
        el('td', null, why),
        el('td', { class: 'num' }, h.reports),
        el('td', null, h.reported_by),
        el('td', null, button),
      );
    });
    if (!rows.length) rows.push(el('tr', null, el('td', { colspan: '7', class: 'muted' }, 'none')));
    $('held').tBodies[0].replaceChildren(...rows);
  }

  async function approve(server, fingerprint, button) {
    const out = $('approve-result');
    const reason = $('reason').value.trim();
    if (!reason) {
      out.textContent = 'A reason is required (it goes to the audit log).';
      out.className = 'error';
      return;
    }
    button.disabled = true;
    out.textContent = '';
    try {
      const r = await api('POST', `/v1/servers/${encodeURIComponent(server)}/approvals`, { fingerprint, reason });
      const tool = r.data.tool ? ` of ${r.data.tool}` : '';
      out.textContent = `Approved ${r.data.fingerprint}${tool} on ${r.data.server} (audit entry ${r.data.audit_id}); sidecars pick it up with scores version ${r.data.version}.`;
      out.className = 'ok';
      $('reason').value = '';
      etag = null;
    } catch (e) {
      out.textContent = e instanceof ApiError ? `Refused (${e.status}): ${e.message}` : `Failed: ${e.message}`;
      out.className = 'error';
      button.disabled = false;
      if (e instanceof ApiError && e.status === 401) failed(e);
    }
    refresh();
  }

  function renderDetail(d) {
    $('detail').hidden = false;
    $('detail').dataset.server = d.server;
    $('detail-name').textContent = d.server;
    const st = $('detail-state');
    st.textContent = d.state;
    st.className = `state ${d.state}`;
    $('detail-score').textContent = fixed(d.score);
    $('detail-explanation').textContent = (d.breakdown && d.breakdown.explanation) || '';
    const q = $('detail-quarantine');
    if (d.quarantine) {
      const how = d.quarantine.automatic ? 'automatically ' : '';
      q.textContent = `Quarantined ${how}by ${d.quarantine.by} at ${when(d.quarantine.since_ms)}: ${d.quarantine.reason}`;
      q.hidden = false;
    } else {
      q.hidden = true;
    }
    $('quarantine').disabled = d.state === 'quarantined';
    $('release').disabled = d.state !== 'quarantined';
    plot(d);
    facts(d);
    signalRows($('events').tBodies[0], d.security_events || [], 'evidence', 'reported_by');
    signalRows($('flags').tBodies[0], d.flags || [], 'description', 'flagged_by');
  }

  // ---------------------------------------------------------------------------------------
  // Refresh loop and actions

  async function refreshOnce() {
    const r = await api('GET', '/v1/scores', undefined, etag);
    if (r.status !== 304) {
      etag = r.etag;
      scores = Array.isArray(r.data && r.data.servers) ? r.data.servers : [];
      version = r.data ? r.data.version : null;
      renderServers();
    }
    if (selected) {
      const name = selected;
      try {
        const d = await api('GET', `/v1/servers/${encodeURIComponent(name)}`);
        const held = await api('GET', `/v1/approvals?server=${encodeURIComponent(name)}`);
        if (name === selected) {
          renderDetail(d.data);
          heldRows(name, Array.isArray(held.data && held.data.held) ? held.data.held : []);
        }
      } catch (e) {
        if (e.status !== 404) throw e;
        $('detail').hidden = true;
      }
    }
    setStatus(`Token accepted. Updated ${clock(Date.now())}; refreshing every ${REFRESH_MS / 1000} s.`);
  }

  async function refresh() {
    if (!token) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      do {
        again = false;
        await refreshOnce();
      } while (again);
    } catch (e) {
      failed(e);
    } finally {
      running = false;
      if (token) timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  function failed(e) {
    if (e instanceof ApiError && e.status === 401) {
      forget();
      setStatus(`The aggregator refused the token: ${e.message}`, true);
    } else if (e instanceof ApiError) {
      setStatus(`The aggregator answered ${e.status}: ${e.message}`, true);
    } else {
      setStatus(`Cannot reach the aggregator: ${e.message}`, true);
    }
  }

  async function decide(action) {
    const out = $('action-result');
    const reason = $('reason').value.trim();
    if (!selected) return;
    if (!reason) {
      out.textContent = 'A reason is required (it goes to the audit log).';
      out.className = 'error';
      return;
    }
    $('quarantine').disabled = true;
    $('release').disabled = true;
    out.textContent = '';
    try {
      const r = await api('POST', `/v1/servers/${encodeURIComponent(selected)}/${action}`, { reason });
      const verb = action === 'quarantine' ? 'Quarantined' : 'Released';
      out.textContent = `${verb} ${r.data.server}: now ${r.data.state} (audit entry ${r.data.audit_id}).`;
      out.className = 'ok';
      $('reason').value = '';
      etag = null;
    } catch (e) {
      out.textContent = e instanceof ApiError ? `Refused (${e.status}): ${e.message}` : `Failed: ${e.message}`;
      out.className = 'error';
      if (e instanceof ApiError && e.status === 401) failed(e);
    }
    refresh();
  }

  function forget() {
    token = null;
    etag = null;
    clearTimeout(timer);
    sessionStorage.removeItem(TOKEN_KEY);
    $('main').hidden = true;
    $('token-forget').hidden = true;
  }

  function use(t) {
    token = t;
    etag = null;
    $('main').hidden = false;
    $('token-forget').hidden = false;
    setStatus('Loading…');
    refresh();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value.trim();
      $('token').value = '';
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      use(t);
    });
    $('token-forget').addEventListener('click', () => {
      forget();
      setStatus('Token forgotten.');
    });
    $('actions').addEventListener('submit', (ev) => ev.preventDefault());
    $('quarantine').addEventListener('click', () => decide('quarantine'));
    $('release').addEventListener('click', () => decide('release'));
    if (location.hash.length > 1) {
      try {
        selected = decodeURIComponent(location.hash.slice(1));
      } catch (_) {
        selected = null;
      }
    }
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) use(saved);
  });
})();

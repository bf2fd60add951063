// longshore console: renders each page from the dispatcher's API, as the signed-in token
// sees it. The token lives in this tab's sessionStorage only (gone when the tab closes) and
// is sent as an Authorization header, never in a URL. Data is put in the page as text
// (textContent), never as markup.
'use strict';
(() => {
  const TOKEN_KEY = 'longshore.token';
  const STATES = ['queued', 'running', 'succeeded', 'failed', 'superseded', 'dead_lettered', 'cancelled'];
  const SINCE = [['15m', 'last 15 minutes'], ['1h', 'last hour'], ['6h', 'last 6 hours'], ['24h', 'last 24 hours'], ['168h', 'last 7 days']];
  const GLYPH = { succeeded: '✓', failed: '✕', running: '▶', pending: '·', cancelled: '⊘' };
  const TERMINAL_ROLLOUT = ['succeeded', 'halted', 'cancelled'];
  const TERMINAL_OP = ['succeeded', 'failed', 'superseded', 'dead_lettered', 'cancelled'];
  let me = null;
  let page = null;
  const main = () => document.getElementById('main');

  // ---- DOM ----
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return add(el, ...children);
  }
  // Replaces el's children; arrays are flattened, and null, undefined and false left out.
  function nodes(children) {
    const out = [];
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      out.push(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return out;
  }
  function fill(el, ...children) {
    el.replaceChildren(...nodes(children));
    return el;
  }
  function add(el, ...children) {
    el.append(...nodes(children));
    return el;
  }
  const badge = (state) => h('span', { class: `badge state-${state}` }, String(state).replace(/_/g, ' '));
  const link = (href, ...text) => h('a', { href, 'data-nav': true }, ...text);
  const time = (ts) => ts ? h('time', { datetime: ts }, ts.replace('T', ' ').replace(/\.\d+/, '').replace('Z', ' UTC')) : '—';
  const facts = (pairs) => h('dl', { class: 'facts' },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  function table(caption, headers, rows, attrs) {
    return h('div', { class: 'scroll' }, h('table', attrs || {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
  }
  function notice(content, alert) {
    const n = document.getElementById('notice');
    n.setAttribute('role', alert ? 'alert' : 'status');
    fill(n, ...[content].flat());
  }
  const objectName = (o) => `${o.kind} ${o.namespace ? o.namespace + '/' : ''}${o.name}`;

  // ---- API ----
  class ApiError extends Error {
    constructor(problem, status) {
      super(problem.detail || problem.title);
      this.problem = problem;
      this.status = status;
    }
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  function headers(extra) {
    const hs = Object.assign({}, extra);
    const t = token();
    if (t) hs.Authorization = `Bearer ${t}`;
    return hs;
  }
  async function problemOf(resp) {
    const text = await resp.text().catch(() => '');
    try {
      const p = JSON.parse(text);
      if (p && typeof p === 'object') return p;
    } catch (_) { /* not JSON: described below */ }
    return { title: resp.statusText || `HTTP ${resp.status}`, status: resp.status, detail: text || undefined };
  }
  async function api(path, opts) {
    const { method = 'GET', body, signal } = opts || {};
    let resp;
    try {
      resp = await fetch(path, {
        method, signal, cache: 'no-store', credentials: 'omit',
        headers: headers(body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError({ title: 'The dispatcher could not be reached', detail: String(e.message || e) }, 0);
    }
    if (!resp.ok) throw new ApiError(await problemOf(resp), resp.status);
    return resp.status === 204 ? null : resp.json();
  }
  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });

  // Server-sent events over fetch, so the token goes in a header (EventSource cannot send
  // one). Reconnects with Last-Event-ID until `signal` aborts or onEvent returns false.
  async function follow(path, onEvent, signal, onState) {
    let lastId = null;
    while (!signal.aborted) {
      let again = true;
      try {
        const resp = await fetch(path, {
          signal, cache: 'no-store', credentials: 'omit',
          headers: headers(Object.assign({ Accept: 'text/event-stream' }, lastId === null ? {} : { 'Last-Event-ID': lastId })),
        });
        if (!resp.ok) {
          const p = await problemOf(resp);
          if (onState) onState(false);
          notice(problemView(p, resp.status), true);
          if (resp.status !== 503 && resp.status !== 429) return;
        } else {
          if (onState) onState(true);
          const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          let ev = { event: 'message', data: [], id: null };
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let i;
            while ((i = buf.indexOf('\n')) >= 0) {
              let line = buf.slice(0, i);
              buf = buf.slice(i + 1);
              if (line.endsWith('\r')) line = line.slice(0, -1);
              if (line === '') {
                if (ev.id !== null) lastId = ev.id;
                if (ev.data.length && onEvent(ev.event, ev.data.join('\n')) === false) again = false;
                ev = { event: 'message', data: [], id: null };
                if (!again) { reader.cancel().catch(() => {}); return; }
                continue;
              }
              if (line.startsWith(':')) continue;
              const c = line.indexOf(':');
              const field = c < 0 ? line : line.slice(0, c);
              let v = c < 0 ? '' : line.slice(c + 1);
              if (v.startsWith(' ')) v = v.slice(1);
              if (field === 'event') ev.event = v;
              else if (field === 'data') ev.data.push(v);
              else if (field === 'id') ev.id = v;
            }
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      if (onState) onState(false);
      await sleep(1000, signal);
    }
  }
  // Re-reads every `ms` while the page is open.
  async function every(ms, signal, fn) {
    while (!signal.aborted) {
      await sleep(ms, signal);
      if (signal.aborted) return;
      try { await fn(); } catch (e) { if (!signal.aborted && e instanceof ApiError) notice(problemView(e.problem, e.status), true); }
    }
  }
  const liveNote = () => h('p', { class: 'live', 'data-live': 'connecting' }, 'Connecting for live updates…');
  function setLive(el, on) {
    el.dataset.live = on ? 'on' : 'off';
    el.textContent = on ? 'Live: changes appear as they happen.' : 'Reconnecting for live updates…';
  }

  function problemView(p, status) {
    return h('section', { class: 'problem', role: 'alert' },
      h('h2', {}, p.title || 'Error'),
      p.detail ? h('p', { class: 'detail' }, p.detail) : null,
      Array.isArray(p.errors) && p.errors.length
        ? h('ul', {}, p.errors.map((e) => h('li', {}, h('code', {}, e.field), ': ', e.reason))) : null,
      h('p', { class: 'meta' }, `HTTP ${p.status || status || '—'}`, p.type ? ` · ${p.type}` : ''));
  }

  // ---- session ----
  async function loadSession() {
    try {
      me = await api('/v1/whoami');
    } catch (e) {
      me = null;
      if (!(e instanceof ApiError)) throw e;
      return e;
    }
    return null;
  }
  function renderSession() {
    const box = document.getElementById('session');
    if (me && token()) {
      fill(box, h('span', { class: 'who' }, `Signed in as ${me.who}`),
        h('button', { type: 'button', class: 'secondary', id: 'sign-out', onclick: signOut }, 'Sign out'));
      return;
    }
    const form = h('form', { id: 'sign-in', onsubmit: signIn },
      me ? h('span', { class: 'who' }, me.readOnly ? 'Read-only' : `Open API (${me.who})`) : null,
      h('label', { for: 'token-input', class: 'visually-hidden' }, 'API token'),
      h('input', { id: 'token-input', type: 'password', autocomplete: 'off', placeholder: 'API token', required: true }),
      h('button', { type: 'submit' }, 'Sign in'));
    fill(box, form);
  }
  async function signIn(e) {
    e.preventDefault();
    const input = document.getElementById('token-input');
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = '';
    const failed = await loadSession();
    if (failed) {
      sessionStorage.removeItem(TOKEN_KEY);
      await loadSession();
      notice(problemView(failed.problem, failed.status), true);
      renderSession();
      return;
    }
    notice(`Signed in as ${me.who}.`);
    renderSession();
    render();
  }
  async function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    await loadSession();
    notice('Signed out.');
    renderSession();
    render();
  }
  const mayWrite = () => me && !me.readOnly;

  // ---- pages ----
  async function operationsPage(root, _m, q, signal) {
    add(root, h('h1', {}, 'Operations'));
    const select = (name, label, options) => h('label', {}, label,
      h('select', { name }, options.map(([v, t]) => h('option', { value: v, selected: q.get(name) === v || null }, t))));
    const text = (name, label) => h('label', {}, label, h('input', { name, value: q.get(name) || '', size: 14 }));
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter operations' },
      select('state', 'State', [['', 'any state'], ...STATES.map((s) => [s, s.replace('_', ' ')])]),
      text('cluster', 'Cluster'), text('source', 'Source'),
      select('since', 'Changed in the', SINCE),
      h('button', { type: 'submit' }, 'Filter'));
    if (!q.get('since')) form.querySelector('select[name=since]').value = '24h';
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const params = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
      navigate(`/ui/operations?${params}`);
    });
    add(root, form);
    const filters = new URLSearchParams();
    for (const k of ['state', 'cluster', 'source']) if (q.get(k)) filters.set(k, q.get(k));
    const listed = new URLSearchParams(filters);
    listed.set('since', q.get('since') || '24h');
    const list = await api(`/v1/operations?${listed}`, { signal });
    const live = liveNote();
    const rows = new Map();
    const body = h('tbody', {});
    const row = (op) => h('tr', { 'data-id': op.id, 'data-state': op.state },
      h('td', { class: 'id' }, link(`/ui/operations/${op.id}`, h('code', {}, op.id))),
      h('td', {}, badge(op.state)),
      h('td', {}, link(`/ui/clusters/${op.cluster}`, op.cluster)),
      h('td', {}, op.action, op.rollout ? [' ', link(`/ui/rollouts/${op.rollout.id}`, h('span', { class: 'muted' }, `(wave ${op.rollout.wave})`))] : null),
      h('td', {}, op.source),
      h('td', {}, op.attempts),
      h('td', {}, op.worker || '—'),
      h('td', {}, time(op.updatedAt)),
      h('td', {}, op.error ? [h('code', {}, op.error.class), ' ', op.error.message] : ''));
    for (const op of list.items) {
      const r = row(op);
      rows.set(op.id, r);
      body.append(r);
    }
    const empty = h('p', { class: 'muted', id: 'no-operations' }, 'No operations match.');
    empty.hidden = list.items.length > 0;
    add(root, live,
      list.truncated ? h('p', { class: 'muted' }, 'Only the newest changes in this window were read; narrow the window to see older ones.') : null,
      h('div', { class: 'scroll' }, h('table', { id: 'operations' },
        h('caption', {}, 'Operations, most recently changed first'),
        h('thead', {}, h('tr', {}, ['Operation', 'State', 'Cluster', 'Action', 'Source', 'Attempts', 'Worker', 'Updated', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
        body)),
      empty);
    const watched = new URLSearchParams(filters);
    watched.set('watch', 'true');
    watched.set('after', String(list.revision));
    follow(`/v1/operations?${watched}`, (event, data) => {
      const op = JSON.parse(data);
      const old = rows.get(op.id);
      if (event === 'gone') {
        if (old) { old.remove(); rows.delete(op.id); }
      } else if (event === 'operation') {
        const r = row(op);
        r.classList.add('fresh');
        if (old) old.remove();
        body.prepend(r);
        rows.set(op.id, r);
      }
      empty.hidden = rows.size > 0;
      return true;
    }, signal, (on) => setLive(live, on));
  }

  function diffView(changes) {
    const lines = [];
    for (const c of changes) {
      if (c.before !== undefined) lines.push(h('del', {}, `- ${c.path}: ${JSON.stringify(c.before)}`));
      if (c.after !== undefined) lines.push(h('ins', {}, `+ ${c.path}: ${JSON.stringify(c.after)}`));
    }
    return h('pre', { class: 'diff' }, lines);
  }

  async function operationPage(root, m, _q, signal) {
    const id = decodeURIComponent(m[1]);
    let record = await api(`/v1/operations/${encodeURIComponent(id)}`, { signal });
    const view = h('div', {});
    const live = liveNote();
    const draw = () => {
      const r = record;
      const trace = r.traceId && me && me.console.traceUrl
        ? h('a', { href: me.console.traceUrl.replace('{trace_id}', r.traceId), rel: 'noreferrer', target: '_blank' }, r.traceId)
        : (r.traceId ? h('code', {}, r.traceId) : null);
      const dryRun = r.results && r.results.some((o) => o.diff);
      fill(view,
        h('h1', {}, 'Operation ', h('code', {}, r.id), badge(r.state), dryRun ? h('span', { class: 'badge state-pending' }, 'dry run') : null),
        facts([
          ['Cluster', link(`/ui/clusters/${r.cluster}`, r.cluster)],
          ['Action', r.action],
          ['Source', r.source],
          ['Idempotency key', h('code', {}, r.idempotencyKey)],
          ['Attempts', String(r.attempts)],
          ['Worker', r.worker],
          ['Submitted', time(r.submittedAt)],
          ['Started', r.startedAt ? time(r.startedAt) : null],
          ['Finished', r.finishedAt ? time(r.finishedAt) : null],
          ['Rollout', r.rollout ? link(`/ui/rollouts/${r.rollout.id}`, `${r.rollout.id} (wave ${r.rollout.wave})`) : null],
          ['Pipeline', r.pipeline ? Object.entries(r.pipeline).map(([k, v]) => `${k}: ${v}`).join(', ') : null],
          ['Trace', trace],
          ['Progress', r.progress],
        ]),
        r.error ? h('section', { class: 'error', id: 'error' }, h('h2', {}, 'Error: ', h('code', {}, r.error.class)), h('p', {}, r.error.message)) : null,
        h('h2', {}, 'Objects'),
        r.results && r.results.length
          ? table('What the operation did to each object', ['Object', 'Outcome', 'Resource version'],
            r.results.map((o) => h('tr', {}, h('td', {}, `${o.apiVersion} ${objectName(o)}`), h('td', {}, badge(o.outcome)), h('td', {}, o.resourceVersion || '—'))), { id: 'results' })
          : h('p', { class: 'muted' }, TERMINAL_OP.includes(r.state) ? 'No per-object results.' : 'No results yet.'),
        (r.results || []).filter((o) => o.diff).map((o) => h('section', { class: 'diff-of' },
          h('h2', {}, `Diff: ${objectName(o)}`),
          o.diff.length ? diffView(o.diff) : h('p', { class: 'muted' }, 'No change.'))),
        (r.results || []).filter((o) => o.job).map((o) => h('section', {},
          h('h2', {}, `Job: ${objectName(o)}`), facts([['Outcome', badge(o.job.outcome)], ['Message', o.job.message]]),
          o.job.logs ? h('pre', { class: 'logs' }, o.job.logs) : null)));
    };
    draw();
    add(root, view);
    if (TERMINAL_OP.includes(record.state)) return;
    add(root, live);
    // One read at a time, each after the change that asked for it: the last drawn is the
    // newest.
    let reading = Promise.resolve();
    follow(`/v1/operations/${encodeURIComponent(id)}/events`, (event) => {
      if (event !== 'state') return true;
      reading = reading.then(() => api(`/v1/operations/${encodeURIComponent(id)}`, { signal }))
        .then((r) => { record = r; draw(); }).catch(() => {});
      return true;
    }, signal, (on) => setLive(live, on));
  }

  async function rolloutsPage(root, _m, _q, signal) {
    add(root, h('h1', {}, 'Fleet rollouts'));
    const holder = h('div', {});
    add(root, holder);
    const draw = async () => {
      const list = await api('/v1/fleet-rollouts?limit=100', { signal });
      fill(holder, list.items.length
        ? table('Fleet rollouts, newest first', ['Rollout', 'State', 'Action', 'Clusters', 'Succeeded', 'Failed', 'Waves', 'Complete', 'Submitted'],
          list.items.map((r) => h('tr', { 'data-id': r.id },
            h('td', { class: 'id' }, link(`/ui/rollouts/${r.id}`, h('code', {}, r.id))),
            h('td', {}, badge(r.state)), h('td', {}, r.action), h('td', {}, r.clusters),
            h('td', {}, r.succeeded), h('td', {}, r.failed),
            h('td', {}, r.waves.map((w) => h('span', { class: `badge state-${w.state}`, title: `wave ${w.wave}: ${w.state}` }, w.wave))),
            h('td', {}, h('progress', { max: 100, value: r.percentComplete, 'aria-label': `${r.percentComplete}% complete` }), ` ${r.percentComplete}%`),
            h('td', {}, time(r.submittedAt)))), { id: 'rollouts' })
        : h('p', { class: 'muted' }, 'No fleet rollouts.'));
    };
    await draw();
    every(3000, signal, draw);
  }

  const CONTROLS = [
    ['pause', 'Pause', (r) => ['running', 'waiting_approval'].includes(r.state), ''],
    ['resume', 'Resume', (r) => r.state === 'paused', ''],
    ['approve', 'Approve next wave', (r) => r.state === 'waiting_approval', ''],
    ['retry-failed', 'Retry failed', (r) => r.failed > 0, 'secondary'],
    ['cancel', 'Cancel', (r) => !TERMINAL_ROLLOUT.includes(r.state), 'danger'],
  ];

  async function rolloutPage(root, m, _q, signal) {
    const id = decodeURIComponent(m[1]);
    const path = `/v1/fleet-rollouts/${encodeURIComponent(id)}`;
    let r = await api(path, { signal });
    const view = h('div', {});
    const live = liveNote();
    const allowed = (me && me.may.rolloutControls) || [];
    async function control(action, button) {
      button.disabled = true;
      try {
        const answer = await api(`${path}/${action}`, { method: 'POST', signal });
        // The page is redrawn from the rollout's event stream, which orders every change;
        // drawing this answer too could put an older state over a newer one.
        notice(`${action}: ${answer.changed === false ? 'nothing to change' : 'done'}; the rollout is ${answer.state}.`);
      } catch (e) {
        if (e instanceof ApiError) notice(problemView(e.problem, e.status), true);
      } finally {
        button.disabled = false;
      }
    }
    const draw = () => {
      const buttons = CONTROLS.filter(([a, , applies]) => allowed.includes(a) && applies(r))
        .map(([a, label, , cls]) => h('button', { type: 'button', class: cls || null, 'data-control': a, onclick: (e) => control(a, e.currentTarget) }, label));
      fill(view,
        h('h1', {}, 'Rollout ', h('code', {}, r.id), badge(r.state)),
        r.reason ? h('section', { class: 'error' }, h('p', {}, r.reason)) : null,
        buttons.length ? h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Controls' }, buttons) : null,
        facts([
          ['Complete', [h('progress', { max: 100, value: r.percentComplete, 'aria-label': `${r.percentComplete}% complete` }), ` ${r.percentComplete}%`]],
          ['Action', r.action],
          ['Clusters', `${r.clusters}: ${r.succeeded} succeeded, ${r.failed} failed, ${r.cancelled} cancelled`],
          ['Source', r.source],
          ['Selection', r.selection.selector ? h('code', {}, r.selection.selector) : (r.selection.clusters || []).join(', ')],
          ['Failure budget', `${r.strategy.maxFailures.perWave} per wave, ${r.strategy.maxFailures.total} in all`],
          ['Submitted', time(r.submittedAt)],
          ['Ended', r.endedAt ? time(r.endedAt) : null],
        ]),
        h('ul', { class: 'legend', 'aria-label': 'Legend' }, Object.entries(GLYPH).map(([s, g]) =>
          h('li', {}, h('span', { class: `cell cell-${s}`, 'aria-hidden': 'true' }, g), ` ${s}`))),
        h('div', { class: 'waves' }, r.waves.map((w) => h('section', { class: 'wave', 'data-wave': w.wave, 'data-state': w.state },
          h('h2', {}, `Wave ${w.wave}`, badge(w.state),
            w.approval ? h('span', { class: `badge state-${w.approval}` }, w.approval === 'required' ? 'approval required' : 'approved') : null,
            h('span', { class: 'muted' }, `${w.succeeded + w.failed + w.cancelled}/${w.size} done`)),
          h('ul', { class: 'cells', 'aria-label': `Clusters of wave ${w.wave}` }, w.clusters.map((c) => h('li', {},
            h('a', {
              href: `/ui/operations/${c.operation}`, 'data-nav': true, class: `cell cell-${c.state}`,
              'data-cluster': c.name, 'data-state': c.state, title: `${c.name}: ${c.state}`,
            }, h('span', { 'aria-hidden': 'true' }, GLYPH[c.state] || '?'), h('span', {}, c.name), h('span', { class: 'visually-hidden' }, `: ${c.state}`)))))))),
        r.controls && r.controls.length
          ? [h('h2', {}, 'Controls'), h('ul', { id: 'controls' }, r.controls.map((c) => h('li', {}, `${c.action}${c.wave ? ` wave ${c.wave}` : ''} by ${c.by} at `, time(c.at))))]
          : null);
    };
    draw();
    add(root, view);
    if (TERMINAL_ROLLOUT.includes(r.state)) return;
    add(root, live);
    follow(`${path}/events`, (event, data) => {
      if (event !== 'progress') return true;
      r = JSON.parse(data);
      draw();
      return !TERMINAL_ROLLOUT.includes(r.state);
    }, signal, (on) => setLive(live, on));
  }

  const NEEDS_LOOK = ['unreachable', 'unserved'];
  async function clustersPage(root, _m, _q, signal) {
    add(root, h('h1', {}, 'Clusters'));
    const holder = h('div', {});
    add(root, holder);
    const draw = async () => {
      const list = await api('/v1/clusters?limit=1000', { signal });
      const attention = list.items.filter((c) => NEEDS_LOOK.includes(c.status.phase));
      fill(holder,
        h('p', { id: 'cluster-summary', class: attention.length ? 'attention' : 'muted' },
          `${list.items.length} clusters`, attention.length ? `; ${attention.length} need attention: ${attention.map((c) => `${c.name} (${c.status.phase})`).join(', ')}` : ''),
        table('Registered clusters; unreachable and unserved ones first', ['Cluster', 'Status', 'Reason', 'Labels', 'Pool', 'Members', 'Probed by', 'Latency', 'Observed'],
          [...attention, ...list.items.filter((c) => !NEEDS_LOOK.includes(c.status.phase))].map((c) => {
            const o = c.status.observed || {};
            return h('tr', { 'data-cluster': c.name, 'data-phase': c.status.phase, class: NEEDS_LOOK.includes(c.status.phase) ? 'attention' : null },
              h('th', { scope: 'row' }, link(`/ui/clusters/${c.name}`, c.name)),
              h('td', {}, badge(c.status.phase)), h('td', {}, c.status.reason),
              h('td', {}, Object.entries(c.labels || {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))),
              h('td', {}, c.pool), h('td', {}, c.status.members), h('td', {}, o.worker || '—'),
              h('td', {}, o.latencyMs !== undefined ? `${o.latencyMs} ms` : '—'), h('td', {}, time(o.observedAt)));
          }), { id: 'clusters' }));
    };
    await draw();
    every(3000, signal, draw);
  }

  async function clusterPage(root, m, _q, signal) {
    const name = decodeURIComponent(m[1]);
    const head = h('div', {});
    const inventory = h('div', {});
    add(root, head, h('h2', {}, 'Inventory'), inventory);
    const drawHead = async () => {
      const c = await api(`/v1/clusters/${encodeURIComponent(name)}`, { signal });
      const o = c.status.observed || {};
      const w = c.watch;
      fill(head,
        h('h1', {}, 'Cluster ', h('code', {}, c.name), badge(c.status.phase)),
        NEEDS_LOOK.includes(c.status.phase) ? h('section', { class: 'error', id: 'attention' }, h('p', {}, `${c.status.phase}: ${c.status.reason}`)) : null,
        facts([
          ['Labels', Object.entries(c.labels || {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))],
          ['Pool', `${c.pool} (${c.status.members} live replicas)`],
          ['Status', `${c.status.phase}: ${c.status.reason}`],
          ['Probed by', o.worker ? `${o.worker}, ${o.reachable ? 'reachable' : 'unreachable'}${o.latencyMs !== undefined ? `, ${o.latencyMs} ms` : ''}` : null],
          ['Server version', o.serverVersion],
          ['Watched by', w ? [`${w.holder}, since `, time(w.acquiredAt)] : 'nobody holds its watch'],
          ['Watch', w ? `${w.objects} objects, ${w.lagMs} ms behind, ${w.reachable ? 'reachable' : 'unreachable'}${w.error ? `: ${w.error}` : ''}` : null],
          ['Registered', [time(c.registeredAt), ` by ${c.registeredBy}`]],
          ['Updated', [time(c.updatedAt), ` by ${c.updatedBy}`]],
        ]));
    };
    const drawInventory = async () => {
      const list = await api(`/v1/objects?cluster=${encodeURIComponent(name)}&limit=500`, { signal });
      fill(inventory, list.items.length
        ? table('Objects longshore manages here, as its watcher sees them', ['Object', 'Health', 'Drift', 'Last operation', 'Observed'],
          list.items.map((o) => h('tr', { class: o.drifted || o.health === 'failed' ? 'attention' : null, 'data-object': objectName(o) },
            h('td', {}, `${o.apiVersion} ${objectName(o)}`), h('td', {}, badge(o.health || 'unknown')),
            h('td', {}, o.drifted ? badge('drifted') : 'in sync'),
            h('td', {}, o.lastOperation ? link(`/ui/operations/${o.lastOperation}`, h('code', {}, o.lastOperation)) : '—'),
            h('td', {}, time(o.observedAt)))), { id: 'inventory' })
        : h('p', { class: 'muted' }, 'No objects seen (yet).'));
    };
    await Promise.all([drawHead(), drawInventory()]);
    every(3000, signal, drawHead);
    // A burst of events is one read; reads go one at a time.
    let queued = false;
    let reading = Promise.resolve();
    follow(`/v1/events?cluster=${encodeURIComponent(name)}`, () => {
      if (queued) return true;
      queued = true;
      reading = reading.then(() => { queued = false; return drawInventory(); }).catch(() => {});
      return true;
    }, signal);
  }

  async function deadLettersPage(root, _m, _q, signal) {
    add(root, h('h1', {}, 'Dead letters'),
      h('p', { class: 'muted' }, 'Operations that exhausted their deliveries. Retrying one queues it again as the latest intent for its objects.'));
    const holder = h('div', {});
    add(root, holder);
    async function retry(d, button) {
      button.disabled = true;
      try {
        const answer = await api(`/v1/operations/${encodeURIComponent(d.id)}/retry`, { method: 'POST', signal });
        notice([`Requeued `, link(`/ui/operations/${d.id}`, h('code', {}, d.id)), `: ${answer.state}.`]);
        await draw();
      } catch (e) {
        button.disabled = false;
        if (e instanceof ApiError) notice(problemView(e.problem, e.status), true);
      }
    }
    const draw = async () => {
      const list = await api('/v1/dead-letters?limit=500', { signal });
      const retries = mayWrite() && me.may.actions.length > 0;
      fill(holder, list.items.length
        ? table('Dead letters, oldest first', ['Operation', 'Cluster', 'Reason', 'Deliveries', 'Queued as', ''],
          list.items.map((d) => h('tr', { 'data-id': d.id },
            h('td', { class: 'id' }, link(`/ui/operations/${d.id}`, h('code', {}, d.id))),
            h('td', {}, link(`/ui/clusters/${d.cluster}`, d.cluster)), h('td', {}, d.reason),
            h('td', {}, d.deliveries ?? '—'), h('td', {}, d.originalSequence ? `#${d.originalSequence}` : '—'),
            h('td', {}, retries ? h('button', { type: 'button', 'data-retry': d.id, 'aria-label': `Retry ${d.id}`, onclick: (e) => retry(d, e.currentTarget) }, 'Retry') : null))), { id: 'dead-letters' })
        : h('p', { class: 'muted', id: 'no-dead-letters' }, 'No dead letters.'));
    };
    await draw();
  }

  // ---- routing ----
  const ROUTES = [
    [/^\/ui\/?$/, null],
    [/^\/ui\/operations\/?$/, operationsPage, 'operations', 'Operations'],
    [/^\/ui\/operations\/([^/]+)$/, operationPage, 'operations', 'Operation'],
    [/^\/ui\/rollouts\/?$/, rolloutsPage, 'rollouts', 'Rollouts'],
    [/^\/ui\/rollouts\/([^/]+)$/, rolloutPage, 'rollouts', 'Rollout'],
    [/^\/ui\/clusters\/?$/, clustersPage, 'clusters', 'Clusters'],
    [/^\/ui\/clusters\/([^/]+)$/, clusterPage, 'clusters', 'Cluster'],
    [/^\/ui\/dead-letters\/?$/, deadLettersPage, 'dead-letters', 'Dead letters'],
  ];
  function navigate(href) {
    history.pushState(null, '', href);
    render();
  }
  async function render() {
    if (page) page.abort();
    page = new AbortController();
    const signal = page.signal;
    const root = main();
    fill(root);
    root.setAttribute('aria-busy', 'true');
    const url = new URL(location.href);
    let found = ROUTES.find(([re]) => re.test(url.pathname));
    if (found && found[1] === null) {
      history.replaceState(null, '', '/ui/operations');
      found = ROUTES[1];
    }
    for (const a of document.querySelectorAll('nav a')) {
      if (found && a.dataset.section === found[2]) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    try {
      if (!found) throw new ApiError({ title: 'Not Found', status: 404, detail: `no console page at ${url.pathname}` }, 404);
      document.title = `${found[3]} · longshore`;
      if (!me) {
        const failed = await loadSession();
        renderSession();
        if (failed) throw failed;
      }
      await found[1](root, location.pathname.match(found[0]), url.searchParams, signal);
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError) {
        add(root, problemView(e.problem, e.status));
        if (e.status === 401) add(root, h('p', {}, 'Sign in with an API token above to see this page.'));
      } else {
        add(root, problemView({ title: 'The page failed', detail: String(e && e.message || e) }, 0));
      }
    } finally {
      if (!signal.aborted) root.removeAttribute('aria-busy');
    }
  }

  document.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a[data-nav]');
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith('/ui')) return;
    e.preventDefault();
    notice('');
    navigate(url.pathname + url.search);
    main().focus();
  });
  window.addEventListener('popstate', render);
  document.addEventListener('DOMContentLoaded', async () => {
    await loadSession();
    renderSession();
    render();
  });
})();

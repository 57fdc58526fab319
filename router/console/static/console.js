// switchyard operator console. Plain JavaScript, no build step, no library.
// Every call goes to the console's JSON API, which calls the router's
// switchyard.v1.Admin methods with this tab's token; the server decides what
// each role may do. Text from the server is only ever set as textContent.
'use strict';

(() => {
  const TOKEN_KEY = 'switchyard.console.token';
  const WINDOW_MS = 15 * 60 * 1000;
  const MAX_EVENTS = 200;
  const POLICIES = ['switchyard', 'least_request', 'round_robin', 'random'];
  const COLORS = ['#1f6fb2', '#c2410c', '#15803d', '#7e22ce', '#b91c1c', '#0e7490', '#a16207', '#be185d'];

  const $ = (id) => document.getElementById(id);
  const S = {
    token: null, role: null, list: null, loads: {}, geos: {}, home: '',
    samples: [], everyMs: 2000, chartsOn: true,
    stream: null, retryMs: 1000, rowsKey: '', rows: new Map(), auditTimer: 0,
  };

  // el builds an element; strings become text nodes, never HTML.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };

  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, body) {
    const init = { headers: { Authorization: 'Bearer ' + S.token }, cache: 'no-store' };
    if (body !== undefined) {
      init.method = 'POST';
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try { data = await resp.json(); } catch (_) { /* empty or not JSON */ }
    if (!resp.ok) {
      const err = new APIError(resp.status, (data && data.code) || 'HTTP_' + resp.status, (data && data.message) || resp.statusText);
      if (resp.status === 401) signOut('Signed out: ' + err.message);
      throw err;
    }
    return data;
  }
  const call = (method, req) => api('/api/v1/' + method, req || {});

  // ---- sign in / out ----

  async function signIn(token) {
    S.token = token;
    const who = await api('/api/v1/whoami');
    S.role = who.role;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('signin').hidden = true;
    $('app').hidden = false;
    $('status-line').hidden = false;
    $('who').hidden = false;
    $('role').textContent = S.role;
    document.body.dataset.role = S.role;
    $('policy-btn').hidden = S.role !== 'operator';
    await Promise.all([loadFleet(), loadHistory(), loadAudit()]);
    openStream();
    $('fleet-h').focus({ preventScroll: true });
  }

  function signOut(msg) {
    sessionStorage.removeItem(TOKEN_KEY);
    S.token = null; S.role = null;
    if (S.stream) { S.stream.abort(); S.stream = null; }
    $('app').hidden = true; $('status-line').hidden = true; $('who').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = msg || '';
    $('token').value = '';
    $('token').focus();
    S.rowsKey = ''; S.rows.clear(); $('fleet-body').replaceChildren();
    $('events').replaceChildren();
    delete document.body.dataset.role;
  }

  // ---- fleet ----

  async function loadFleet() { applyFleet(await api('/api/v1/fleet')); }

  function applyFleet(f) {
    S.list = f.list; S.loads = f.loads || {}; S.geos = f.geographies || {}; S.home = S.home || f.home || '';
    $('replica').textContent = f.list.replica;
    $('policy').textContent = f.list.policy;
    const mode = String(f.list.countingMode || '').replace('COUNTING_MODE_', '').toLowerCase();
    const c = $('counting');
    c.textContent = mode === 'degraded' ? 'DEGRADED' : mode;
    c.className = 'badge mode-' + mode;
    c.title = { local: 'in-memory: this replica alone', shared: 'Redis: every replica', degraded: 'Redis unreachable: a conservative local share of every limit' }[mode] || '';
    const acq = Number(f.list.acquires || 0), trips = Number(f.list.storeRoundTrips || 0);
    const lz = $('leased');
    lz.hidden = !(acq > 0 || trips > 0);
    setText(lz, 'leased blocks · ' + (trips / Math.max(acq, 1)).toFixed(3) + ' store round trips per call');
    lz.title = acq + ' acquires, ' + trips + ' store round trips (' + Number(f.list.syncRoundTrips || 0) + ' on the request path) since this replica started';
    renderFleet();
    fillForms();
  }

  const hasOverride = (p) => p.capacityOverride > 0 || !!p.overrideExpires || (p.limitReason || '').startsWith('override');

  function left(ms) {
    if (ms <= 0) return 'expiring';
    const s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = String(m).padStart(2, '0'), ss = String(sec).padStart(2, '0');
    return (h > 0 ? h + ':' + mm : m) + ':' + ss + ' left';
  }

  function stateBadges(p) {
    const out = [];
    if (p.drained) out.push(el('span', { class: 'badge st-drained', text: 'drained' }));
    if (p.ejected) out.push(el('span', { class: 'badge st-ejected', text: 'ejected' }));
    if (p.health === 'NOT_SERVING') out.push(el('span', { class: 'badge st-unhealthy', text: 'unhealthy' }));
    if (hasOverride(p)) {
      const b = el('span', { class: 'badge st-override', 'data-override': p.capacityOverride });
      if (p.overrideExpires) {
        b.dataset.expires = String(Date.parse(p.overrideExpires));
        b.textContent = 'override ' + p.capacityOverride + ' (' + left(Number(b.dataset.expires) - Date.now()) + ')';
      } else {
        b.textContent = 'override ' + p.capacityOverride;
      }
      out.push(b);
    }
    const reason = p.limitReason || '';
    if (reason.startsWith('short')) {
      const l = p.backendLoad || {};
      out.push(el('span', { class: 'badge st-lost', title: 'the backend reports it can run ' + Number(l.capacity || 0) + ' calls at once (' + Number(l.running || 0) + ' running, ' + Number(l.queued || 0) + ' queued); limit, free and totals use it', text: reason }));
    }
    if (!out.length) out.push(el('span', { class: 'badge st-ok', text: 'ok' }));
    return out;
  }

  function bar(inFlight, limit) {
    const wrap = el('div', { class: 'bar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': limit, 'aria-valuenow': Math.min(inFlight, limit), 'aria-label': 'in flight ' + inFlight + ' of ' + limit });
    const fill = el('div', { class: 'fill' });
    const frac = limit > 0 ? Math.min(1, inFlight / limit) : (inFlight > 0 ? 1 : 0);
    fill.style.width = (frac * 100).toFixed(1) + '%';
    if (frac >= 0.9) fill.classList.add('hot'); else if (frac >= 0.7) fill.classList.add('warm');
    wrap.append(fill);
    return wrap;
  }

  const isOperator = () => S.role === 'operator';

  function actionButtons(p) {
    const b = (action, label, what) => el('button', { type: 'button', class: 'small', 'data-action': action, 'data-pool': p.name, 'aria-label': (what || label) + ' ' + p.name, title: (what || label) + ' ' + p.name, text: label });
    const out = [b('weight', 'Weight', 'Set the weight of')];
    out.push(p.drained ? b('resume', 'Resume') : b('drain', 'Drain'));
    out.push(b('override', 'Override', 'Override the capacity of'));
    if (hasOverride(p)) out.push(b('clear', 'Clear', 'Clear the capacity override of'));
    return out;
  }

  // groups orders pools by geography, then region, keeping config order inside.
  function groups(pools) {
    const byRegion = new Map();
    for (const p of pools) {
      if (!byRegion.has(p.region)) byRegion.set(p.region, []);
      byRegion.get(p.region).push(p);
    }
    return [...byRegion.entries()].sort((a, b) => {
      const ga = a[1][0].geography || '', gb = b[1][0].geography || '';
      return ga === gb ? a[0].localeCompare(b[0]) : ga.localeCompare(gb);
    });
  }

  function renderFleet() {
    const pools = (S.list && S.list.pools) || [];
    const head = $('fleet-head');
    const cols = ['Pool', 'Cloud · accel', 'In flight / limit', 'Free', 'Weight', 'State'];
    if (isOperator()) cols.push('Actions');
    if (head.childElementCount !== cols.length) head.replaceChildren(...cols.map((c) => el('th', { scope: 'col', text: c })));
    const key = S.role + '|' + pools.map((p) => p.name + '@' + p.region).join(',');
    const body = $('fleet-body');
    if (key !== S.rowsKey) {
      S.rowsKey = key; S.rows.clear();
      const rows = [];
      for (const [region, ps] of groups(pools)) {
        const tr = el('tr', { class: 'region-row', 'data-region': region });
        tr.append(el('th', { scope: 'rowgroup', colspan: cols.length }));
        rows.push(tr);
        S.rows.set('region:' + region, tr);
        for (const p of ps) {
          const r = el('tr', { 'data-pool': p.name });
          r.append(el('th', { scope: 'row', class: 'name', text: p.name }),
            el('td', { class: 'where' }, el('span', { class: 'cloud cloud-' + p.cloud, text: p.cloud }), ' ' + p.accelerator),
            el('td', { class: 'load', 'data-label': 'in flight' }), el('td', { class: 'num headroom', 'data-label': 'headroom' }),
            el('td', { class: 'num weight', 'data-label': 'weight' }), el('td', { class: 'state' }));
          if (isOperator()) r.append(el('td', { class: 'actions' }));
          rows.push(r);
          S.rows.set(p.name, r);
        }
      }
      body.replaceChildren(...rows);
    }
    for (const [region, ps] of groups(pools)) {
      const tot = ps.reduce((a, p) => ({ limit: a.limit + p.limit, inFlight: a.inFlight + p.inFlight, headroom: a.headroom + p.headroom }), { limit: 0, inFlight: 0, headroom: 0 });
      const th = S.rows.get('region:' + region).firstChild;
      setText(th, region + ' (' + (ps[0].geography || '?') + ')  ·  ' + ps.length + ' pool' + (ps.length > 1 ? 's' : '') + '  ·  in flight ' + tot.inFlight + ' / ' + tot.limit + '  ·  headroom ' + tot.headroom);
      for (const p of ps) updateRow(S.rows.get(p.name), p);
    }
  }

  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

  function updateRow(r, p) {
    const [, , load, headroom, weight, st, actions] = r.children;
    const sig = p.inFlight + '/' + p.limit;
    const b = p.block;
    const bsig = b ? [b.granted, b.free, b.stranded, b.learning, b.home].join('/') : '';
    if (load.dataset.sig !== sig + '|' + bsig) {
      load.dataset.sig = sig + '|' + bsig;
      const box = el('div', { class: 'loadbox' }, bar(p.inFlight, p.limit), el('span', { class: 'num', text: p.inFlight + ' / ' + p.limit }));
      if (b) {
        // This replica's leased block of the pool (docs/capacity.md).
        box.append(el('span', { class: 'block' + (b.learning ? ' learning' : ''), 'data-block': p.name,
          text: 'block ' + Number(b.granted) + ' (' + Number(b.free) + ' free' + (Number(b.stranded) > 0 ? ', ' + Number(b.stranded) + ' idle' : '') + ')' + (b.learning ? ' learning' : ''),
          title: 'this replica holds ' + Number(b.granted) + ' slots of the pool from store "' + b.home + '"; ' + (b.holders || 0) + ' replicas hold ' + Number(b.grantedAll) + ' in all' }));
      }
      load.replaceChildren(box);
    }
    setText(headroom, String(p.headroom));
    setText(weight, String(p.weight));
    const stSig = JSON.stringify([p.drained, p.ejected, p.health, p.limit, p.configuredLimit, p.capacityOverride, p.overrideExpires, p.limitReason]);
    if (st.dataset.sig !== stSig) { st.dataset.sig = stSig; st.replaceChildren(...stateBadges(p)); }
    r.classList.toggle('is-drained', !!p.drained);
    if (actions) {
      const aSig = JSON.stringify([p.drained, hasOverride(p)]);
      if (actions.dataset.sig !== aSig) {
        const focused = document.activeElement && actions.contains(document.activeElement) ? document.activeElement.dataset.action : null;
        actions.dataset.sig = aSig;
        actions.replaceChildren(el('div', { class: 'actbox' }, ...actionButtons(p)));
        if (focused) { const f = actions.querySelector('[data-action="' + focused + '"]') || actions.querySelector('button'); if (f) f.focus(); }
      }
    }
  }

  function tickCountdowns() {
    for (const b of document.querySelectorAll('[data-expires]')) {
      b.textContent = 'override ' + b.dataset.override + ' (' + left(Number(b.dataset.expires) - Date.now()) + ')';
    }
  }

  function pool(name) { return ((S.list && S.list.pools) || []).find((p) => p.name === name); }

  // ---- dialogs (every change is confirmed; drain shows its dry run first) ----

  let dlgOk = null;
  function openDialog(title, body, okLabel, onOk) {
    $('dlg-title').textContent = title;
    $('dlg-body').replaceChildren(...[].concat(body));
    $('dlg-error').textContent = '';
    const ok = $('dlg-ok');
    ok.textContent = okLabel; ok.hidden = !onOk; ok.disabled = false;
    dlgOk = onOk;
    const d = $('dlg');
    if (!d.open) d.showModal();
    const first = d.querySelector('#dlg-body input, #dlg-body select') || (onOk ? ok : $('dlg-cancel'));
    first.focus();
  }
  function closeDialog() { const d = $('dlg'); if (d.open) d.close(); dlgOk = null; }

  async function submitDialog(ev) {
    ev.preventDefault();
    if (!dlgOk) return;
    const ok = $('dlg-ok');
    ok.disabled = true;
    try {
      const msg = await dlgOk();
      closeDialog();
      if (msg) toast(msg);
    } catch (e) {
      $('dlg-error').textContent = describe(e);
      ok.disabled = false;
    }
  }

  // describe words an error as the Admin API did, led by its status unless
  // the message already says it.
  function describe(e) {
    if (!(e instanceof APIError)) return String(e.message || e);
    const words = e.code.toLowerCase().replace(/_/g, ' ');
    return e.message.toLowerCase().startsWith(words) ? e.message : words + ': ' + e.message;
  }

  function field(label, input, hint) {
    return el('p', { class: 'field' }, el('label', { for: input.id, text: label }), input, hint ? el('span', { class: 'hint', text: hint }) : null);
  }

  function poolSummary(p) {
    return p.name + ': limit ' + p.limit + (p.limit !== p.configuredLimit ? ' (configured ' + p.configuredLimit + ')' : '') + ', in flight ' + p.inFlight + ', headroom ' + p.headroom + ', weight ' + p.weight;
  }

  function weightDialog(p) {
    const input = el('input', { id: 'dlg-weight', type: 'number', min: 0, max: 1000, step: 'any', value: p.weight, required: true });
    openDialog('Set weight of ' + p.name, [el('p', { text: poolSummary(p) }),
      field('New weight', input, '0 to 1000; 1 is neutral, 0 takes the pool out of the draw')], 'Set weight', async () => {
      const w = Number(input.value);
      const r = await call('SetWeight', { pool: p.name, weight: w });
      return 'weight set: ' + poolSummary(r.pool);
    });
  }

  function planTable(r) {
    return el('table', { class: 'plan' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Model' }), el('th', { scope: 'col', text: 'Would go to' }), el('th', { scope: 'col', text: 'Headroom' }))),
      el('tbody', {}, ...(r.targets || []).map((t) => el('tr', {}, el('td', { text: t.model }), el('td', { text: (t.pools || []).join(', ') || 'nowhere' }), el('td', { class: 'num', text: t.headroom })))));
  }

  async function drainDialog(p) {
    openDialog('Drain ' + p.name, [el('p', { text: 'Reading the dry run…' })], 'Drain', null);
    let r;
    try {
      r = await call('Drain', { pool: p.name, dryRun: true });
    } catch (e) {
      $('dlg-error').textContent = describe(e);
      return;
    }
    const yes = r.fleetHasHeadroom;
    const body = [
      el('p', { id: 'dry-run-summary', text: 'Dry run: draining ' + p.name + ' (' + r.pool.inFlight + ' in flight) would send its new traffic to:' }),
      planTable(r),
      el('p', { id: 'dry-run-headroom', class: yes ? 'ok' : 'error', text: 'Fleet has headroom: ' + (yes ? 'yes' : 'NO') + ': ' + r.summary }),
      el('p', { class: 'hint', text: 'In-flight calls finish; new calls go elsewhere until the pool is resumed.' }),
    ];
    openDialog('Drain ' + p.name, body, yes ? 'Drain' : 'Drain anyway (force)', async () => {
      const res = await call('Drain', { pool: p.name, force: !yes });
      return 'drained ' + p.name + ': ' + res.summary;
    });
  }

  function resumeDialog(p) {
    openDialog('Resume ' + p.name, [el('p', { text: p.name + ' takes new traffic again.' }), el('p', { text: poolSummary(p) })], 'Resume', async () => {
      const r = await call('Resume', { pool: p.name });
      return 'resumed: ' + poolSummary(r.pool);
    });
  }

  function overrideDialog(p) {
    const limit = el('input', { id: 'dlg-limit', type: 'number', min: 0, max: 1000000, step: 1, value: p.limit, required: true });
    const mins = el('input', { id: 'dlg-minutes', type: 'number', min: 0, max: 525600, step: 1, value: 30 });
    openDialog('Override the capacity of ' + p.name, [el('p', { text: poolSummary(p) }),
      field('New limit (max concurrent calls)', limit, 'configured: ' + p.configuredLimit),
      field('Expires in (minutes)', mins, '0 or empty: until cleared')], 'Set override', async () => {
      const req = { pool: p.name, limit: Number(limit.value) };
      const m = Number(mins.value || 0);
      if (m > 0) req.expires = new Date(Date.now() + m * 60000).toISOString();
      const r = await call('SetCapacityOverride', req);
      return 'capacity set: ' + poolSummary(r.pool);
    });
  }

  function clearDialog(p) {
    openDialog('Clear the override of ' + p.name, [el('p', { text: 'The limit goes back to the configured ' + p.configuredLimit + '.' })], 'Clear override', async () => {
      const r = await call('SetCapacityOverride', { pool: p.name, clear: true });
      return 'capacity cleared: ' + poolSummary(r.pool);
    });
  }

  function policyDialog() {
    const cur = S.list ? S.list.policy : '';
    const sel = el('select', { id: 'dlg-policy' }, ...POLICIES.map((n) => el('option', { value: n, selected: n === cur, text: n })));
    openDialog('Switch the routing policy', [el('p', { text: 'Every replica switches. Current: ' + cur + '.' }), field('Policy', sel)], 'Switch policy', async () => {
      const r = await call('SetPolicy', { policy: sel.value });
      return 'policy ' + r.previous + ' -> ' + r.policy;
    });
  }

  function onAction(ev) {
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    if (b.dataset.action === 'policy') return policyDialog();
    const p = pool(b.dataset.pool);
    if (!p) return;
    ({ weight: weightDialog, drain: drainDialog, resume: resumeDialog, override: overrideDialog, clear: clearDialog })[b.dataset.action](p);
  }

  let toastTimer = 0;
  function toast(msg) {
    const t = $('toast');
    t.textContent = msg; t.classList.add('show');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove('show'), 6000);
  }

  // ---- explain ----

  function fillForms() {
    const pools = (S.list && S.list.pools) || [];
    const models = [...new Set(pools.flatMap((p) => p.models || []))].sort();
    const m = $('ex-model');
    if (m.dataset.sig !== models.join(',')) {
      m.dataset.sig = models.join(',');
      m.replaceChildren(...models.map((n) => el('option', { value: n, text: n })));
    }
    const regions = [...new Set(Object.keys(S.geos))].sort();
    const dl = $('regions');
    if (dl.dataset.sig !== regions.join(',')) {
      dl.dataset.sig = regions.join(',');
      dl.replaceChildren(...regions.map((n) => el('option', { value: n })));
      const h = $('home-region');
      h.replaceChildren(...regions.map((n) => el('option', { value: n, selected: n === (S.home || busiestRegion()), text: n + ' (' + S.geos[n] + ')' })));
    }
  }

  // busiestRegion is where the most calls were served or shed over the
  // charts' window: the spill-share chart's default callers' region when
  // this replica has no --region (and the operator picked none).
  function busiestRegion() {
    const pools = (S.list && S.list.pools) || [];
    const regionOf = Object.fromEntries(pools.map((p) => [p.name, p.region]));
    const calls = {};
    for (const s of S.samples || []) {
      for (const [n, v] of Object.entries(s.pools || {})) if (regionOf[n]) calls[regionOf[n]] = (calls[regionOf[n]] || 0) + (v.ok || 0);
      for (const [r, v] of Object.entries(s.shedsByRegion || {})) if (S.geos[r]) calls[r] = (calls[r] || 0) + (v || 0);
    }
    let best = '', most = 0;
    for (const [r, n] of Object.entries(calls)) if (n > most || (n === most && r < best)) { best = r; most = n; }
    return best || Object.keys(S.geos).sort()[0] || '';
  }

  async function explain(ev) {
    ev.preventDefault();
    $('explain-error').textContent = '';
    const routing = { callerRegion: $('ex-region').value.trim(), residency: $('ex-residency').value };
    try {
      const r = await call('ExplainRoute', { request: { model: $('ex-model').value, priority: $('ex-priority').value, routing } });
      const cands = r.candidates || [];
      const rows = cands.map((c) => el('tr', { class: c.eligible ? '' : 'skipped' },
        el('td', { class: 'num', text: c.eligible ? c.rank : 'skip' }), el('th', { scope: 'row', text: c.pool }), el('td', { text: c.tier }),
        el('td', { class: 'num', text: c.headroom }), el('td', { class: 'num', text: c.weight }), el('td', { class: 'num', text: c.eligible ? c.score.toFixed(3) : '' }), el('td', { text: c.reason })));
      $('explain-result').replaceChildren(
        el('p', { text: 'policy ' + r.policy + ': ' + cands.filter((c) => c.eligible).length + ' eligible, ' + cands.filter((c) => !c.eligible).length + ' skipped' }),
        el('table', { class: 'explain', id: 'explain-table' },
          el('thead', {}, el('tr', {}, ...['Rank', 'Pool', 'Tier', 'Headroom', 'Weight', 'Score', 'Reason'].map((c) => el('th', { scope: 'col', text: c })))),
          el('tbody', {}, ...rows)));
    } catch (e) {
      $('explain-error').textContent = describe(e);
    }
  }

  // ---- events and audit ----

  const hhmmss = (iso) => (iso ? new Date(iso).toISOString().slice(11, 19) : '');
  const CHANGES = new Set(['weight', 'drain', 'resume', 'capacity_override', 'policy', 'config_reload']);

  function addEvent(ev) {
    const li = el('li', { 'data-kind': ev.kind },
      el('time', { datetime: ev.time, text: hhmmss(ev.time) }), el('span', { class: 'badge kind kind-' + ev.kind, text: ev.kind }),
      el('span', { class: 'pool', text: ev.pool || '' }), el('span', { class: 'detail', text: ev.detail + (ev.actor ? ' (by ' + ev.actor + ')' : '') }));
    const list = $('events');
    const t = Date.parse(ev.time || '');
    if (ev.kind === 'hello') {
      // A (re)connected stream: hello, then the router's recent events
      // (oldest first, all before hello), then live ones.
      list.replaceChildren(li);
      S.hello = li; S.helloAt = t;
    } else if (S.hello && S.hello.isConnected && t < S.helloAt) {
      S.hello.after(li); // a recent event: newest right under hello
    } else {
      list.prepend(li);
    }
    while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
    if (CHANGES.has(ev.kind)) {
      clearTimeout(S.auditTimer);
      S.auditTimer = setTimeout(() => loadAudit().catch(() => {}), 300);
    }
  }

  async function loadAudit() {
    const r = await call('ListAudit', { limit: 50 });
    $('audit-body').replaceChildren(...(r.entries || []).map((e) => el('tr', {},
      el('td', { text: (e.time || '').replace('T', ' ').replace(/\.\d+Z$|Z$/, '') }), el('td', { text: e.actor }), el('td', { text: e.action }),
      el('td', { text: e.pool }), el('td', { text: e.before }), el('td', { text: e.after }))));
  }

  // ---- live stream: server-sent events read with fetch, so the token
  // travels in a header (EventSource cannot send one) ----

  function setLive(text, cls) { const l = $('live'); l.textContent = text; l.className = 'live is-' + cls; }

  async function openStream() {
    if (S.stream) S.stream.abort();
    const ctl = new AbortController();
    S.stream = ctl;
    setLive('connecting…', 'wait');
    try {
      const resp = await fetch('/api/v1/stream', { headers: { Authorization: 'Bearer ' + S.token }, cache: 'no-store', signal: ctl.signal });
      if (!resp.ok) {
        let data = {};
        try { data = await resp.json(); } catch (_) { /* not JSON */ }
        if (resp.status === 401) { signOut('Signed out: ' + (data.message || 'unauthenticated')); return; }
        throw new Error(data.message || resp.statusText);
      }
      setLive('live', 'ok');
      S.retryMs = 1000;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let kind = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) kind = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data) onStream(kind, JSON.parse(data));
        }
        if (buf.length > 1 << 22) throw new Error('stream message too large');
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      setLive('reconnecting: ' + (e.message || e), 'bad');
    }
    if (S.stream !== ctl || !S.token) return;
    setLive('reconnecting…', 'bad');
    const wait = S.retryMs;
    S.retryMs = Math.min(S.retryMs * 2, 15000);
    setTimeout(() => { if (S.stream === ctl && S.token) openStream(); }, wait);
  }

  function onStream(kind, data) {
    switch (kind) {
      case 'event': addEvent(data); break;
      case 'fleet': applyFleet(data); break;
      case 'sample': addSample(data); break;
      case 'end': setLive('stream ended: ' + data.message, 'bad'); break;
    }
  }

  // ---- charts: drawn as SVG from the router's own samples ----

  async function loadHistory() {
    const h = await api('/api/v1/history');
    S.chartsOn = h.enabled;
    S.everyMs = h.everyMillis || 2000;
    $('charts-off').hidden = h.enabled;
    S.samples = h.samples || [];
    drawCharts();
  }

  function addSample(s) {
    const last = S.samples[S.samples.length - 1];
    if (last && last.t >= s.t) return;
    if (last && s.t - last.t > 1.5 * S.everyMs && !S.refilling) {
      // Samples were missed (between the history and the stream, or while
      // the stream reconnected): the router's ring has them all.
      S.refilling = true;
      loadHistory().catch(() => {}).finally(() => { S.refilling = false; });
    }
    S.samples.push(s);
    const cut = s.t - WINDOW_MS;
    while (S.samples.length && S.samples[0].t < cut) S.samples.shift();
    drawCharts();
  }

  function seriesOf(fn) { return S.samples.map((s) => [s.t, fn(s)]); }

  // lineChart draws series [{name, color, points: [[t, v]]}] into svg.
  function lineChart(svg, legend, series, opts) {
    const W = Math.max(svg.clientWidth || 0, 240), H = opts.height || 124;
    const padL = 40, padR = 8, padT = 8, padB = 18;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('height', H);
    const now = S.samples.length ? S.samples[S.samples.length - 1].t : Date.now();
    const t0 = now - WINDOW_MS;
    let ymax = opts.yMax || 0;
    if (!opts.yMax) for (const s of series) for (const [, v] of s.points) ymax = Math.max(ymax, v);
    ymax = niceMax(ymax);
    const x = (t) => padL + ((t - t0) / WINDOW_MS) * (W - padL - padR);
    const y = (v) => H - padB - (v / ymax) * (H - padT - padB);
    const kids = [];
    for (const f of [0, 0.5, 1]) {
      kids.push(svgEl('line', { x1: padL, x2: W - padR, y1: y(ymax * f), y2: y(ymax * f), class: 'grid' }));
      const lbl = svgEl('text', { x: padL - 4, y: y(ymax * f) + 4, class: 'axis', 'text-anchor': 'end' });
      lbl.textContent = opts.percent ? Math.round(ymax * f * 100) + '%' : fmtNum(ymax * f);
      kids.push(lbl);
    }
    for (const m of [15, 10, 5, 0]) {
      const t = svgEl('text', { x: x(now - m * 60000), y: H - 4, class: 'axis', 'text-anchor': m === 15 ? 'start' : m === 0 ? 'end' : 'middle' });
      t.textContent = m === 0 ? 'now' : '−' + m + 'm';
      kids.push(t);
    }
    for (const s of series) {
      const pts = s.points.filter(([t]) => t >= t0).map(([t, v]) => x(t).toFixed(1) + ',' + y(Math.min(v, ymax)).toFixed(1)).join(' ');
      if (!pts) continue;
      if (s.base) {
        // Stacked band between s.base and s.points (same timestamps).
        const lower = s.base.filter(([t]) => t >= t0).map(([t, v]) => x(t).toFixed(1) + ',' + y(Math.min(v, ymax)).toFixed(1)).reverse().join(' ');
        kids.push(svgEl('polygon', { points: pts + ' ' + lower, fill: s.color, 'fill-opacity': 0.45, stroke: 'none' }));
      } else if (s.area) {
        const first = s.points.find(([t]) => t >= t0);
        const last = s.points[s.points.length - 1];
        kids.push(svgEl('polygon', { points: x(first[0]).toFixed(1) + ',' + y(0) + ' ' + pts + ' ' + x(last[0]).toFixed(1) + ',' + y(0), fill: s.color, 'fill-opacity': 0.25, stroke: 'none' }));
      }
      kids.push(svgEl('polyline', { points: pts, fill: 'none', stroke: s.color, 'stroke-width': 1.6, 'stroke-dasharray': s.dashed ? '4 3' : 'none' }));
    }
    svg.replaceChildren(...kids);
    if (legend) {
      legend.replaceChildren(...series.map((s) => {
        const last = s.value !== undefined ? s.value : s.points.length ? s.points[s.points.length - 1][1] : 0;
        const sw = el('span', { class: 'swatch' });
        sw.style.background = s.color;
        return el('span', { class: 'item', 'data-series': s.name }, sw,
          s.name + ' ' + (opts.percent ? Math.round(last * 100) + '%' : fmtNum(last)) + (s.note ? ' · ' + s.note : ''));
      }));
      if (!series.length && opts.empty) legend.replaceChildren(el('span', { class: 'item' }, opts.empty));
    }
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function fmtNum(v) { return v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, '') || '0'; }

  // windowTotals sums the prompt and cached token rates pick(sample) gives
  // over the window (each rate × the span it was measured over, so samples
  // this page missed are not counted twice).
  function windowTotals(pick) {
    const t0 = (S.samples.length ? S.samples[S.samples.length - 1].t : 0) - WINDOW_MS;
    const out = { prompt: 0, cached: 0 };
    S.samples.forEach((s) => {
      if (s.t < t0) return;
      const dt = (s.spanMillis || 0) / 1000, v = pick(s);
      out.prompt += (v.prompt || 0) * dt;
      out.cached += (v.cached || 0) * dt;
    });
    return out;
  }

  function drawCharts() {
    if (!S.chartsOn || $('app').hidden) return;
    const pools = (S.list && S.list.pools) || [];
    // In flight vs limit per pool: one small chart each.
    const box = $('chart-pools');
    if (box.dataset.sig !== pools.map((p) => p.name).join(',')) {
      box.dataset.sig = pools.map((p) => p.name).join(',');
      box.replaceChildren(...pools.map((p) => el('figure', { 'data-pool': p.name }, el('figcaption', {}), svgEl('svg', { class: 'chart small', role: 'img', 'aria-label': 'in flight vs limit of ' + p.name }))));
    }
    for (const fig of box.children) {
      const name = fig.dataset.pool;
      const inflight = seriesOf((s) => (s.pools[name] || {}).inFlight || 0);
      const limit = seriesOf((s) => (s.pools[name] || {}).limit || 0);
      const cur = inflight.length ? inflight[inflight.length - 1][1] : 0, lim = limit.length ? limit[limit.length - 1][1] : 0;
      const tok = windowTotals((s) => s.pools[name] || {});
      fig.firstChild.textContent = name + '  ' + cur + ' / ' + lim + (tok.prompt > 0 ? '  · cached ' + Math.round(100 * tok.cached / tok.prompt) + '%' : '');
      const ymax = Math.max(1, ...limit.map((p) => p[1]), ...inflight.map((p) => p[1]));
      lineChart(fig.lastChild, null, [
        { name: 'limit', color: '#64748b', points: limit, dashed: true },
        { name: 'in flight', color: '#1f6fb2', points: inflight, area: true },
      ], { height: 58, yMax: ymax });
    }
    // Calls/s per region (served by a pool in the region).
    const regionOf = Object.fromEntries(pools.map((p) => [p.name, p.region]));
    const regions = [...new Set(pools.map((p) => p.region))].sort();
    const perRegion = (s, r, k) => Object.entries(s.pools).reduce((a, [n, v]) => a + (regionOf[n] === r ? v[k] || 0 : 0), 0);
    lineChart($('chart-regions'), $('legend-regions'), regions.map((r, i) => ({ name: r, color: COLORS[i % COLORS.length], points: seriesOf((s) => perRegion(s, r, 'ok')) })), {});
    // Prompt tokens the pools' backends took from their prefix caches
    // (usage cached_input_tokens), per region; the legend gives the
    // region's cached share of its prompt tokens over the window.
    const cachedRegions = regions.filter((r) => S.samples.some((s) => perRegion(s, r, 'prompt') > 0));
    lineChart($('chart-cached'), $('legend-cached'), cachedRegions.map((r) => {
      const tok = windowTotals((s) => ({ prompt: perRegion(s, r, 'prompt'), cached: perRegion(s, r, 'cached') }));
      return { name: r, color: COLORS[regions.indexOf(r) % COLORS.length], points: seriesOf((s) => perRegion(s, r, 'cached')),
        note: Math.round(100 * tok.cached / tok.prompt) + '% of ' + fmtNum(tok.prompt) + ' prompt tokens cached in 15 min' };
    }), { empty: 'no prompt tokens yet' });
    // Sheds by the callers' region: a region of the fleet, "other" (a name
    // the fleet does not know) or "unknown" (none given); the legend adds
    // how many were shed in the window.
    const t0 = (S.samples.length ? S.samples[S.samples.length - 1].t : 0) - WINDOW_MS;
    const special = { other: 1, unknown: 2 };
    const shedRegions = [...new Set(S.samples.flatMap((s) => Object.keys(s.shedsByRegion || {})))]
      .sort((a, b) => (special[a] || 0) - (special[b] || 0) || a.localeCompare(b));
    const shedCount = (r) => Math.round(S.samples.reduce((a, s, i) =>
      a + (i > 0 && s.t >= t0 ? ((s.shedsByRegion || {})[r] || 0) * (s.t - S.samples[i - 1].t) / 1000 : 0), 0));
    const regionColor = (r) => (r === 'other' ? '#475569' : r === 'unknown' ? '#94a3b8' :
      COLORS[(regions.indexOf(r) + COLORS.length) % COLORS.length]);
    lineChart($('chart-sheds-region'), $('legend-sheds-region'), shedRegions.map((r) => ({
      name: r, color: regionColor(r), points: seriesOf((s) => (s.shedsByRegion || {})[r] || 0), note: shedCount(r) + ' in 15 min',
    })), { empty: 'no calls shed' });
    // Sheds by priority and failed calls.
    const prio = ['interactive', 'standard', 'batch'];
    lineChart($('chart-sheds'), $('legend-sheds'), [
      ...prio.map((p, i) => ({ name: 'shed ' + p, color: COLORS[[4, 1, 6][i]], points: seriesOf((s) => (s.shedsByPriority || {})[p] || 0) })),
      { name: 'failed', color: '#334155', dashed: true, points: seriesOf((s) => Object.values(s.pools).reduce((a, v) => a + (v.failed || 0), 0)),
        note: Math.round(S.samples.reduce((a, s, i) => a + (i > 0 && s.t >= t0 ? Object.values(s.pools).reduce((x, v) => x + (v.failed || 0), 0) * (s.t - S.samples[i - 1].t) / 1000 : 0), 0)) + ' in 15 min' },
    ], {});
    // Spill share by tier, from the chosen callers' region.
    if (!S.home) {
      // No replica region and no choice made: follow the busiest region.
      const b = busiestRegion();
      if (b && $('home-region').value !== b) $('home-region').value = b;
    }
    const home = S.home || $('home-region').value;
    const homeGeo = S.geos[home];
    const tierOf = (p) => (p.region === home ? 'region' : p.geography === homeGeo ? 'geography' : 'anywhere');
    const tierByPool = Object.fromEntries(pools.map((p) => [p.name, tierOf(p)]));
    // Shares over a rolling 30 s of calls, stacked: same region at the
    // bottom, then the rest of the geography, then anywhere else.
    const win = Math.max(1, Math.round(30000 / S.everyMs));
    const acc = { region: 0, geography: 0, anywhere: 0 };
    const perSample = S.samples.map((s) => {
      const c = { region: 0, geography: 0, anywhere: 0 };
      for (const [n, v] of Object.entries(s.pools)) c[tierByPool[n] || 'anywhere'] += v.ok || 0;
      return c;
    });
    const cum = perSample.map((c, i) => {
      for (const k in acc) acc[k] += c[k];
      if (i >= win) for (const k in acc) acc[k] -= perSample[i - win][k];
      const tot = acc.region + acc.geography + acc.anywhere;
      const t = S.samples[i].t;
      return tot > 0 ? [t, acc.region / tot, (acc.region + acc.geography) / tot, 1] : [t, 0, 0, 0];
    });
    const col = (k) => cum.map((r) => [r[0], r[k]]);
    const lastCum = cum.length ? cum[cum.length - 1] : [0, 0, 0, 0];
    lineChart($('chart-tiers'), $('legend-tiers'), [
      { name: 'same region', color: '#15803d', points: col(1), base: col(0).map(([t]) => [t, 0]), value: lastCum[1] },
      { name: 'same geography', color: '#ca8a04', points: col(2), base: col(1), value: lastCum[2] - lastCum[1] },
      { name: 'anywhere', color: '#b91c1c', points: col(3), base: col(2), value: lastCum[3] - lastCum[2] },
    ], { percent: true, yMax: 1 });
  }

  // ---- wiring ----

  document.addEventListener('DOMContentLoaded', () => {
    $('signin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      $('signin-error').textContent = '';
      $('signin-btn').disabled = true;
      try {
        await signIn($('token').value.trim());
      } catch (e) {
        S.token = null;
        $('signin-error').textContent = 'Sign-in failed: ' + describe(e);
      } finally {
        $('signin-btn').disabled = false;
      }
    });
    $('signout').addEventListener('click', () => signOut('Signed out.'));
    $('fleet-body').addEventListener('click', onAction);
    $('policy-btn').addEventListener('click', onAction);
    $('dlg-form').addEventListener('submit', submitDialog);
    $('dlg-cancel').addEventListener('click', closeDialog);
    $('explain-form').addEventListener('submit', explain);
    $('audit-refresh').addEventListener('click', () => loadAudit().catch((e) => toast(describe(e))));
    $('home-region').addEventListener('change', () => { S.home = $('home-region').value; drawCharts(); });
    window.addEventListener('resize', () => drawCharts());
    setInterval(tickCountdowns, 1000);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved).catch((e) => signOut('Sign-in failed: ' + describe(e)));
    else $('token').focus();
  });
})();

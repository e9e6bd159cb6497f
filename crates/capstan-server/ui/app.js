// Capstan web UI: a small single-page application over /api/v1, no framework, no build.
//
// Security rules kept throughout: API data only ever reaches the page through textContent,
// attribute values or SVG text nodes built with the DOM (never parsed as markup), the session lives in
// an HttpOnly cookie the script cannot read (the bearer token in the login answer is dropped),
// and every mutating request carries the CSRF header the API requires.

const API = '/api/v1';
const CSRF_HEADER = 'X-Capstan-CSRF';
const PAGE_SIZE = 50;

const HEALTH_ICONS = {
  Healthy: '✔', Progressing: '◔', Degraded: '✖', Suspended: '‖', Missing: '⚠', Unknown: '?',
};
const SYNC_ICONS = { Synced: '✔', OutOfSync: '≠', Missing: '⚠', Extraneous: '⊖', Unknown: '?' };
const PHASE_ICONS = { Running: '◔', Succeeded: '✔', Failed: '✖', Error: '✖', Terminating: '■' };

const state = {
  user: null,          // { username, role }
  events: null,        // the EventSource, one per session
  view: null,          // the current view: { onEvent(evt), dispose() }
};

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Builds an element; `attrs` keys starting with "on" become listeners, others attributes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function main() { return document.getElementById('main'); }

/** Replaces the main content. */
function show(...children) {
  const m = main();
  m.replaceChildren(...children);
}

/**
 * Re-renders a panel only when `key` (its data, serialized) changed, so a live update that
 * changes nothing leaves the DOM, and whatever has the keyboard focus, alone. When the panel
 * does change, the focus moves back to the control with the same id or data-focus-key.
 */
function rerender(panel, key, render) {
  if (panel.dataset.renderKey === key) return;
  panel.dataset.renderKey = key;
  const active = document.activeElement;
  const focusId = active && panel.contains(active) ? (active.id || active.dataset.focusKey) : null;
  render();
  if (focusId) {
    const again = document.getElementById(focusId) || panel.querySelector(`[data-focus-key="${CSS.escape(focusId)}"]`);
    if (again) again.focus();
  }
}

function announce(text) {
  const live = document.getElementById('live');
  live.textContent = '';
  // A fresh text node in a later task makes screen readers read a repeated message again.
  setTimeout(() => { live.textContent = text; }, 30);
}

function badge(kind, status) {
  const value = status || 'Unknown';
  const icons = kind === 'health' ? HEALTH_ICONS : kind === 'sync' ? SYNC_ICONS : PHASE_ICONS;
  const label = kind === 'health' ? 'Health' : kind === 'sync' ? 'Sync' : 'Operation';
  return h('span', {
    class: `badge st-${cssToken(value)}`,
    'data-kind': kind,
    'data-status': value,
    title: `${label}: ${value}`,
  }, h('span', { class: 'icon', 'aria-hidden': 'true' }, icons[value] || '•'), value);
}

/** Only letters survive into class names, so API strings can never inject selectors. */
function cssToken(v) {
  const t = String(v || 'Unknown').replace(/[^A-Za-z]/g, '');
  return t || 'Unknown';
}

function shortRev(rev) {
  if (!rev) return '—';
  return /^[0-9a-f]{40}$/.test(rev) ? rev.slice(0, 8) : rev;
}

function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString();
}

// ---------------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers[CSRF_HEADER] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `The server cannot be reached (${e.message}).`);
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const msg = (data && (data.error || data.message)) || `${resp.status} ${resp.statusText}`;
    const err = new ApiError(resp.status, msg, resp.headers.get('Retry-After'));
    if (resp.status === 401 && path !== '/session') onUnauthenticated();
    throw err;
  }
  return data;
}

function appPath(ns, name, suffix = '') {
  return `/applications/${encodeURIComponent(ns)}/${encodeURIComponent(name)}${suffix}`;
}

/** The list in an answer: a bare array, or the array under `items` (or `key`). */
function itemsOf(data, key) {
  if (Array.isArray(data)) return data;
  if (data && key && Array.isArray(data[key])) return data[key];
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

/**
 * A list row from whatever the API returns for an application: the full resource
 * (metadata/spec/status) or a flat summary.
 */
function summaryOf(a) {
  if (!a || typeof a !== 'object') return null;
  const md = a.metadata || {};
  const spec = a.spec || {};
  const src = spec.source || {};
  const st = a.status || {};
  const pick = (...vals) => vals.find((v) => v !== undefined && v !== null && v !== '');
  return {
    namespace: pick(a.namespace, md.namespace, ''),
    name: pick(a.name, md.name, ''),
    project: pick(a.project, spec.project, 'default'),
    repoURL: pick(a.repoURL, a.repoUrl, src.repoURL, ''),
    path: pick(a.path, src.path, ''),
    targetRevision: pick(a.targetRevision, src.targetRevision, 'HEAD'),
    sync: pick(typeof a.sync === 'string' ? a.sync : a.sync && a.sync.status,
      a.syncStatus, st.sync && st.sync.status, 'Unknown'),
    health: pick(typeof a.health === 'string' ? a.health : a.health && a.health.status,
      a.healthStatus, st.health && st.health.status, 'Unknown'),
    revision: pick(a.revision, st.sync && st.sync.revision, ''),
    locked: Boolean(a.locked || (a.lock && a.lock.revision) || st.lock),
  };
}

// ---------------------------------------------------------------------------------------------
// Session and the event stream

async function boot() {
  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  try {
    state.user = await api('GET', '/session');
  } catch (e) {
    if (e.status === 401) { state.user = null; } else { showFatal(e); return; }
  }
  route();
}

function showFatal(e) {
  show(h('h1', {}, 'Capstan'), h('p', { class: 'error', role: 'alert' }, e.message));
}

function onUnauthenticated() {
  if (!state.user) return;
  state.user = null;
  stopEvents();
  route();
}

function setChrome() {
  const who = document.getElementById('whoami');
  const out = document.getElementById('logout');
  const nav = document.getElementById('nav');
  if (state.user) {
    who.textContent = `${state.user.username || state.user.user || 'signed in'}${isReadonly() ? ' (read-only)' : ''}`;
    out.hidden = false;
    nav.hidden = false;
  } else {
    who.textContent = '';
    out.hidden = true;
    nav.hidden = true;
  }
}

function isReadonly() {
  return Boolean(state.user && state.user.role && state.user.role !== 'admin');
}

async function logout() {
  // Leave the signed-in view first: its requests still in flight then answer 401 without
  // re-routing (onUnauthenticated sees no user), so the login form is drawn exactly once,
  // after the session is gone, and nothing redraws it under a person already typing.
  if (state.view && state.view.dispose) state.view.dispose();
  state.view = null;
  state.user = null;
  stopEvents();
  setChrome();
  show(h('p', { id: 'booting' }, 'Logging out…'));
  try { await api('DELETE', '/session'); } catch { /* logged out either way */ }
  if (location.hash && location.hash !== '#/') {
    location.hash = '#/'; // the hashchange routes to the login form
  } else {
    route();
  }
  announce('Logged out');
}

// The stream's event names; `ready` arrives on every (re)connection and `resync` when this
// client fell behind: both mean "reload what is on screen", since changes may have been missed.
const STREAM_EVENT_NAMES = ['message', 'ready', 'resync', 'added', 'updated', 'resources', 'deleted'];

function startEvents() {
  if (state.events) return;
  const es = new EventSource(`${API}/events`);
  const deliver = (type) => (msg) => {
    let data = null;
    try { data = JSON.parse(msg.data); } catch { data = null; }
    if (state.view && state.view.onEvent) state.view.onEvent({ type, data });
  };
  for (const name of STREAM_EVENT_NAMES) es.addEventListener(name, deliver(name));
  es.addEventListener('error', () => {
    // EventSource reconnects by itself; a closed stream may mean the session ended.
    if (es.readyState === EventSource.CLOSED) {
      state.events = null;
      api('GET', '/session').then(() => startEvents(), () => {});
    }
  });
  state.events = es;
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

// A page left for another stays alive in the browser's back/forward cache, its event stream
// still open: over HTTP/1.1 each stream holds one of the browser's six connections to this
// host, so after six navigations no connection was left and the next page's requests waited
// about a minute (measured: the UI benchmark's 58 s p90; the document request itself started
// 59 s after navigation). Close the stream when the page is hidden and reopen it when the
// page is shown again from that cache; its `ready` event then makes the view reload.
window.addEventListener('pagehide', () => { stopEvents(); });
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted && state.user) startEvents();
});

/** The namespace/name an event of the stream is about, whatever its envelope. */
function eventTarget(data) {
  if (!data || typeof data !== 'object') return null;
  const candidates = [data, data.application, data.app, data.object, data.summary];
  for (const c of candidates) {
    if (!c || typeof c !== 'object') continue;
    const sum = summaryOf(c);
    if (sum && sum.name) return sum;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Routing (hash based, so the server serves one page)

function route() {
  if (state.view && state.view.dispose) state.view.dispose();
  state.view = null;
  setChrome();
  if (!state.user) { loginView(); return; }
  startEvents();
  const hash = location.hash.replace(/^#/, '') || '/';
  const m = hash.match(/^\/apps\/([^/]+)\/([^/]+)$/);
  if (m) appView(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
  else listView();
}

// ---------------------------------------------------------------------------------------------
// Login

function loginView() {
  const err = h('p', { class: 'error', role: 'alert', id: 'login-error' });
  const user = h('input', { type: 'text', id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { type: 'password', id: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, 'Log in');
  const form = h('form', { class: 'login panel', 'aria-labelledby': 'login-title', novalidate: true },
    h('h1', { id: 'login-title' }, 'Log in to Capstan'),
    h('div', { class: 'field' }, h('label', { for: 'username' }, 'Username'), user),
    h('div', { class: 'field' }, h('label', { for: 'password' }, 'Password'), pass),
    err,
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    if (!user.value || !pass.value) { err.textContent = 'Enter a username and a password.'; return; }
    submit.disabled = true;
    try {
      const who = await api('POST', '/session', { username: user.value, password: pass.value });
      pass.value = '';
      state.user = { username: (who && (who.username || who.user)) || user.value, role: who && who.role };
      if (!state.user.role) {
        try { state.user = await api('GET', '/session'); } catch { /* keep what login said */ }
      }
      announce(`Logged in as ${state.user.username}`);
      route();
    } catch (e) {
      pass.value = '';
      if (e.status === 429) {
        const secs = parseInt(e.retryAfter, 10);
        err.textContent = `Too many failed attempts. Try again in ${Number.isFinite(secs) ? secs : 60} seconds.`;
      } else if (e.status === 401 || e.status === 403) {
        err.textContent = 'Wrong username or password.';
      } else {
        err.textContent = `Login failed: ${e.message}`;
      }
      pass.focus();
    } finally {
      submit.disabled = false;
    }
  });
  show(form);
  user.focus();
}

// ---------------------------------------------------------------------------------------------
// Applications list: one page at a time through the API's limit/continue, so 10,000
// applications cost one page of rows.

const listState = { search: '', sync: '', health: '', pages: [''], page: 0 };

function listView() {
  const title = h('h1', {}, 'Applications');
  const status = h('p', { class: 'muted', id: 'list-status', 'aria-live': 'polite' }, 'Loading…');
  const errBox = h('p', { class: 'error', role: 'alert' });
  const search = h('input', { type: 'search', id: 'search', value: listState.search, placeholder: 'name, namespace or repository' });
  const selSync = select('filter-sync', ['', 'Synced', 'OutOfSync', 'Unknown'], listState.sync, 'Any');
  const selHealth = select('filter-health',
    ['', 'Healthy', 'Progressing', 'Degraded', 'Suspended', 'Missing', 'Unknown'], listState.health, 'Any');
  const filters = h('form', { class: 'filters row', role: 'search', 'aria-label': 'Filter applications' },
    h('div', { class: 'field' }, h('label', { for: 'search' }, 'Search'), search),
    h('div', { class: 'field' }, h('label', { for: 'filter-sync' }, 'Sync status'), selSync),
    h('div', { class: 'field' }, h('label', { for: 'filter-health' }, 'Health'), selHealth));
  filters.addEventListener('submit', (e) => e.preventDefault());
  const tbody = h('tbody', { id: 'app-rows' });
  const table = h('table', { id: 'apps' },
    h('caption', { class: 'sr-only' }, 'Applications with their sync and health status'),
    h('thead', {}, h('tr', {},
      ['Name', 'Project', 'Repository / path', 'Target', 'Sync', 'Health', 'Lock'].map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  const prev = h('button', { type: 'button', id: 'page-prev' }, '← Previous');
  const next = h('button', { type: 'button', id: 'page-next' }, 'Next →');
  const pageLabel = h('span', { class: 'muted', id: 'page-label' });
  const pager = h('nav', { class: 'pager row', 'aria-label': 'Pages' }, prev, pageLabel, next);
  show(title, filters, errBox, status, table, pager);

  let generation = 0;
  let firstRender = false;
  let rows = new Map(); // "ns/name" -> tr
  let refetchTimer = null;
  let loading = false;     // a page request is in flight
  let reloadAfter = false; // the stream (re)connected while it was: load again once it lands

  async function load() {
    const gen = ++generation;
    loading = true;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (listState.search) params.set('search', listState.search);
    if (listState.sync) params.set('sync', listState.sync);
    if (listState.health) params.set('health', listState.health);
    const token = listState.pages[listState.page];
    if (token) params.set('continue', token);
    status.textContent = 'Loading…';
    try {
      const data = await api('GET', `/applications?${params}`);
      if (gen !== generation) return; // a newer request superseded this one
      errBox.textContent = '';
      const items = itemsOf(data).map(summaryOf).filter(Boolean);
      // A reload that brings the same rows (the stream's `ready` after the first load, say)
      // leaves them alone, so the keyboard focus and what a person is reading stay put.
      rerender(tbody, JSON.stringify(items), () => {
        rows = new Map();
        tbody.replaceChildren(...items.map((a) => {
          const tr = appRow(a);
          rows.set(`${a.namespace}/${a.name}`, tr);
          return tr;
        }));
      });
      const cont = (data && (data.continue || (data.metadata && data.metadata.continue))) || '';
      listState.pages.length = listState.page + 1;
      if (cont) listState.pages.push(cont);
      prev.disabled = listState.page === 0;
      next.disabled = !cont;
      const total = data && (data.total ?? data.count ?? (data.metadata && data.metadata.remainingItemCount));
      pageLabel.textContent = `Page ${listState.page + 1}`;
      if (!firstRender) {
        firstRender = true;
        // User Timing mark at the first frame showing rows: what the UI benchmark reads
        // (relative to navigation start).
        requestAnimationFrame(() => performance.mark('capstan:list-rendered'));
      }
      status.textContent = items.length === 0
        ? 'No applications match.'
        : `Showing ${items.length} application${items.length === 1 ? '' : 's'}${Number.isFinite(total) ? ` of ${total}` : ''}.`;
    } catch (e) {
      if (gen !== generation) return;
      status.textContent = '';
      errBox.textContent = `Could not list applications: ${e.message}`;
    } finally {
      if (gen === generation) {
        loading = false;
        if (reloadAfter) { reloadAfter = false; load(); }
      }
    }
  }

  function restart() { listState.pages = ['']; listState.page = 0; load(); }
  let searchTimer = null;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { listState.search = search.value.trim(); restart(); }, 250);
  });
  selSync.addEventListener('change', () => { listState.sync = selSync.value; restart(); });
  selHealth.addEventListener('change', () => { listState.health = selHealth.value; restart(); });
  prev.addEventListener('click', () => { if (listState.page > 0) { listState.page -= 1; load(); } });
  next.addEventListener('click', () => {
    if (listState.pages.length > listState.page + 1) { listState.page += 1; load(); }
  });

  state.view = {
    onEvent({ type, data }) {
      if (type === 'ready' || type === 'resync') {
        // Changes may have been missed before this subscription: reload, but never by
        // superseding a request in flight (on a page's first load the stream's `ready` comes
        // while the first page is loading; discarding it would delay the first rows by a
        // whole second request).
        if (loading) reloadAfter = true;
        else if (!refetchTimer) refetchTimer = setTimeout(() => { refetchTimer = null; load(); }, 100);
        return;
      }
      const t = eventTarget(data);
      if (!t) return;
      const key = `${t.namespace}/${t.name}`;
      const tr = rows.get(key);
      if (type === 'deleted' || (data && (data.type === 'deleted' || data.type === 'DELETED'))) {
        if (tr) { tr.remove(); rows.delete(key); tbody.dataset.renderKey = ''; }
        return;
      }
      if (tr) {
        // The event carries a summary: update the row in place (filters are re-applied on the
        // next page load, so a row never jumps away under the pointer).
        const fresh = appRow(t);
        tr.replaceWith(fresh);
        tbody.dataset.renderKey = ''; // the rows no longer match the last page loaded
        rows.set(key, fresh);
      } else if (listState.page === 0 && rows.size < PAGE_SIZE && !refetchTimer) {
        // A short first page may have to show a new application: refetch once, debounced.
        refetchTimer = setTimeout(() => { refetchTimer = null; load(); }, 500);
      }
    },
    dispose() { clearTimeout(refetchTimer); clearTimeout(searchTimer); generation += 1; },
  };
  load();
}

function select(id, values, current, anyLabel) {
  const sel = h('select', { id, name: id });
  for (const v of values) {
    const o = h('option', { value: v }, v || anyLabel);
    if (v === current) o.selected = true;
    sel.append(o);
  }
  return sel;
}

function appRow(a) {
  const href = `#/apps/${encodeURIComponent(a.namespace)}/${encodeURIComponent(a.name)}`;
  return h('tr', { 'data-app': `${a.namespace}/${a.name}` },
    h('td', {}, h('a', { href, class: 'app-link' }, a.name), h('div', { class: 'muted' }, a.namespace)),
    h('td', {}, a.project),
    h('td', {}, h('div', { class: 'mono' }, a.repoURL), h('div', { class: 'muted mono' }, a.path || '.')),
    h('td', { class: 'mono' }, a.targetRevision),
    h('td', {}, badge('sync', a.sync)),
    h('td', {}, badge('health', a.health)),
    h('td', {}, a.locked
      ? h('span', { class: 'badge lock-badge', title: 'Locked after a rollback', 'data-locked': 'true' }, 'Locked')
      : h('span', { class: 'sr-only' }, 'Not locked')));
}

// ---------------------------------------------------------------------------------------------
// Application page

function appView(ns, name) {
  const base = appPath(ns, name);
  const lockSlot = h('div', { id: 'lock-slot' });
  const title = h('h1', {}, h('span', { class: 'muted' }, `${ns} / `), name);
  const errBox = h('p', { class: 'error', role: 'alert', id: 'app-error' });
  const summary = h('section', { class: 'panel', 'aria-labelledby': 'h-summary' }, h('h2', { id: 'h-summary' }, 'Summary'));
  const syncPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-sync' }, h('h2', { id: 'h-sync' }, 'Sync'));
  const treePanel = h('section', { class: 'panel', 'aria-labelledby': 'h-tree' }, h('h2', { id: 'h-tree' }, 'Resource tree'));
  const diff = diffView(base);
  const diffPanel = diff.panel;
  const historyPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-history' }, h('h2', { id: 'h-history' }, 'History'));
  const condPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-cond' }, h('h2', { id: 'h-cond' }, 'Conditions'));
  const eventsPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-events' }, h('h2', { id: 'h-events' }, 'Events'));
  const back = h('p', {}, h('a', { href: '#/' }, '← All applications'));
  show(back, title, lockSlot, errBox,
    h('div', { class: 'grid2' }, summary, syncPanel),
    treePanel, diffPanel, historyPanel,
    h('div', { class: 'grid2' }, condPanel, eventsPanel));

  const ro = isReadonly();
  let app = null;
  let last = { sync: null, health: null, phase: null, locked: null };
  let disposed = false;
  let timer = null;
  let inflight = null;

  // Sync form: built once so what a person typed survives live updates.
  const revInput = h('input', { type: 'text', id: 'sync-revision', placeholder: 'target revision' });
  const prune = h('input', { type: 'checkbox', id: 'sync-prune' });
  const dry = h('input', { type: 'checkbox', id: 'sync-dry-run' });
  const syncBtn = h('button', { type: 'submit', class: 'primary', id: 'sync-button', disabled: ro }, 'Sync');
  const refreshBtn = h('button', { type: 'button', id: 'refresh-button', disabled: ro }, 'Refresh');
  const hardBtn = h('button', { type: 'button', id: 'hard-refresh-button', disabled: ro }, 'Hard refresh');
  const syncForm = h('form', { class: 'stack', 'aria-label': 'Sync options' },
    h('div', { class: 'row' }, h('label', { for: 'sync-revision' }, 'Revision'), revInput),
    h('div', { class: 'row' },
      h('span', { class: 'switch' }, prune, h('label', { for: 'sync-prune' }, 'Prune')),
      h('span', { class: 'switch' }, dry, h('label', { for: 'sync-dry-run' }, 'Dry run'))),
    h('div', { class: 'row' }, syncBtn, refreshBtn, hardBtn));
  const opBox = h('div', { id: 'operation', 'aria-live': 'polite' });
  syncPanel.append(syncForm, opBox);
  syncForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = { prune: prune.checked, dryRun: dry.checked };
    if (revInput.value.trim()) body.revision = revInput.value.trim();
    act('POST', '/sync', body, dry.checked ? 'Dry-run sync requested' : 'Sync requested');
  });
  refreshBtn.addEventListener('click', () => act('POST', '/refresh', { hard: false }, 'Refresh requested'));
  hardBtn.addEventListener('click', () => act('POST', '/refresh', { hard: true }, 'Hard refresh requested'));

  async function act(method, suffix, body, message) {
    errBox.textContent = '';
    try {
      await api(method, base + suffix, body);
      announce(message);
      schedule(0);
    } catch (e) {
      errBox.textContent = `${message.replace(/ requested$/, '')} failed: ${e.message}`;
    }
  }

  async function refreshAll() {
    if (inflight) return inflight;
    inflight = (async () => {
      try {
        const [a, tree, hist, evs] = await Promise.all([
          api('GET', base),
          api('GET', `${base}/resource-tree`).catch((e) => ({ error: e })),
          api('GET', `${base}/history`).catch(() => null),
          api('GET', `${base}/events`).catch(() => null),
        ]);
        if (disposed) return;
        app = a;
        errBox.textContent = '';
        renderLock();
        renderSummary();
        renderOperation();
        renderTree(tree);
        diff.appChanged(a);
        renderHistory(hist);
        renderConditions();
        renderEvents(evs);
        announceChanges();
      } catch (e) {
        if (!disposed) errBox.textContent = `Could not load ${ns}/${name}: ${e.message}`;
      } finally {
        inflight = null;
      }
    })();
    return inflight;
  }

  function schedule(delay) {
    if (timer) return;
    timer = setTimeout(() => { timer = null; refreshAll(); }, delay);
  }

  function announceChanges() {
    const sum = summaryOf(app);
    const phase = app.status && app.status.operationState && app.status.operationState.phase;
    const parts = [];
    if (last.sync !== null && sum.sync !== last.sync) parts.push(`sync ${sum.sync}`);
    if (last.health !== null && sum.health !== last.health) parts.push(`health ${sum.health}`);
    if (last.phase !== null && phase !== last.phase && phase) parts.push(`operation ${phase}`);
    if (last.locked !== null && sum.locked !== last.locked) parts.push(sum.locked ? 'locked' : 'unlocked');
    if (parts.length) announce(`${name}: ${parts.join(', ')}`);
    last = { sync: sum.sync, health: sum.health, phase: phase || '', locked: sum.locked };
  }

  function renderLock() {
    const lock = app.status && app.status.lock;
    rerender(lockSlot, JSON.stringify([lock || null, app.spec.source.targetRevision]), () => drawLock(lock));
  }

  function drawLock(lock) {
    if (!lock) { lockSlot.replaceChildren(); return; }
    const unlock = h('button', { type: 'button', id: 'unlock-button', disabled: ro }, 'Unlock');
    unlock.addEventListener('click', async () => {
      const ok = await confirmDialog('Unlock application',
        `Unlock ${name}? Automated sync resumes and the application follows ${app.spec.source.targetRevision || 'HEAD'} again.`, 'Unlock');
      if (ok) act('POST', '/unlock', {}, 'Unlock requested');
    });
    lockSlot.replaceChildren(h('div', { class: 'banner-locked', role: 'alert', id: 'locked-banner' },
      h('strong', {}, 'LOCKED'),
      h('span', {}, `at revision `, h('span', { class: 'mono', id: 'locked-revision' }, shortRev(lock.revision)),
        lock.historyId !== undefined && lock.historyId !== null ? ` (history #${lock.historyId})` : '',
        ` by ${lock.lockedBy || 'unknown'} on ${when(lock.lockedAt)}.`,
        ' Automated sync and self-heal are off; syncs to other revisions are refused.'),
      unlock));
  }

  function renderSummary() {
    const st = app.status || {};
    const key = JSON.stringify([app.spec, st.sync, st.health, st.sourceType, st.reconciledAt, Boolean(st.lock)]);
    rerender(summary, key, drawSummary);
  }

  function drawSummary() {
    const spec = app.spec || {};
    const src = spec.source || {};
    const dst = spec.destination || {};
    const st = app.status || {};
    const sum = summaryOf(app);
    const automated = Boolean(spec.syncPolicy && spec.syncPolicy.automated);
    const toggle = h('input', { type: 'checkbox', id: 'auto-sync', role: 'switch', disabled: ro || Boolean(st.lock) });
    toggle.checked = automated;
    toggle.setAttribute('aria-checked', String(automated));
    toggle.addEventListener('change', () => {
      act('PUT', '/auto-sync', { enabled: toggle.checked },
        toggle.checked ? 'Auto-sync enable requested' : 'Auto-sync disable requested');
    });
    const rows = [
      ['Project', spec.project || 'default'],
      ['Repository', h('span', { class: 'mono' }, src.repoURL || '—')],
      ['Path', h('span', { class: 'mono' }, src.path || '.')],
      ['Target revision', h('span', { class: 'mono' }, src.targetRevision || 'HEAD')],
      ['Synced revision', h('span', { class: 'mono', id: 'synced-revision', 'data-revision': sum.revision }, shortRev(sum.revision))],
      ['Destination', `${dst.name || dst.server || 'in-cluster'} / ${dst.namespace || '—'}`],
      ['Sync', h('span', { id: 'app-sync' }, badge('sync', sum.sync))],
      ['Health', h('span', { id: 'app-health' }, badge('health', sum.health)),
        st.health && st.health.message ? h('div', { class: 'muted' }, st.health.message) : null],
      ['Source type', st.sourceType || '—'],
      ['Reconciled', when(st.reconciledAt)],
      ['Auto-sync', h('span', { class: 'switch' }, toggle,
        h('label', { for: 'auto-sync' }, automated ? 'Enabled' : 'Disabled'),
        st.lock ? h('span', { class: 'muted' }, '(off while locked)') : null)],
    ];
    summary.replaceChildren(summary.firstChild, h('dl', { class: 'summary' },
      rows.map(([k, ...v]) => [h('dt', {}, k), h('dd', {}, ...v)])));
    if (!revInput.value && document.activeElement !== revInput) revInput.placeholder = src.targetRevision || 'HEAD';
  }

  function renderOperation() {
    const key = JSON.stringify([app.operation || null, (app.status && app.status.operationState) || null]);
    rerender(opBox, key, drawOperation);
  }

  function drawOperation() {
    const op = app.status && app.status.operationState;
    const pending = app.operation && app.operation.sync;
    const nodes = [];
    if (pending && (!op || op.phase !== 'Running')) {
      nodes.push(h('p', {}, badge('phase', 'Running'), ' Requested, waiting for the controller…'));
    }
    if (op) {
      const rb = op.operation && op.operation.sync && op.operation.sync.rollbackId;
      nodes.push(h('h3', {}, 'Last operation'));
      nodes.push(h('p', { id: 'op-phase', 'data-phase': op.phase || '' }, badge('phase', op.phase),
        ` ${rb !== undefined && rb !== null ? `Rollback to #${rb}` : 'Sync'}`,
        ` by ${initiator(op.operation && op.operation.initiatedBy)}`,
        op.syncResult && op.syncResult.revision ? ` of ${shortRev(op.syncResult.revision)}` : '',
        ` — started ${when(op.startedAt)}`, op.finishedAt ? `, finished ${when(op.finishedAt)}` : ''));
      if (op.message) nodes.push(h('p', { class: 'muted' }, op.message));
      if (op.phase === 'Running' && !ro) {
        const term = h('button', { type: 'button', class: 'danger', id: 'terminate-button' }, 'Terminate');
        term.addEventListener('click', async () => {
          if (await confirmDialog('Terminate operation', 'Stop the running sync? Objects already applied stay applied.', 'Terminate')) {
            act('DELETE', '/operation', undefined, 'Terminate requested');
          }
        });
        nodes.push(term);
      }
      const res = (op.syncResult && op.syncResult.resources) || [];
      if (res.length) {
        // Progress per phase and wave, in the order the controller runs them.
        const order = { PreSync: 0, Sync: 1, PostSync: 2, SyncFail: 3 };
        const groups = new Map();
        for (const r of res) {
          const key = `${r.syncPhase || 'Sync'}\u0000${r.wave || 0}`;
          if (!groups.has(key)) groups.set(key, { phase: r.syncPhase || 'Sync', wave: r.wave || 0, items: [] });
          groups.get(key).items.push(r);
        }
        const sorted = [...groups.values()].sort((a, b) => ((order[a.phase] ?? 9) - (order[b.phase] ?? 9)) || a.wave - b.wave);
        nodes.push(h('table', { id: 'op-progress' },
          h('caption', { class: 'sr-only' }, 'Operation progress per phase and wave'),
          h('thead', {}, h('tr', {}, ['Phase', 'Wave', 'Object', 'Result', 'Message'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, sorted.flatMap((g) => g.items.map((r, i) => h('tr', {},
            h('td', {}, i === 0 ? g.phase : ''),
            h('td', {}, i === 0 ? String(g.wave) : ''),
            h('td', { class: 'mono' }, `${r.kind}/${r.name}`),
            h('td', {}, badge('phase', resultStatus(r))),
            h('td', { class: 'muted' }, r.message || '')))))));
      }
    }
    opBox.replaceChildren(...nodes);
  }

  function initiator(by) {
    if (!by) return 'unknown';
    return by.automated ? 'auto-sync' : (by.username || 'unknown');
  }

  function resultStatus(r) {
    if (r.hookPhase) return r.hookPhase;
    if (r.status === 'Synced' || r.status === 'Pruned') return 'Succeeded';
    if (r.status === 'SyncFailed') return 'Failed';
    return r.status || 'Unknown';
  }

  function renderTree(tree) {
    const key = JSON.stringify([tree && tree.error ? String(tree.error.message) : tree,
      app.status && app.status.resources, app.status && app.status.health, app.status && app.status.sync]);
    rerender(treePanel, key, () => drawTreePanel(tree));
  }

  function drawTreePanel(tree) {
    const heading = treePanel.firstChild;
    if (tree && tree.error) {
      treePanel.replaceChildren(heading, h('p', { class: 'error' }, `Resource tree unavailable: ${tree.error.message}`));
      return;
    }
    const svg = drawTree(app, tree);
    const legend = h('p', { class: 'legend muted' }, 'Health: ',
      ...Object.keys(HEALTH_ICONS).map((k) => [badge('health', k), ' ']),
      ' A dashed border means out of sync.');
    treePanel.replaceChildren(heading, h('div', { class: 'tree-wrap' }, svg), legend);
  }

  function renderHistory(hist) {
    const items = hist ? itemsOf(hist, 'history') : [];
    const list = items.length ? items : ((app.status && app.status.history) || []);
    rerender(historyPanel, JSON.stringify(list), () => drawHistory(list));
  }

  function drawHistory(list) {
    const heading = historyPanel.firstChild;
    if (!list.length) {
      historyPanel.replaceChildren(heading, h('p', { class: 'muted' }, 'No sync has completed yet.'));
      return;
    }
    const newestFirst = [...list].sort((a, b) => b.id - a.id);
    const currentId = newestFirst[0].id;
    historyPanel.replaceChildren(heading, h('table', { id: 'history' },
      h('caption', { class: 'sr-only' }, 'Deployment history, newest first'),
      h('thead', {}, h('tr', {}, ['ID', 'Revision', 'Path', 'Deployed', 'By', 'Action'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, newestFirst.map((e) => {
        const by = initiator(e.initiatedBy);
        let action = h('span', { class: 'muted' }, e.id === currentId ? 'current' : '');
        if (e.id !== currentId) {
          const btn = h('button', {
            type: 'button', class: 'rollback', 'data-history-id': String(e.id), 'data-focus-key': `rollback-${e.id}`, disabled: ro,
            'aria-label': `Roll back to #${e.id} (${shortRev(e.revision)})`,
          }, 'Rollback');
          btn.addEventListener('click', async () => {
            const ok = await confirmDialog('Roll back',
              `Roll ${name} back to #${e.id}, revision ${shortRev(e.revision)}? The application will be LOCKED at that revision until someone unlocks it.`,
              'Roll back');
            if (ok) act('POST', '/rollback', { id: e.id }, `Rollback to #${e.id} requested`);
          });
          action = btn;
        }
        return h('tr', { 'data-history-id': String(e.id) },
          h('td', {}, `#${e.id}`),
          h('td', { class: 'mono', title: e.revision }, shortRev(e.revision)),
          h('td', { class: 'mono' }, (e.source && e.source.path) || '.'),
          h('td', {}, when(e.deployedAt)),
          h('td', {}, by),
          h('td', {}, action));
      }))));
  }

  function renderConditions() {
    const heading = condPanel.firstChild;
    const conds = (app.status && app.status.conditions) || [];
    condPanel.replaceChildren(heading, conds.length
      ? h('ul', { class: 'plain', id: 'conditions' }, conds.map((c) => h('li', {},
        h('strong', {}, c.type), ': ', c.message,
        c.lastTransitionTime ? h('div', { class: 'muted' }, when(c.lastTransitionTime)) : null)))
      : h('p', { class: 'muted' }, 'No conditions.'));
  }

  function renderEvents(evs) {
    const heading = eventsPanel.firstChild;
    const items = evs ? itemsOf(evs, 'events') : [];
    const ts = (e) => e.lastTimestamp || e.eventTime || (e.metadata && e.metadata.creationTimestamp) || '';
    const sorted = [...items].sort((a, b) => String(ts(b)).localeCompare(String(ts(a)))).slice(0, 50);
    eventsPanel.replaceChildren(heading, sorted.length
      ? h('ul', { class: 'plain', id: 'events' }, sorted.map((e) => h('li', {},
        h('strong', {}, e.reason || e.type || 'Event'),
        e.involvedObject ? h('span', { class: 'muted mono' }, ` ${e.involvedObject.kind}/${e.involvedObject.name}`) : null,
        ': ', e.message || '',
        h('div', { class: 'muted' }, when(ts(e))))))
      : h('p', { class: 'muted' }, 'No events.'));
  }

  state.view = {
    onEvent({ type, data }) {
      if (type === 'ready' || type === 'resync') { schedule(100); return; }
      const t = eventTarget(data);
      // Resource events may not name the application in the usual places: refresh on
      // anything that mentions it, debounced so a burst costs one reload.
      if (t && !(t.namespace === ns && t.name === name) && !mentions(data, ns, name)) return;
      if (!t && !mentions(data, ns, name)) return;
      schedule(150);
    },
    dispose() { disposed = true; clearTimeout(timer); diff.dispose(); },
  };
  refreshAll();
}

function mentions(data, ns, name) {
  if (!data || typeof data !== 'object') return false;
  const appRef = data.application || data.app;
  if (typeof appRef === 'string') return appRef === `${ns}/${name}` || appRef === name;
  return data.namespace === ns && (data.name === name || data.appName === name);
}

// ---------------------------------------------------------------------------------------------
// Diff panel: the objects whose live state differs from Git, each with its unified diff
// (`---` live, `+++` desired). Collapsed until opened, so an application page costs no diff
// (a render of the source) unless someone asks; once open it follows the application: it
// reloads when the application's sync state changes on the event stream.

/** A stable key of one object of a diff answer. */
function objectKey(o) {
  return [o.group || '', o.kind || '', o.namespace || '', o.name || ''].join('/');
}

function diffView(base) {
  const toggle = h('button', {
    type: 'button', id: 'diff-toggle', 'aria-expanded': 'false', 'aria-controls': 'diff-body',
  }, 'Show diff');
  const status = h('p', { class: 'muted', id: 'diff-status', 'aria-live': 'polite' });
  const errBox = h('p', { class: 'error', role: 'alert', id: 'diff-error' });
  const list = h('div', { id: 'diff-list' });
  const body = h('div', { id: 'diff-body', hidden: true },
    h('p', { class: 'legend muted' }, 'Lines marked ', h('span', { class: 'mono' }, '-'),
      ' are in the cluster (live) only; lines marked ', h('span', { class: 'mono' }, '+'),
      ' are in Git (desired) only.'),
    status, errBox, list);
  const panel = h('section', { class: 'panel', id: 'diff-panel', 'aria-labelledby': 'h-diff' },
    h('div', { class: 'row panel-head' }, h('h2', { id: 'h-diff' }, 'Diff'), toggle), body);

  let open = false;
  let disposed = false;
  let loaded = null;      // the application state the shown diff was computed for
  let wanted = null;      // the latest application state seen
  let inflight = null;
  let again = false;
  const expanded = new Set();   // objects whose diff is unfolded, kept across reloads
  const manifests = new Map();  // object key -> the manifests box shown for it

  toggle.addEventListener('click', () => {
    open = !open;
    toggle.setAttribute('aria-expanded', String(open));
    toggle.textContent = open ? 'Hide diff' : 'Show diff';
    body.hidden = !open;
    if (open) load();
  });

  /** The part of the application whose change can change the diff. */
  function stateKey(app) {
    const st = (app && app.status) || {};
    return JSON.stringify([st.sync || null, st.resources || null, app && app.spec && app.spec.source]);
  }

  async function load() {
    if (inflight) { again = true; return; }
    const key = wanted;
    status.textContent = list.childElementCount ? 'Refreshing…' : 'Loading…';
    inflight = api('GET', `${base}/diff`).then((d) => ({ data: d }), (e) => ({ error: e }));
    const answer = await inflight;
    inflight = null;
    if (disposed) return;
    loaded = key;
    if (answer.error) {
      const e = answer.error;
      status.textContent = '';
      errBox.textContent = e.status === 404 || e.status === 405
        ? 'This server does not provide a diff.'
        : `Diff unavailable: ${e.message}`;
      list.dataset.renderKey = '';
      list.replaceChildren();
    } else {
      errBox.textContent = '';
      render(answer.data || {});
    }
    if (again) { again = false; if (open) load(); }
  }

  function render(data) {
    const items = Array.isArray(data.items) ? data.items : [];
    const rev = data.revision ? ` at revision ${shortRev(data.revision)}` : '';
    status.textContent = items.length
      ? `${items.length} object${items.length === 1 ? '' : 's'} differ${items.length === 1 ? 's' : ''} from Git${rev}.`
      : `No differences between Git and the cluster${rev}.`;
    rerender(list, JSON.stringify(items), () => {
      const present = new Set(items.map(objectKey));
      for (const k of [...manifests.keys()]) if (!present.has(k)) manifests.delete(k);
      list.replaceChildren(items.length
        ? h('ul', { class: 'plain diff-items' }, items.map(diffItem))
        : h('p', { class: 'muted', id: 'diff-empty' }, 'Every object is in sync.'));
    });
  }

  function diffItem(o) {
    const key = objectKey(o);
    const where = o.namespace ? `${o.namespace}/${o.name}` : o.name;
    const text = typeof o.unified === 'string' ? o.unified : '';
    const pre = h('pre', { class: 'diff mono', tabindex: '0', 'aria-label': `Diff of ${o.kind} ${where}` },
      text.split('\n').filter((line, i, all) => line || i < all.length - 1).map(diffLine));
    const details = h('details', { 'data-object': key, open: expanded.has(key) },
      h('summary', {},
        h('span', { class: 'mono diff-kind' }, o.kind || '?'), ' ',
        h('span', { class: 'mono diff-name' }, where), ' ',
        badge('sync', o.status),
        o.hook ? h('span', { class: 'badge st-None' }, 'hook') : null),
      text ? pre : h('p', { class: 'muted' }, 'No textual difference (the object differs only in fields Capstan ignores).'));
    details.addEventListener('toggle', () => {
      if (details.open) expanded.add(key); else expanded.delete(key);
    });
    const show = h('button', {
      type: 'button', class: 'manifests-button', 'data-focus-key': `manifests-${key}`,
      'aria-label': `Show the live and desired manifests of ${o.kind} ${where}`,
    }, 'Live and desired manifests');
    const box = manifests.get(key) || h('div', { class: 'manifests' });
    manifests.set(key, box);
    show.addEventListener('click', () => loadManifests(o, box));
    details.append(h('div', { class: 'row' }, show), box);
    return h('li', {}, details);
  }

  function diffLine(line) {
    // The +/- stays in the text, so the colour is never the only cue.
    let cls = 'ctx';
    if (line.startsWith('+++') || line.startsWith('---')) cls = 'hdr';
    else if (line.startsWith('@@')) cls = 'hunk';
    else if (line.startsWith('+')) cls = 'add';
    else if (line.startsWith('-')) cls = 'del';
    return h('span', { class: cls }, `${line}\n`);
  }

  async function loadManifests(o, box) {
    const q = new URLSearchParams({
      group: o.group || '', kind: o.kind || '', namespace: o.namespace || '', name: o.name || '',
    });
    box.replaceChildren(h('p', { class: 'muted' }, 'Loading manifests…'));
    try {
      const m = await api('GET', `${base}/manifests?${q}`);
      box.replaceChildren(manifestPair(m && m.live, m && m.desired, m && m.desiredError));
    } catch (e) {
      box.replaceChildren(h('p', { class: 'error' }, `Manifests unavailable: ${e.message}`));
    }
  }

  return {
    panel,
    /** The application was (re)loaded: reload an open diff when its sync state changed. */
    appChanged(app) {
      wanted = stateKey(app);
      if (open && wanted !== loaded) load();
    },
    dispose() { disposed = true; },
  };
}

/** The live and desired manifests side by side (either may be absent; `desiredError` says why
 *  Git could not be rendered). */
function manifestPair(live, desired, desiredError) {
  const side = (title, obj, absent, error) => h('div', { class: 'manifest' },
    h('h3', {}, title),
    obj !== null && obj !== undefined
      ? h('pre', { class: 'mono', tabindex: '0', 'aria-label': title }, JSON.stringify(obj, null, 2))
      : error
        ? h('p', { class: 'error', role: 'status' }, `Git cannot be rendered: ${error}`)
        : h('p', { class: 'muted' }, absent));
  return h('div', { class: 'grid2 manifest-pair' },
    side('Live (cluster)', live, 'Not in the cluster.'),
    side('Desired (Git)', desired, 'No desired manifest: Git does not have this object.', desiredError));
}

// ---------------------------------------------------------------------------------------------
// The resource tree as an SVG graph: application → objects → what they own (ReplicaSets,
// Pods), one column per depth.

const NODE_W = 210;
const NODE_H = 46;
const COL_GAP = 70;
const ROW_GAP = 14;

/** Nodes of the resource-tree answer as {key, kind, name, namespace, health, sync, parents}. */
function treeNodes(app, tree) {
  const out = [];
  const keyOf = (n) => n.uid || `${n.group || ''}/${n.kind}/${n.namespace || ''}/${n.name}`;
  const walk = (n, parentKey) => {
    const health = typeof n.health === 'string' ? n.health : n.health && n.health.status;
    const node = {
      key: keyOf(n), kind: n.kind || '?', name: n.name || '?', namespace: n.namespace || '',
      health: health || (n.kind === 'Pod' || n.kind === 'ReplicaSet' ? 'Unknown' : ''),
      sync: n.sync || n.status || n.syncStatus || '',
      parents: [],
    };
    const refs = n.parentRefs || n.parents || n.owners || [];
    for (const p of refs) {
      node.parents.push(typeof p === 'string' ? p : p.uid || `${p.group || ''}/${p.kind}/${p.namespace || ''}/${p.name}`);
    }
    if (parentKey) node.parents.push(parentKey);
    out.push(node);
    for (const c of n.children || []) walk(c, node.key);
  };
  const list = tree ? itemsOf(tree, 'nodes') : [];
  if (list.length) list.forEach((n) => walk(n, null));
  else for (const r of (app.status && app.status.resources) || []) walk(r, null);
  // A node whose parent is not in the answer hangs off the application.
  const keys = new Set(out.map((n) => n.key));
  for (const n of out) {
    n.parents = n.parents.filter((p) => keys.has(p));
  }
  return out;
}

function drawTree(app, tree) {
  const sum = summaryOf(app);
  const nodes = treeNodes(app, tree);
  const root = { key: '__app__', kind: 'Application', name: sum.name, namespace: sum.namespace, health: sum.health, sync: sum.sync, parents: [] };
  for (const n of nodes) if (!n.parents.length) n.parents.push(root.key);
  const all = [root, ...nodes];
  const byKey = new Map(all.map((n) => [n.key, n]));
  // Depth = longest chain to the root (cycles cut by the visited set).
  const depthOf = (n, seen = new Set()) => {
    if (n === root) return 0;
    if (seen.has(n.key)) return 1;
    seen.add(n.key);
    return 1 + Math.max(...n.parents.map((p) => depthOf(byKey.get(p), seen)));
  };
  const columns = [];
  for (const n of all) {
    n.depth = depthOf(n);
    (columns[n.depth] ||= []).push(n);
  }
  // Order each column by its first parent's row so edges cross as little as possible.
  columns.forEach((col, d) => {
    if (d > 0) col.sort((a, b) => (byKey.get(a.parents[0]).row - byKey.get(b.parents[0]).row) || a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
    col.forEach((n, i) => { n.row = i; });
  });
  const rows = Math.max(...columns.map((c) => c.length));
  const width = columns.length * (NODE_W + COL_GAP) + 20;
  const height = rows * (NODE_H + ROW_GAP) + 20;
  for (const n of all) {
    n.x = 10 + n.depth * (NODE_W + COL_GAP);
    n.y = 10 + n.row * (NODE_H + ROW_GAP);
  }
  const svg = s('svg', {
    class: 'tree', id: 'resource-tree', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'group', 'aria-label': `Resource tree of ${sum.name}: ${nodes.length} objects`,
  });
  const edges = s('g', { 'aria-hidden': 'true' });
  for (const n of all) {
    for (const p of n.parents) {
      const from = byKey.get(p);
      const x1 = from.x + NODE_W; const y1 = from.y + NODE_H / 2;
      const x2 = n.x; const y2 = n.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      edges.append(s('path', { class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
    }
  }
  svg.append(edges);
  for (const n of all) {
    const health = n.health || 'None';
    const label = `${n.kind} ${n.name}${n.health ? `: ${n.health}` : ''}${n.sync === 'OutOfSync' ? ', out of sync' : ''}`;
    svg.append(s('g', {
      class: `tree-node h-${cssToken(health)}${n.sync === 'OutOfSync' ? ' oos' : ''}`,
      transform: `translate(${n.x},${n.y})`, role: 'img', 'aria-label': label,
      'data-kind': n.kind, 'data-name': n.name, 'data-health': n.health || '',
    },
    s('title', {}, label),
    s('rect', { class: 'node', width: NODE_W, height: NODE_H, rx: 6 }),
    s('text', { class: 'hicon', x: 10, y: 29, 'aria-hidden': 'true' }, HEALTH_ICONS[n.health] || '·'),
    s('text', { class: 'kind', x: 30, y: 18 }, n.kind),
    s('text', { class: 'name', x: 30, y: 35 }, truncate(n.name, 24))));
  }
  return svg;
}

function truncate(t, n) { return t.length > n ? `${t.slice(0, n - 1)}…` : t; }

// ---------------------------------------------------------------------------------------------
// Confirm dialog (native <dialog>: focus trapped, Escape cancels)

function confirmDialog(title, text, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

boot();

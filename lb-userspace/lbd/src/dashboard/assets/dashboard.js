// lbd's dashboard (docs/dashboard.md). Plain script, no build step, no outside resources: it
// reads `GET /v1/events` (one snapshot a second) with the operator's bearer token and draws
// tables and small charts of the last minutes, kept here in the tab. Actions call the same
// endpoints as lbctl, so lbd checks the token's scope and audits them. Every value from the
// API goes into the page as text (textContent), never as markup.
'use strict';

(() => {
  const TOKEN_KEY = 'lbd.token';
  const WINDOW_MS = 5 * 60 * 1000;
  const RETRY_MS = 2000;
  const MAX_WEIGHT = 1000000;
  const { toast, fmt } = LbUi;

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let stream = null;
  let retryTimer = null;
  let prev = null;
  // Time series by key: [{t, v}], trimmed to the window.
  const series = new Map();
  // Table rows by key, updated in place so that buttons survive the next snapshot.
  const rows = {
    vrrp: new Map(), bgpSessions: new Map(), bgpPrefixes: new Map(),
    vips: new Map(), backends: new Map(), reasons: new Map(),
  };

  function auth(extra) {
    return Object.assign({ Authorization: 'Bearer ' + token }, extra || {});
  }

  // ---- connection -------------------------------------------------------------------

  function showLogin(why) {
    $('main').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = why || '';
    setLive(false, 'no token');
    $('token').focus();
  }

  function forget() {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) stream.abort();
    stream = null;
    clearTimeout(retryTimer);
  }

  function setLive(on, why) {
    const b = $('live');
    b.textContent = on ? 'live' : (why || 'offline');
    b.className = 'badge ' + (on ? 'on' : 'off');
  }

  function retry(why) {
    setLive(false, 'reconnecting: ' + why);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, RETRY_MS);
  }

  // An EventSource cannot send the token: read the event stream with fetch.
  async function connect() {
    if (!token) {
      showLogin('');
      return;
    }
    $('login').hidden = true;
    $('main').hidden = false;
    $('logout').hidden = false;
    const ctl = new AbortController();
    stream = ctl;
    let resp;
    try {
      resp = await fetch('/v1/events', {
        headers: auth({ Accept: 'text/event-stream' }),
        signal: ctl.signal,
        cache: 'no-store',
      });
    } catch (e) {
      if (!ctl.signal.aborted) retry(String(e.message || e));
      return;
    }
    if (resp.status === 401 || resp.status === 403) {
      const body = await resp.json().catch(() => ({}));
      forget();
      showLogin('lbd refused the token: ' + (body.error || 'HTTP ' + resp.status));
      return;
    }
    if (!resp.ok || !resp.body) {
      retry('HTTP ' + resp.status);
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          onEvent(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    if (!ctl.signal.aborted) retry('the stream ended');
  }

  function onEvent(block) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length === 0) return; // a keep-alive comment
    let body;
    try {
      body = JSON.parse(data.join('\n'));
    } catch (e) {
      return;
    }
    if (name === 'snapshot') {
      setLive(true);
      render(body);
    } else if (name === 'error') {
      setLive(false, 'lbd: ' + body.error);
    }
  }

  // ---- drawing helpers --------------------------------------------------------------

  function cell(tr, cls, num) {
    const td = document.createElement('td');
    td.className = cls + (num ? ' num' : '');
    tr.appendChild(td);
    return td;
  }

  function text(td, value, cls) {
    const s = String(value);
    if (td.textContent !== s) td.textContent = s;
    if (cls !== undefined) td.className = cls;
  }

  function sparkCell(tr) {
    return LbUi.spark(cell(tr, 'chart'));
  }

  function record(key, t, v) {
    return LbUi.record(series, key, t, v, WINDOW_MS);
  }

  function drawSpark(svg, points, now, unit) {
    LbUi.draw(svg, points, now, WINDOW_MS, unit);
  }


  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return s + ' s ago';
    return Math.round(s / 60) + ' min ago';
  }

  // Rate of a counter between the previous snapshot and this one (counters restart at 0
  // when the data plane is reloaded: no negative rates).
  function rate(cur, old, dt) {
    if (old === undefined || dt <= 0) return null;
    return Math.max(0, cur - old) / dt;
  }

  // Adds rows for new keys, drops rows of keys gone, keeps the others in place.
  function sync(table, map, keys, make) {
    const tbody = $(table).tBodies[0];
    for (const [k, r] of map) {
      if (!keys.has(k)) {
        r.tr.remove();
        map.delete(k);
      }
    }
    for (const k of keys) {
      if (!map.has(k)) {
        const tr = document.createElement('tr');
        const r = make(tr, k);
        r.tr = tr;
        map.set(k, r);
        tbody.appendChild(tr);
      }
    }
  }

  // ---- the snapshot -----------------------------------------------------------------

  function render(snap) {
    const now = snap.at_unix_ms;
    const dt = prev ? (now - prev.at_unix_ms) / 1000 : 0;
    renderStatus(snap);
    renderVrrp(snap.vrrp);
    renderBgp(snap.bgp);
    renderVips(snap, prev, dt, now);
    renderBackends(snap, prev, dt, now);
    renderReasons(snap, prev, dt, now);
    prev = snap;
  }

  function renderStatus(snap) {
    const s = snap.status;
    const facts = [
      ['version', s.version],
      ['uptime', Math.floor(s.uptime_s / 3600) + ' h ' + Math.floor((s.uptime_s % 3600) / 60) + ' min'],
      ['XDP on', s.interfaces.map((i) => i.iface + ' (' + i.mode + (i.adopted ? ', adopted' : '') + ')').join(', ') || 'no interface'],
      ['pins', s.pinned ? s.pin_dir : 'not pinned'],
      ['VIPs', s.vips],
      ['backends', s.healthy_backends + ' healthy of ' + s.backends],
    ];
    const dl = $('status');
    if (dl.children.length !== facts.length * 2) {
      dl.replaceChildren();
      for (const [k] of facts) {
        const dt = document.createElement('dt');
        dt.textContent = k;
        dl.append(dt, document.createElement('dd'));
      }
    }
    facts.forEach(([, v], i) => text(dl.children[i * 2 + 1], v));
    $('node').textContent = s.interfaces.map((i) => i.iface).join(', ');
  }

  function renderVrrp(overview) {
    const instances = overview ? overview.instances : [];
    $('vrrp-none').hidden = !!overview;
    $('vrrp').hidden = !overview;
    const keys = new Set(instances.map((i) => i.family));
    sync('vrrp', rows.vrrp, keys, (tr, k) => {
      tr.dataset.family = k;
      return {
        family: cell(tr, 'family'), iface: cell(tr, 'iface'), vrid: cell(tr, 'vrid', true),
        state: cell(tr, 'state'), prio: cell(tr, 'priority', true), master: cell(tr, 'master'),
        addrs: cell(tr, 'addresses'), fault: cell(tr, 'fault'),
      };
    });
    for (const i of instances) {
      const r = rows.vrrp.get(i.family);
      const state = String(i.state).toLowerCase();
      text(r.family, i.family);
      text(r.iface, i.interface);
      text(r.vrid, i.vrid);
      text(r.state, i.state, 'state ' + state);
      text(r.prio, i.priority);
      text(r.master, i.master || '–');
      text(r.addrs, i.addresses.join(' '));
      text(r.fault, i.fault ? (i.address_fault || 'tracking reports a fault') : 'no', i.fault ? 'fault' : 'muted');
    }
  }

  function renderBgp(bgp) {
    $('bgp-none').hidden = !!bgp;
    $('bgp-speaker').hidden = !bgp;
    $('bgp-sessions').hidden = !bgp;
    $('bgp-prefixes').hidden = !bgp;
    const sessions = bgp ? bgp.sessions : [];
    const prefixes = bgp ? bgp.prefixes : [];
    if (bgp) {
      const sp = bgp.speaker;
      text($('bgp-speaker'), 'AS ' + bgp.local_as + ', router id ' + bgp.router_id + ', ' + sp.kind +
        (sp.running ? ' running' : ' NOT running') + (sp.error ? ': ' + sp.error : '') +
        (bgp.stopping ? ' (stopping: routes withdrawn)' : ''));
    }
    sync('bgp-sessions', rows.bgpSessions, new Set(sessions.map((x) => x.name)), (tr, k) => {
      tr.dataset.session = k;
      return {
        name: cell(tr, 'name'), peer: cell(tr, 'peer'), as: cell(tr, 'peer-as', true),
        state: cell(tr, 'state'), since: cell(tr, 'since'), sent: cell(tr, 'exported', true),
        bfd: cell(tr, 'bfd'), err: cell(tr, 'last-error'),
      };
    });
    for (const x of sessions) {
      const r = rows.bgpSessions.get(x.name);
      text(r.name, x.name);
      text(r.peer, x.peer);
      text(r.as, x.peer_as);
      text(r.state, x.state, 'state ' + (x.state === 'established' ? 'master' : 'fault'));
      text(r.since, x.since || '–');
      text(r.sent, x.exported);
      text(r.bfd, x.bfd_up === null || x.bfd_up === undefined ? '–' : x.bfd_up ? 'up' : 'down');
      text(r.err, x.last_error || '');
    }
    sync('bgp-prefixes', rows.bgpPrefixes, new Set(prefixes.map((x) => x.prefix)), (tr, k) => {
      tr.dataset.prefix = k;
      return {
        prefix: cell(tr, 'prefix'), vips: cell(tr, 'vips'), on: cell(tr, 'announced'),
        why: cell(tr, 'reason'), n: cell(tr, 'announcements', true),
      };
    });
    for (const x of prefixes) {
      const r = rows.bgpPrefixes.get(x.prefix);
      text(r.prefix, x.prefix);
      text(r.vips, x.vips.join(', '));
      text(r.on, x.announced ? 'yes' : 'withdrawn', x.announced ? 'active' : 'fault');
      text(r.why, x.reason || '');
      text(r.n, x.announcements);
    }
  }

  function vipStats(stats, name) {
    return stats ? stats.vips.find((v) => v.name === name) : undefined;
  }

  function renderVips(snap, old, dt, now) {
    const keys = new Set(snap.vips.map((v) => v.name));
    sync('vips', rows.vips, keys, (tr, k) => {
      tr.dataset.vip = k;
      return {
        name: cell(tr, 'name'), addr: cell(tr, 'address'), algo: cell(tr, 'algorithm'),
        mode: cell(tr, 'mode'), table: cell(tr, 'table', true), gen: cell(tr, 'generation', true),
        backends: cell(tr, 'backends'), pps: cell(tr, 'pps', true), cps: cell(tr, 'cps', true),
        spark: sparkCell(tr),
      };
    });
    for (const v of snap.vips) {
      const r = rows.vips.get(v.name);
      const cur = vipStats(snap.stats, v.name);
      const was = old ? vipStats(old.stats, v.name) : undefined;
      const pps = cur && was ? rate(cur.packets, was.packets, dt) : null;
      const cps = cur && was ? rate(cur.new_conns, was.new_conns, dt) : null;
      const healthy = v.backends.filter((b) => b.health === 'healthy').length;
      const addr = v.address.includes(':') ? '[' + v.address + ']' : v.address;
      text(r.name, v.name);
      text(r.addr, addr + ':' + v.port + '/' + v.protocol);
      text(r.algo, v.algorithm);
      text(r.mode, v.mode);
      text(r.table, v.table_size);
      text(r.gen, snap.table_generations[v.name] ?? '–');
      text(r.backends, healthy + ' healthy of ' + v.backends.length);
      text(r.pps, fmt(pps));
      text(r.cps, fmt(cps));
      if (cps !== null) drawSpark(r.spark, record('vip|' + v.name, now, cps), now, 'new conns/s');
    }
  }

  function renderBackends(snap, old, dt, now) {
    const keys = new Set();
    for (const v of snap.vips) for (const b of v.backends) keys.add(v.name + '|' + b.address);
    sync('backends', rows.backends, keys, (tr, k) => {
      const [vip, address] = [k.slice(0, k.indexOf('|')), k.slice(k.indexOf('|') + 1)];
      tr.dataset.vip = vip;
      tr.dataset.address = address;
      const r = {
        vip: cell(tr, 'vip'), addr: cell(tr, 'address'), health: cell(tr, 'health'),
        check: cell(tr, 'last-check'), admin: cell(tr, 'admin'), weight: cell(tr, 'weight', true),
        source: cell(tr, 'source'), pps: cell(tr, 'pps', true), bps: cell(tr, 'bps', true),
        cps: cell(tr, 'cps', true), active: cell(tr, 'active-conns', true), spark: sparkCell(tr),
      };
      const acts = cell(tr, 'actions');
      r.drain = document.createElement('button');
      r.drain.type = 'button';
      r.drain.className = 'drain';
      r.drain.addEventListener('click', () => drainClicked(vip, address, r.drain.dataset.action));
      r.weightBtn = document.createElement('button');
      r.weightBtn.type = 'button';
      r.weightBtn.className = 'set-weight';
      r.weightBtn.textContent = 'Weight…';
      r.weightBtn.addEventListener('click', () => weightClicked(vip, address, r.weightBtn.dataset.weight));
      acts.append(r.drain, ' ', r.weightBtn);
      return r;
    });
    for (const v of snap.vips) {
      const cur = vipStats(snap.stats, v.name);
      const was = old ? vipStats(old.stats, v.name) : undefined;
      for (const b of v.backends) {
        const k = v.name + '|' + b.address;
        const r = rows.backends.get(k);
        const c = cur ? cur.backends.find((x) => x.address === b.address) : undefined;
        const w = was ? was.backends.find((x) => x.address === b.address) : undefined;
        const pps = c && w ? rate(c.packets, w.packets, dt) : null;
        text(r.vip, v.name);
        text(r.addr, b.address);
        text(r.health, b.health, 'health ' + b.health);
        if (b.last_check) {
          const when = ago(snap.at_unix_ms - b.last_check.at_unix_ms);
          text(r.check, b.last_check.ok
            ? 'ok in ' + fmt(b.last_check.latency_ms) + ' ms, ' + when
            : 'failed: ' + (b.last_check.error || 'no answer') + ', ' + when);
        } else {
          text(r.check, 'not yet');
        }
        const drained = b.admin === 'draining';
        text(r.admin, drained ? 'draining (' + (b.drained_by || '?') + ')' : b.admin, 'admin ' + b.admin);
        text(r.weight, b.effective_weight + ' / ' + b.weight + ' / ' + (b.declared_weight ?? '–'));
        text(r.source, b.source);
        text(r.pps, fmt(pps));
        text(r.bps, c && w ? fmt(rate(c.bytes, w.bytes, dt)) : '–');
        text(r.cps, c && w ? fmt(rate(c.new_conns, w.new_conns, dt)) : '–');
        text(r.active, c ? c.active_conns : '–');
        r.drain.dataset.action = drained ? 'undrain' : 'drain';
        text(r.drain, drained ? 'Undrain' : 'Drain');
        r.weightBtn.dataset.weight = String(b.weight);
        if (pps !== null) drawSpark(r.spark, record('be|' + k, now, pps), now, 'packets/s');
      }
    }
  }

  function renderReasons(snap, old, dt, now) {
    const reasons = snap.stats.reasons || {};
    sync('reasons', rows.reasons, new Set(Object.keys(reasons)), (tr, k) => {
      tr.dataset.reason = k;
      return { name: cell(tr, 'reason'), total: cell(tr, 'total', true), rate: cell(tr, 'rate', true), spark: sparkCell(tr) };
    });
    for (const [k, n] of Object.entries(reasons)) {
      const r = rows.reasons.get(k);
      const per = old ? rate(n, (old.stats.reasons || {})[k], dt) : null;
      text(r.name, k);
      text(r.total, fmt(n));
      text(r.rate, fmt(per));
      if (per !== null) drawSpark(r.spark, record('reason|' + k, now, per), now, 'packets/s');
    }
  }

  // ---- actions: confirmed, then the API lbctl uses ----------------------------------

  let pending = null;

  function ask(title, message, weight) {
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = message;
    $('confirm-error').textContent = '';
    $('weight-label').hidden = weight === undefined;
    if (weight !== undefined) $('weight-input').value = weight;
    if (!$('confirm').open) $('confirm').showModal();
    return new Promise((resolve) => {
      pending = resolve;
    });
  }

  function answer(ok) {
    const resolve = pending;
    pending = null;
    if (!ok) $('confirm').close();
    if (resolve) resolve(ok);
  }

  async function drainClicked(vip, address, action) {
    const what = action === 'undrain'
      ? 'Undrain ' + address + ' of VIP ' + vip + '? It takes new connections again.'
      : 'Drain ' + address + ' of VIP ' + vip + '? It takes no new connections; existing ones go on.';
    if (!(await ask(action === 'undrain' ? 'Undrain backend' : 'Drain backend', what + ' (This lbd only.)'))) return;
    $('confirm').close();
    await call(vip, address, action, undefined);
  }

  async function weightClicked(vip, address, current) {
    for (;;) {
      if (!(await ask('Set weight', 'New configured weight of ' + address + ' of VIP ' + vip + ' (this lbd only).', current))) return;
      const raw = $('weight-input').value.trim();
      const w = Number(raw);
      if (/^\d+$/.test(raw) && w <= MAX_WEIGHT) {
        $('confirm').close();
        await call(vip, address, 'weight', w);
        return;
      }
      $('confirm-error').textContent = 'The weight is a whole number 0-' + MAX_WEIGHT + '.';
      current = raw;
      // Keep the dialog open for another try.
    }
  }

  async function call(vip, address, action, weight) {
    const path = '/v1/vips/' + encodeURIComponent(vip) + '/backends/' + address + '/' + action;
    const init = { method: 'POST', headers: auth() };
    if (weight !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify({ weight });
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      toast(action + ' ' + address + ': ' + e.message, true);
      return;
    }
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) {
      const done = action === 'weight' ? 'weight ' + body.weight : body.admin;
      toast(address + ' of ' + vip + ': ' + done);
    } else {
      toast(action + ' ' + address + ' refused: ' + (body.error || 'HTTP ' + resp.status), true);
    }
  }


  // ---- start ------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      token = $('token').value.trim();
      $('token').value = '';
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      connect();
    });
    $('logout').addEventListener('click', () => {
      forget();
      showLogin('');
    });
    $('confirm-ok').addEventListener('click', () => answer(true));
    $('confirm-cancel').addEventListener('click', () => answer(false));
    $('confirm').addEventListener('cancel', () => answer(false));
    connect();
  });
})();

// The app's queues dashboard (docs/dashboard.md). Plain script, no build step, nothing from
// elsewhere. It polls `GET /queues` every second (sizes, and the jobs this instance finished:
// two answers make jobs per second, kept here for a 5-minute chart), and browses and replays
// dead letters through `/dlq/{queue}` with the admin token. Every value goes into the page as
// text (textContent), never as markup.
'use strict';

(() => {
  const TOKEN_KEY = 'app.admin-token';
  const PERIOD_MS = 1000;
  const WINDOW_MS = 5 * 60 * 1000;
  const PAGE = 100;
  const { toast, fmt, spark } = LbUi;
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let prev = null;
  let chosen = null;
  const series = new Map();
  const rows = new Map();

  function text(el, value, cls) {
    const s = String(value);
    if (el.textContent !== s) el.textContent = s;
    if (cls !== undefined) el.className = cls;
  }

  function cell(tr, cls, num) {
    const td = document.createElement('td');
    td.className = cls + (num ? ' num' : '');
    tr.appendChild(td);
    return td;
  }


  function finished(q) {
    return Object.values(q.finished || {}).reduce((a, b) => a + b, 0);
  }

  // ---- the queues table -------------------------------------------------------------

  async function poll() {
    try {
      const resp = await fetch('/queues', { cache: 'no-store' });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        live(false, body.error || 'HTTP ' + resp.status);
      } else {
        live(true);
        render(body);
      }
    } catch (e) {
      live(false, String(e.message || e));
    }
    setTimeout(poll, PERIOD_MS);
  }

  function live(on, why) {
    const b = $('live');
    b.textContent = on ? 'live' : why || 'offline';
    b.className = 'badge ' + (on ? 'on' : 'off');
  }



  function render(o) {
    $('backend').textContent = o.backend;
    const now = o.at_unix_ms;
    const dt = prev ? (now - prev.at_unix_ms) / 1000 : 0;
    const tbody = $('queues').tBodies[0];
    for (const q of o.queues) {
      let r = rows.get(q.queue);
      if (!r) {
        const tr = document.createElement('tr');
        tr.dataset.queue = q.queue;
        r = {
          name: cell(tr, 'queue'), depth: cell(tr, 'depth', true), waiting: cell(tr, 'waiting', true),
          flight: cell(tr, 'in-flight', true), retries: cell(tr, 'retries', true),
          dead: cell(tr, 'dead', true), rate: cell(tr, 'jobs-rate', true),
        };
        r.spark = spark(cell(tr, 'chart'));
        const browse = document.createElement('button');
        browse.type = 'button';
        browse.className = 'browse';
        browse.textContent = 'Dead letters';
        browse.addEventListener('click', () => choose(q.queue));
        cell(tr, 'actions').appendChild(browse);
        tbody.appendChild(tr);
        rows.set(q.queue, r);
      }
      text(r.name, q.queue);
      text(r.depth, q.depth);
      text(r.waiting, q.waiting);
      text(r.flight, q.in_flight);
      text(r.retries, q.retries_scheduled);
      text(r.dead, q.dead_letters, 'dead num' + (q.dead_letters > 0 ? ' has-dead' : ''));
      const old = prev ? prev.queues.find((x) => x.queue === q.queue) : undefined;
      if (old && dt > 0) {
        const rate = Math.max(0, finished(q) - finished(old)) / dt;
        text(r.rate, fmt(rate));
        LbUi.draw(r.spark, LbUi.record(series, q.queue, now, rate, WINDOW_MS), now, WINDOW_MS, 'jobs/s');
      }
    }
    prev = o;
  }

  // ---- dead letters -----------------------------------------------------------------

  function choose(queue) {
    chosen = queue;
    $('dead-queue').textContent = 'of ' + queue;
    $('dead-hint').hidden = true;
    browse();
  }

  function needToken(why) {
    $('token-box').hidden = false;
    $('dead-list').hidden = true;
    $('dead-error').textContent = why || '';
  }

  async function browse() {
    if (!chosen) return;
    if (!token) {
      needToken('');
      return;
    }
    $('token-box').hidden = true;
    const resp = await fetch('/dlq/' + encodeURIComponent(chosen) + '?limit=' + PAGE, {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
    }).catch((e) => ({ ok: false, status: 0, json: async () => ({ error: e.message }) }));
    const body = await resp.json().catch(() => ({}));
    if (resp.status === 401 || resp.status === 403) {
      forget();
      needToken('The app refused the token: ' + (body.error || 'HTTP ' + resp.status));
      return;
    }
    if (!resp.ok) {
      $('dead-error').textContent = body.error || 'HTTP ' + resp.status;
      return;
    }
    $('dead-error').textContent = '';
    $('dead-list').hidden = false;
    const tbody = $('letters').tBodies[0];
    tbody.replaceChildren();
    for (const d of body.items) {
      const tr = document.createElement('tr');
      tr.dataset.entry = d.entry;
      tr.dataset.job = d.job_id;
      text(cell(tr, 'entry'), d.entry);
      text(cell(tr, 'job'), d.job_id);
      text(cell(tr, 'kind'), d.kind);
      text(cell(tr, 'attempts', true), d.attempts);
      text(cell(tr, 'error-text'), d.error);
      text(cell(tr, 'dead-at'), new Date(d.dead_ms).toISOString());
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'replay';
      b.textContent = 'Replay';
      b.addEventListener('click', () => replay([d.entry], 'job ' + d.job_id + ' (' + d.kind + ')'));
      cell(tr, 'actions').appendChild(b);
      tbody.appendChild(tr);
    }
    $('dead-empty').hidden = body.items.length > 0;
    const more = body.next_after ? ' (the first ' + PAGE + ' shown)' : '';
    $('replay-all').textContent = 'Replay all' + more;
  }

  let pending = null;
  function ask(title, message) {
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = message;
    $('confirm').showModal();
    return new Promise((resolve) => {
      pending = resolve;
    });
  }
  function answer(ok) {
    $('confirm').close();
    const r = pending;
    pending = null;
    if (r) r(ok);
  }

  // `entries` null: every dead letter of the queue.
  async function replay(entries, what) {
    const queue = chosen;
    const ok = await ask('Replay dead letters', 'Put ' + what + ' back on queue ' + queue +
      ' with a fresh attempt budget?');
    if (!ok) return;
    const init = { method: 'POST', headers: { Authorization: 'Bearer ' + token } };
    if (entries) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify({ entries });
    }
    let resp;
    try {
      resp = await fetch('/dlq/' + encodeURIComponent(queue) + '/replay', init);
    } catch (e) {
      toast('replay: ' + e.message, true);
      return;
    }
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) toast('replayed ' + body.replayed + ' on ' + queue + ': ' + body.jobs.join(', '));
    else toast('replay refused: ' + (body.error || 'HTTP ' + resp.status), true);
    browse();
  }

  function forget() {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }


  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      token = $('token').value.trim();
      $('token').value = '';
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      browse();
    });
    $('forget').addEventListener('click', () => {
      forget();
      needToken('');
    });
    $('replay-all').addEventListener('click', () => replay(null, 'every dead letter'));
    $('confirm-ok').addEventListener('click', () => answer(true));
    $('confirm-cancel').addEventListener('click', () => answer(false));
    $('confirm').addEventListener('cancel', () => answer(false));
    poll();
  });
})();

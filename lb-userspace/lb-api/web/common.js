// What lbd's dashboard and the app's queues page share (served by both at /ui/common.js,
// before the page's own script): the toast, the small SVG charts and number formatting.
'use strict';

window.LbUi = (() => {
  const SVG = 'http://www.w3.org/2000/svg';
  let toastTimer = null;

  // Shows `message` in the #toast element for 6 s (`error`: in red).
  function toast(message, error) {
    const t = document.getElementById('toast');
    t.textContent = message;
    t.className = error ? 'error' : '';
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      t.hidden = true;
    }, 6000);
  }

  // An empty 160x28 chart appended to `td`.
  function spark(td) {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 160 28');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.append(document.createElementNS(SVG, 'title'), document.createElementNS(SVG, 'polyline'));
    td.appendChild(svg);
    return svg;
  }

  // Draws `points` ([{t, v}]) ending at `now`; the x axis spans what the tab has seen, up to
  // `windowMs`, so that a fresh page fills it too.
  function draw(svg, points, now, windowMs, unit) {
    const max = Math.max(1, ...points.map((p) => p.v));
    const span = Math.max(1, Math.min(windowMs, points.length ? now - points[0].t : 0));
    svg.querySelector('polyline').setAttribute('points', points
      .map((p) => (160 - ((now - p.t) / span) * 160).toFixed(1) + ',' + (27 - (p.v / max) * 25).toFixed(1))
      .join(' '));
    const last = points.length ? points[points.length - 1].v : 0;
    svg.querySelector('title').textContent = 'now ' + fmt(last) + ' ' + unit + ', peak ' + fmt(max) +
      ' over the last ' + Math.ceil(span / 60000) + ' min';
  }

  // Appends {t, v} to the series `key` of `series` (a Map), dropping what is older than
  // `windowMs`; returns the series.
  function record(series, key, t, v, windowMs) {
    let s = series.get(key);
    if (!s) series.set(key, (s = []));
    s.push({ t, v });
    while (s.length && s[0].t < t - windowMs) s.shift();
    return s;
  }

  function fmt(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '–';
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
    return n.toFixed(1);
  }

  return { toast, spark, draw, record, fmt };
})();

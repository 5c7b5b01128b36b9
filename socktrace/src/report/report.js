// socktrace report: sorting, the details panel, the search box, and the timelines of the
// connections not drawn on load, drawn from the page's data exactly as page.rs draws the
// others (timeline_svg, sequence, call_text: keep them in step). Text from the capture is only
// ever set as textContent or an attribute value, never parsed as markup.
(function () {
  'use strict';
  var SVG = 'http://www.w3.org/2000/svg';
  var D = JSON.parse(document.getElementById('data').textContent);
  var S = D.strings;
  var W = 1000, LEFT = 86, RIGHT = 14, H = 120;
  var ROW_STATE = 20, ROW_KERNEL = 40, LANE_STEP = 10, ROW_CALLS = 80, ROW_AGES = 100, MIN_BAND = 0.25;
  var SEQUENCE_MAX = 40, MAX_FOUND = 50;
  var MU = '\u00b5';

  function trim(x, d) {
    var s = x.toFixed(d);
    if (s.indexOf('.') >= 0) s = s.replace(/0+$/, '').replace(/\.$/, '');
    return s;
  }
  function dur(ns) {
    if (ns === 0) return '0';
    if (ns < 1e3) return ns + ' ns';
    if (ns < 1e6) return trim(ns / 1e3, 1) + ' ' + MU + 's';
    if (ns < 1e9) return trim(ns / 1e6, 1) + ' ms';
    if (ns < 6e10) return trim(ns / 1e9, 2) + ' s';
    if (ns < 3.6e12) return Math.floor(ns / 6e10) + ' min ' + Math.floor((ns % 6e10) / 1e9) + ' s';
    return Math.floor(ns / 3.6e12) + ' h ' + Math.floor((ns % 3.6e12) / 6e10) + ' min';
  }
  function tickStep(span, ticks) {
    var raw = Math.max(1, Math.floor(span / Math.max(1, ticks)));
    var p = 1;
    while (p * 10 <= raw) p *= 10;
    var m = [1, 2, 5, 10];
    for (var i = 0; i < m.length; i++) if (m[i] * p >= raw) return m[i] * p;
    return 10 * p;
  }
  function n(x) {
    var s = x.toFixed(1);
    return s.slice(-2) === '.0' ? s.slice(0, -2) : s;
  }
  function plural(k) { return k === 1 ? '' : 's'; }
  function svg(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, s) { parent.appendChild(document.createTextNode(s)); return parent; }
  function html(tag, cls, s, parent) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (s !== undefined && s !== null) e.textContent = s;
    if (parent) parent.appendChild(e);
    return e;
  }
  function causeColor(c) { var v = D.causes[c]; return v ? v[0] : '#505050'; }
  function isRoutine(c) { var v = D.causes[c]; return v ? v[1] : false; }
  function stateColor(s) { return D.states[s] || '#eeeeee'; }

  function markShape(kind, x, y, parent) {
    function pts(p) { return p.map(function (q) { return n(x + q[0]) + ',' + n(y + q[1]); }).join(' '); }
    switch (kind) {
      case 'rst_in': return svg('polygon', { 'class': 'm rst_in', points: pts([[-5, -5], [5, -5], [0, 5]]) }, parent);
      case 'rst_out': return svg('polygon', { 'class': 'm rst_out', points: pts([[-5, 5], [5, 5], [0, -5]]) }, parent);
      case 'peer_rst': return svg('polygon', { 'class': 'm peer_rst', points: pts([[-5, 5], [5, 5], [0, -5]]) }, parent);
      case 'err': return svg('polygon', { 'class': 'm err', points: pts([[0, -5], [4, 0], [0, 5], [-4, 0]]) }, parent);
      case 'icmp': return svg('rect', { 'class': 'm icmp', x: n(x - 4), y: n(y - 4), width: 8, height: 8 }, parent);
      case 'attach': return svg('path', { 'class': 'm attach', d: 'M' + n(x) + ' ' + n(y + 6) + 'V' + n(y - 6) + 'h6v5h-6' }, parent);
      default: return svg('rect', { 'class': 'm drop', x: n(x - 3), y: n(y - 3), width: 6, height: 6 }, parent);
    }
  }

  // A call mark: [at, last, count, cause, errno, syscall, state, age, explain, line].
  function callText(m) {
    var cause = S[m[3]], errno = S[m[4]], syscall = S[m[5]], state = S[m[6]];
    var s = m[2] > 1
      ? m[2] + ' calls from +' + dur(m[0]) + ' to +' + dur(m[1]) + '; the first: ' + syscall + '() = ' + errno + ' (' + cause + '), in ' + state
      : '+' + dur(m[0]) + ': ' + syscall + '() = ' + errno + ' (' + cause + '), in ' + state;
    if (m[7] !== null) s += '; its cause ' + dur(m[7]) + ' before';
    return s + '\n' + S[m[8]] + '\n(capture line ' + m[9] + '; the explanation is the first of its cause on this connection)';
  }

  function drawTimeline(c) {
    var span = Math.max(1, c.s);
    function x(off) { return LEFT + off / span * (W - LEFT - RIGHT); }
    var root = svg('svg', { 'class': 'timeline', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': "the connection's timeline" });
    var step = tickStep(c.s, 6);
    for (var v = 0; v <= c.s; v += step) {
      svg('line', { 'class': 'grid', x1: n(x(v)), x2: n(x(v)), y1: 12, y2: H - 4 }, root);
      text(svg('text', { 'class': 'xlabel', x: n(x(v)), y: 9, 'text-anchor': x(v) > W - 40 ? 'end' : 'middle' }, root), '+' + dur(v));
    }
    text(svg('text', { 'class': 'row', x: 4, y: ROW_STATE + 4 }, root), 'state');
    text(svg('text', { 'class': 'row', x: 4, y: ROW_KERNEL + LANE_STEP + 4 }, root), 'kernel');
    text(svg('text', { 'class': 'row', x: 4, y: ROW_CALLS + 4 }, root), 'calls');
    if (!c.b.length) text(svg('text', { 'class': 'none', x: LEFT, y: ROW_STATE + 4 }, root), 'no state change recorded');
    c.b.forEach(function (b) {
      var x0 = x(b[0]), x1 = x(b[1]), st = S[b[2]];
      if (x1 - x0 < MIN_BAND) return;
      var r = svg('rect', { 'class': 'band tip', x: n(x0), y: ROW_STATE - 8, width: n(Math.max(x1 - x0, 0.5)), height: 16, fill: stateColor(st) }, root);
      text(svg('title', {}, r), st + ' from +' + dur(b[0]) + ' to +' + dur(b[1]));
      if (x1 - x0 > st.length * 6.2 + 6) text(svg('text', { 'class': 'state', x: n(x0 + 3), y: ROW_STATE + 4 }, root), st);
    });
    c.m.forEach(function (m) {
      if (m[0] !== 'drop') return;
      var r = svg('rect', { 'class': 'droprange tip', x: n(x(m[1]) - 1.5), y: ROW_KERNEL + m[4] * LANE_STEP - 3, width: n(Math.max(x(m[2]) - x(m[1]), 0) + 3), height: 6 }, root);
      text(svg('title', {}, r), '+' + dur(m[1]) + (m[2] > m[1] ? ' to +' + dur(m[2]) : '') + ': ' + S[m[3]]);
    });
    c.m.forEach(function (m) {
      if (m[0] === 'drop') return;
      var g = svg('g', { 'class': 'tip' }, root);
      text(svg('title', {}, g), '+' + dur(m[1]) + ': ' + S[m[3]]);
      markShape(m[0], x(m[1]), ROW_KERNEL + m[4] * LANE_STEP, g);
    });
    var few = c.c.length <= 12, bracketed = {};
    c.c.forEach(function (m) {
      var age = m[7], cause = S[m[3]];
      if (age === null || (!few && bracketed[cause])) return;
      bracketed[cause] = true;
      var xa = x(Math.max(0, m[0] - age)), xc = x(m[0]);
      var g = svg('g', { 'class': 'age tip' }, root);
      text(svg('title', {}, g), 'its cause ' + dur(age) + ' before the call (from the explanation)');
      svg('path', { d: 'M' + n(xc) + ' ' + (ROW_CALLS + 8) + 'V' + ROW_AGES + 'H' + n(xa) + 'V' + (ROW_KERNEL + 6) }, g);
      if (xc - xa > 44) text(svg('text', { x: n((xa + xc) / 2), y: ROW_AGES + 11, 'text-anchor': 'middle' }, g), dur(age));
    });
    c.c.forEach(function (m) {
      var r = 4 + Math.min(Math.log2(m[2]), 5), cause = S[m[3]];
      var g = svg('g', { 'class': 'call tip', 'data-cause': cause }, root);
      text(svg('title', {}, g), callText(m));
      svg('circle', { cx: n(x(m[0])), cy: ROW_CALLS, r: n(r), fill: causeColor(cause) }, g);
      if (m[2] > 1) text(svg('text', { 'class': 'count', x: n(x(m[0])), y: n(ROW_CALLS - r - 2), 'text-anchor': 'middle' }, g), String(m[2]));
    });
    return root;
  }

  function sequence(c) {
    var items = [];
    c.ch.forEach(function (t) { items.push([t[0], 0, S[t[1]] + ' \u2192 ' + S[t[2]]]); });
    c.m.forEach(function (m) { items.push([m[1], 1, S[m[3]]]); });
    c.c.forEach(function (m) {
      items.push([m[0], 2, S[m[5]] + '() = ' + S[m[4]] + ' \u2014 ' + S[m[3]] + (m[2] > 1 ? ' (\u00d7' + m[2] + ', to +' + dur(m[1]) + ')' : '')]);
    });
    items.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    var d = html('details', 'seq');
    html('summary', null, 'In order (' + items.length + ')', d);
    var ol = html('ol', null, null, d);
    items.slice(0, SEQUENCE_MAX).forEach(function (it) {
      var li = html('li', ['state', 'kernel', 'call'][it[1]], null, ol);
      html('span', 't', '+' + dur(it[0]), li);
      text(li, ' ' + it[2]);
    });
    if (items.length > SEQUENCE_MAX) html('p', 'muted', '\u2026 and ' + (items.length - SEQUENCE_MAX) + ' more.', d);
    return d;
  }

  // Positions come in fractions of the span (D.quantum of them): back to ns from the start.
  function decode(c) {
    if (c.decoded) return c;
    function t(q) { return Math.round(q * c.s / D.quantum); }
    c.b = c.b.map(function (b) { return [t(b[0]), t(b[1]), b[2]]; });
    c.ch = c.ch.map(function (x) { return [t(x[0]), x[1], x[2]]; });
    c.m = c.m.map(function (m) { return [m[0], t(m[1]), t(m[2]), m[3], m[4]]; });
    c.c = c.c.map(function (m) { return [t(m[0]), t(m[1])].concat(m.slice(2)); });
    c.decoded = true;
    return c;
  }

  function connection(id, c) {
    decode(c);
    var sec = html('section', 'conn');
    sec.id = 'c' + id;
    sec.setAttribute('data-id', id);
    var h3 = html('h3', null, null, sec);
    var who = html('span', 'who', 'pid ' + c.p + ' ', h3);
    html('q', 'comm', c.n, who);
    text(h3, ' ');
    html('span', 'ends', c.e, h3);
    var meta = html('p', 'meta', null, sec);
    text(meta, 'from ' + c.w + ' UTC, over ' + dur(c.s) + ' \u00b7 ' + c.f + ' failure' + plural(c.f) + (c.r > 0 ? ', ' + c.r + ' routine' : '') + ': ');
    c.bc.forEach(function (bc, i) {
      if (i > 0) text(meta, ', ');
      html('span', 'swatch', null, meta).style.background = causeColor(bc[0]);
      text(meta, bc[0] + ' ' + bc[1]);
    });
    if (c.rt > 0) text(meta, ' \u00b7 ' + c.rt + ' retransmission' + plural(c.rt) + ' (times not recorded)');
    if (c.fd > 0) text(meta, ' \u00b7 the ' + c.fd + ' earliest state changes and kernel facts are left out');
    if (c.k) text(meta, ' \u00b7 ' + c.k);
    if (c.o) text(meta, ' \u00b7 pod ' + c.o);
    sec.appendChild(drawTimeline(c));
    sec.appendChild(sequence(c));
    return sec;
  }

  // Sorting: a click on a header sorts by that column (numbers largest first), again reverses.
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var num = th.getAttribute('data-type') === 'num';
        var dir = th.classList.contains('sorted-desc') ? 1 : th.classList.contains('sorted-asc') ? -1 : (num ? -1 : 1);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        function key(r) {
          var t = r.cells[col].textContent.trim();
          if (!num) return t;
          var v = parseFloat(t);
          return isNaN(v) ? -1 : v;
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          return (x < y ? -1 : x > y ? 1 : 0) * dir;
        });
        rows.forEach(function (r) { body.appendChild(r); });
        Array.prototype.forEach.call(heads, function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
        th.classList.add(dir > 0 ? 'sorted-asc' : 'sorted-desc');
      });
    });
  });

  // The details panel: the words of whatever was clicked.
  var panel = document.getElementById('details');
  var panelTitle = document.getElementById('details-title');
  var panelText = document.getElementById('details-text');
  var selected = null;
  document.addEventListener('click', function (ev) {
    var t = ev.target && ev.target.closest ? ev.target.closest('.tip') : null;
    if (!t) return;
    var words = t.querySelector('title');
    if (!words) return;
    if (selected) selected.classList.remove('sel');
    selected = t;
    t.classList.add('sel');
    var conn = t.closest('.conn');
    panelTitle.textContent = conn ? conn.querySelector('h3').textContent : 'Failures over time';
    panelText.textContent = words.textContent;
    panel.hidden = false;
  });
  function closePanel() {
    panel.hidden = true;
    if (selected) selected.classList.remove('sel');
    selected = null;
  }
  document.getElementById('details-close').addEventListener('click', closePanel);
  document.addEventListener('keydown', function (ev) { if (ev.key === 'Escape') closePanel(); });

  // The search box: every token must appear in the connection's words.
  var input = document.getElementById('search');
  var status = document.getElementById('search-status');
  var found = document.getElementById('found');
  var timer = null;
  function search() {
    var tokens = input.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    found.textContent = '';
    var matched = 0, shown = 0;
    D.conns.forEach(function (entry) {
      var ok = tokens.every(function (t) { return entry[1].indexOf(t) >= 0; });
      if (entry[2] === 0) {
        var sec = document.getElementById('c' + entry[0]);
        if (sec) sec.hidden = !ok;
        if (ok) matched++;
      } else if (ok && tokens.length) {
        matched++;
        if (shown < MAX_FOUND) {
          found.appendChild(connection(entry[0], entry[2]));
          shown++;
        }
      }
    });
    if (!tokens.length) {
      status.textContent = '';
    } else {
      var beyond = D.total - D.conns.length;
      status.textContent = matched + ' of ' + D.total + ' connection' + plural(D.total) + ' match' +
        (shown === MAX_FOUND ? '; the first ' + MAX_FOUND + ' not drawn above are shown: refine the search for others' : '') +
        (beyond > 0 ? ' (' + beyond + ' with the fewest failures are not in this page)' : '');
    }
  }
  // The search is kept in the address (#q=...), so a link can open the page on it.
  function keep() {
    try {
      history.replaceState(null, '', input.value ? '#q=' + encodeURIComponent(input.value) : '#');
    } catch (e) { /* some browsers refuse it for local files */ }
  }
  input.addEventListener('input', function () {
    clearTimeout(timer);
    timer = setTimeout(function () { search(); keep(); }, 150);
  });
  var asked = /[#&]q=([^&]*)/.exec(location.hash);
  if (asked) {
    try { input.value = decodeURIComponent(asked[1]); } catch (e) { input.value = asked[1]; }
  }
  if (input.value) search();
  document.body.setAttribute('data-ready', '1');
}());
